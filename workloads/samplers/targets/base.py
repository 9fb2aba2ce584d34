r"""The target protocol: an unnormalized density R(x) = exp(log_reward(x)) on R^D with a known log Z.

    p(x) = R(x) / Z,    Z = \int R(x) dx

Every target is an `nn.Module` (so `.to(device)` moves its constants) implementing `log_reward`
and `sample`; `grad_log_reward` comes from autograd. Adding a target is one file plus one line in
`targets/__init__.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Target(nn.Module):
    """Unnormalized target density with exact samples and exact log Z."""

    dim: int
    """D: dimension of the sample space."""
    log_z: float
    """Exact log Z = log int R(x) dx."""
    anneals: bool = False
    """Whether log_reward depends on `at_step` (a density annealed over training): the learner then recomputes
    the log R of replayed states instead of reading the values stored with them."""

    def at_step(self, step: int | None) -> None:
        """Sets the density log_reward computes: that of training step `step`, or the target's own R for None.
        The learner calls it before each training iteration and with None after; most targets have one R."""

    def log_reward(self, x: Tensor) -> Tensor:
        """log R(x) for x [B, D] -> [B]; differentiable in x."""
        raise NotImplementedError

    def sample(self, n: int, seed: int) -> Tensor:
        """n exact samples x ~ p = R / Z, [n, D], on the target's device; deterministic in seed."""
        raise NotImplementedError

    def mode_metrics(self, x: Tensor) -> dict[str, float]:
        """Statistics of samples x [N, D] that say which modes they cover; each evaluation logs the sampler's as
        eval/<name> and the exact samples' as eval/exact_<name>. None by default."""
        return {}

    def grad_log_reward(self, x: Tensor) -> Tensor:
        """grad_x log R(x), [B, D], by autograd (works under an outer `torch.no_grad`)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_reward(x).sum(), x)
        return grad

    @property
    def device(self) -> torch.device:
        t = next(self.buffers(), None)
        return t.device if t is not None else torch.device("cpu")
