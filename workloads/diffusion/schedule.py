"""The strided DDPM schedule: K kept timesteps of the T-step forward process and the Gaussian steps between them.

Levels j = 0 .. K: level 0 is the data x_0 (abar_0 = 1); level j >= 1 is timestep t_j, evenly spaced from t_1 = 0
to t_K = T - 1, with abar_j = prod_{s <= t_j} (1 - beta_s) from diffusers' DDPMScheduler. The strided step into
level j has alpha a_j = abar_j / abar_{j-1}.

Forward (noising) step j - 1 -> j, exact for the T-step chain (its marginals are q(x_j | x_0) = N(sqrt(abar_j) x_0,
(1 - abar_j) I) at every level):

    q(x_j | x_{j-1}) = N(sqrt(a_j) x_{j-1}, (1 - a_j) I)

Reverse step j -> j - 1: the posterior of that forward step given a prediction x0_hat of x_0,

    mean = sqrt(abar_{j-1}) (1 - a_j) / (1 - abar_j) x0_hat + sqrt(a_j) (1 - abar_{j-1}) / (1 - abar_j) x_j
    var  = (1 - abar_{j-1}) / (1 - abar_j) (1 - a_j)    (fixed_small: the posterior variance)
         = 1 - a_j                                       (fixed_large: the forward step's variance)

At j = 1 the posterior variance is 0 (abar_0 = 1) and the mean is x0_hat: the last step takes var = 1 - a_1 =
1 - abar_1 under either choice, so that it is sampled and scored with one nonzero variance (Ho et al. 2020 use
sigma_1^2 = beta_1 for it likewise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from workloads.diffusion.config import DDPMConfig


@dataclass(frozen=True)
class StridedSchedule:
    """Per-level tables [K + 1] (float64, CPU), indexed by level j; entries at j = 0 that no step uses are NaN."""

    alphas_cumprod: Tensor
    """[T] abar_t of every training timestep t = 0 .. T - 1 (the epsilon loss noises at any of them)."""
    timesteps: Tensor
    """[K + 1] int64: t_j fed to the model at level j (-1 at level 0: x_0 is never denoised)."""
    abar: Tensor
    """[K + 1] abar_j, abar_0 = 1."""
    step_alpha: Tensor
    """[K + 1] a_j = abar_j / abar_{j-1} of the strided step between levels j - 1 and j."""
    reverse_coef_x0: Tensor
    """[K + 1] the reverse mean's coefficient of x0_hat at level j."""
    reverse_coef_xt: Tensor
    """[K + 1] the reverse mean's coefficient of x_j."""
    reverse_var: Tensor
    """[K + 1] the reverse step's variance from level j (sampled and scored with)."""

    @property
    def num_steps(self) -> int:
        """K."""
        return len(self.timesteps) - 1

    @classmethod
    def from_config(cls, config: DDPMConfig) -> StridedSchedule:
        # imported here: diffusers costs ~5 s to import, and a process that samples no DDPM never needs it
        from diffusers import DDPMScheduler

        c = config
        scheduler = DDPMScheduler(
            num_train_timesteps=c.num_train_timesteps,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            beta_schedule=c.beta_schedule,
        )
        alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)  # [T]
        kept = torch.linspace(0, c.num_train_timesteps - 1, c.sampling_steps, dtype=torch.float64).round().long()
        timesteps = torch.cat([torch.tensor([-1]), kept])  # [K + 1]
        abar = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[kept]])  # [K + 1]
        nan = torch.full((1,), float("nan"), dtype=torch.float64)
        abar_prev = torch.cat([nan, abar[:-1]])  # abar_{j-1}
        a = abar / abar_prev  # a_j
        coef_x0 = abar_prev.sqrt() * (1 - a) / (1 - abar)
        coef_xt = a.sqrt() * (1 - abar_prev) / (1 - abar)
        if c.variance == "fixed_small":
            var = (1 - abar_prev) / (1 - abar) * (1 - a)
        else:
            var = 1 - a
        var[1] = 1 - a[1]  # the last step: nonzero, the same for sampling and scoring (module docstring)
        return cls(alphas_cumprod, timesteps, abar, a, coef_x0, coef_xt, var)

    def at(self, table: Tensor, levels: Tensor, like: Tensor) -> Tensor:
        """table[levels] as [N, 1, 1, 1] in the dtype and device of `like` (an image batch [N, C, H, W])."""
        return table.to(levels.device)[levels].to(like.dtype).view(-1, 1, 1, 1)
