"""A learner's training state as one dict, shared by every workload's learner.

    {<module name>: state_dict, "optimizer", "step", "seed", "rng", "config"}

The snapshot is a deep copy (Adam's state would otherwise alias the live optimizer's tensors).
On restore the learning rates are the restoring config's, not the checkpoint's: PBT restores a
donor's checkpoint under perturbed hyperparameters.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel


def training_state(
    modules: dict[str, torch.nn.Module | torch.Tensor],
    optimizer: torch.optim.Optimizer,
    step: int,
    seed: int,
    generator: torch.Generator,
    config: BaseModel,
) -> dict[str, Any]:
    """`modules`: networks by name, or single parameters (a learned scalar log Z)."""
    return copy.deepcopy(
        {
            **{name: _state(module) for name, module in modules.items()},
            "optimizer": optimizer.state_dict(),
            "step": step,
            "seed": seed,
            "rng": generator.get_state(),
            "config": config.model_dump(),
        }
    )


def restore_training_state(
    state: dict[str, Any],
    modules: dict[str, torch.nn.Module | torch.Tensor],
    optimizer: torch.optim.Optimizer,
    learning_rates: Sequence[float],
    generator: torch.Generator,
) -> tuple[int, int]:
    """Loads `state` in place; returns (step, seed)."""
    for name, module in modules.items():
        if isinstance(module, torch.nn.Module):
            module.load_state_dict(state[name])
        else:
            module.data.copy_(state[name])
    optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    for group, lr in zip(optimizer.param_groups, learning_rates):
        group["lr"] = lr
    generator.set_state(state["rng"].cpu())
    return state["step"], state["seed"]


def _state(module: torch.nn.Module | torch.Tensor) -> Any:
    return module.state_dict() if isinstance(module, torch.nn.Module) else module.detach()
