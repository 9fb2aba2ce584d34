"""Flatness of a trained model (WCST-ML, arXiv:2110.03095, Sec. 4): loss increase under random weight
perturbations of exact norm r.

Trained weights theta: every trainable parameter, flattened in `model.parameters()` order into R^P, parameter i
occupying the slice [o_i, o_i + n_i) (n_i its number of entries). For J random directions and each radius r:

    d_j ~ N(0, I_P)
    global:         delta_j(r) = r d_j / ||d_j||                       ||delta_j(r)|| = r exactly, for each j
    per_parameter:  delta_j(r)[i] = r d_j[i] / ||d_j[i]||              ||delta_j(r)[i]|| = r for each parameter i
    parameter i  <- theta[i] + delta_j(r)[o_i : o_i + n_i]  (reshaped to parameter i's shape)

    Delta L(r) = (1/J) sum_j L(theta + delta_j(r)) - L(theta)

A flat minimum has a small Delta L(r). Two faults of the reference are avoided: every direction is normalized on
its own (not by a norm over all samples, which leaves each sample's radius random), and each parameter receives
its own slice of the direction (not another parameter's). The same J unit directions serve every radius (common
random numbers: the curve Delta L(r) is smooth in r). BatchNorm running statistics are buffers, not weights, and
stay as trained; the loss is measured in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

Normalization = Literal["global", "per_parameter"]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def parameter_slices(flat: Tensor, parameters: list[Tensor]) -> list[Tensor]:
    """A flat vector [P] cut into each parameter's own slice, reshaped like it (views, no copy)."""
    pieces = torch.split(flat, [p.numel() for p in parameters])
    return [piece.view_as(p) for piece, p in zip(pieces, parameters)]


def unit_directions(
    parameters: list[Tensor], num_directions: int, generator: torch.Generator, normalization: Normalization = "global"
) -> Tensor:
    """J random directions [J, P]: each row of norm 1 (global), or each parameter's slice of each row of norm 1."""
    total = sum(p.numel() for p in parameters)
    d = torch.randn(num_directions, total, generator=generator, dtype=torch.float64)  # [J, P]
    if normalization == "global":
        return d / d.norm(dim=1, keepdim=True)  # per direction, never across directions
    if normalization == "per_parameter":
        pieces = torch.split(d, [p.numel() for p in parameters], dim=1)  # each [J, n_i]
        return torch.cat([piece / piece.norm(dim=1, keepdim=True) for piece in pieces], dim=1)
    raise ValueError(f"normalization must be 'global' or 'per_parameter', got {normalization!r}")


@torch.no_grad()
def loss_increase(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], float],
    radii: tuple[float, ...],
    num_directions: int,
    generator: torch.Generator,
    normalization: Normalization = "global",
) -> tuple[float, dict[float, float]]:
    """(L(theta), {r: Delta L(r)}); the model's weights are theta again on return."""
    parameters = trainable_parameters(model)
    theta = [p.detach().clone() for p in parameters]
    directions = unit_directions(parameters, num_directions, generator, normalization)  # [J, P] float64
    base = loss_fn(model)
    increases: dict[float, float] = {}
    try:
        for r in radii:
            losses = []
            for u in directions:
                for p, theta_i, delta_i in zip(parameters, theta, parameter_slices(r * u, parameters)):
                    p.copy_(theta_i + delta_i.to(p.dtype))
                losses.append(loss_fn(model))
            increases[float(r)] = sum(losses) / len(losses) - base
    finally:
        for p, theta_i in zip(parameters, theta):
            p.copy_(theta_i)
    return base, increases
