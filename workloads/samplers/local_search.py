"""Local search by parallel MALA on log R (arXiv:2402.05098, Sec. 3; Roberts & Tweedie 1996).

Each of B independent chains proposes, with step size eta,
    x' = x + eta grad log R(x) + sqrt(2 eta) xi,       xi ~ N(0, I)
and accepts with probability min(1, alpha),
    log alpha = log R(x') - log R(x) + log q(x | x') - log q(x' | x),
    log q(y | x) = -||y - x - eta grad log R(x)||^2 / (4 eta) + const.
During burn-in the shared step size is adapted by a Robbins-Monro step on log eta towards the target
acceptance rate a* (0.574, optimal for MALA):  log eta <- log eta + (a_batch - a*).
The step size is frozen after burn-in; the reported acceptance rate is over post-burn-in steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from workloads.samplers.targets.base import Target


@dataclass
class MalaResult:
    x: Tensor
    """[B, D] final states of all chains."""
    log_reward: Tensor
    """[B] log R(x)."""
    acceptance_rate: float
    """Mean acceptance over the post-burn-in steps (over all steps if burn_in >= num_steps)."""
    step_size: float
    """Final (adapted) step size eta."""


def _log_r_and_grad(target: Target, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_r = target.log_reward(x)  # [B]
        (grad,) = torch.autograd.grad(log_r.sum(), x)
    return log_r.detach(), grad


def mala(
    target: Target,
    x0: Tensor,
    num_steps: int,
    burn_in: int,
    step_size: float,
    target_acceptance: float = 0.574,
    generator: torch.Generator | None = None,
    adaptation_rate: float = 1.0,
) -> MalaResult:
    x = x0.detach().clone()  # [B, D]
    B = x.shape[0]
    log_r, grad = _log_r_and_grad(target, x)  # [B], [B, D]
    log_eta = math.log(step_size)
    accepted, counted = torch.zeros((), device=x.device), 0
    for s in range(num_steps):
        eta = math.exp(log_eta)
        xi = torch.randn(x.shape, device=x.device, generator=generator)  # [B, D]
        x_prop = x + eta * grad + math.sqrt(2 * eta) * xi  # [B, D]
        log_r_prop, grad_prop = _log_r_and_grad(target, x_prop)
        log_q_fwd = -((x_prop - x - eta * grad) ** 2).sum(-1) / (4 * eta)  # log q(x' | x), [B]
        log_q_bwd = -((x - x_prop - eta * grad_prop) ** 2).sum(-1) / (4 * eta)  # log q(x | x'), [B]
        log_alpha = log_r_prop - log_r + log_q_bwd - log_q_fwd  # [B]
        u = torch.rand(B, device=x.device, generator=generator)
        accept = torch.log(u) < log_alpha  # [B]; NaN proposals are rejected
        a = accept[:, None]
        x = torch.where(a, x_prop, x)
        grad = torch.where(a, grad_prop, grad)
        log_r = torch.where(accept, log_r_prop, log_r)
        rate = accept.float().mean()
        if s < burn_in:
            log_eta += adaptation_rate * (rate.item() - target_acceptance)
        else:
            accepted += rate
            counted += 1
    if counted == 0:  # no post-burn-in steps: report the last step's rate
        accepted, counted = rate, 1
    return MalaResult(x, log_r, (accepted / counted).item(), math.exp(log_eta))
