"""DDPM (Ho et al. 2020, arXiv:2006.11239) on images: the epsilon-prediction loss, and the strided reverse chain as
a policy whose every step has an exact Gaussian log-density, for fine-tuning it (RTB, arXiv:2405.20971).

Training, at any of the T timesteps:

    L(theta) = E_{x_0, t ~ U{0..T-1}, eps ~ N(0, I)} |eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)|^2

Sampling, over the K levels of schedule.py (K = x_T ~ N(0, I) down to 0 = x_0):

    x0_hat = (x_j - sqrt(1 - abar_j) eps_theta(x_j, t_j)) / sqrt(abar_j)       (clamped to [-1, 1] if clip_x0_hat)
    x_{j-1} ~ N(mean_j(x_j, x0_hat) + guidance, var_j I)                         (schedule.py's reverse step)

A trajectory is laid out by position p = K - j: states[:, 0] = x_T, states[:, K] = x_0, and transition p goes from
states[:, p] to states[:, p + 1]. Its log-density log p_theta(x_{j-1} | x_j) is `gaussian_log_prob` of the state
under the policy's mean and variance; sampling with exploration draws from the wider N(mean, (var + e^2) I) but
still scores under var (off-policy). `log_prob_steps` re-scores any trajectory under any model, with gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workloads.diffusion.config import DDPMConfig
from workloads.diffusion.schedule import StridedSchedule

Guidance = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_t [N, C, H, W], t [N] int64, x0_hat [N, C, H, W]) -> a shift [N, C, H, W] of the reverse mean. It is called
inside the sampler's no-grad region: a guidance that differentiates (grad log r, DPS) opens torch.enable_grad()
itself, and one that needs d x0_hat / d x_t recomputes x0_hat there."""


@dataclass
class Trajectory:
    """A reverse chain from position `start_index` (0 = x_T) to K (x_0); B trajectories of L = K - start_index steps."""

    states: Tensor
    """[B, L + 1, C, H, W]: states[:, 0] the start (x_T when start_index = 0), states[:, -1] = x_0; detached."""
    log_prob_steps: Tensor
    """[B, L]: log p_theta(states[:, p + 1] | states[:, p]) under the sampling model's own mean and variance."""
    start_index: int = 0

    @property
    def x0(self) -> Tensor:
        return self.states[:, -1]


def gaussian_log_prob(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; mean, var I) summed over C, H, W: [N, C, H, W] (var [N, 1, 1, 1]) -> [N]."""
    return -0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var)).flatten(1).sum(1)


def predict_eps(model: nn.Module, x_t: Tensor, t: Tensor, extra: Tensor | None = None) -> Tensor:
    """eps_theta([x_t, extra], t): the conditioning channels are concatenated to x_t."""
    x_in = x_t if extra is None else torch.cat([x_t, extra], dim=1)  # [N, C + E, H, W]
    out = model(x_in, t)
    return out if isinstance(out, Tensor) else out.sample  # diffusers returns a UNet2DOutput


def as_generator(generator: torch.Generator | int, device: torch.device) -> torch.Generator:
    """A seed becomes a fresh generator on `device`; a generator is used as it is."""
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(generator)


def model_device(model: nn.Module) -> torch.device:
    parameter = next(iter(model.parameters()), None)
    return torch.device("cpu") if parameter is None else parameter.device


class DDPM:
    """The loss and the strided reverse chain of one DDPMConfig; the model is passed to each call, so that one
    DDPM serves the prior and every fine-tuned copy of it."""

    def __init__(self, config: DDPMConfig):
        self.config = config
        self.schedule = StridedSchedule.from_config(config)
        self.shape = (config.channels, config.image_size, config.image_size)  # (C, H, W)

    @property
    def num_steps(self) -> int:
        """K: reverse transitions of a full trajectory."""
        return self.schedule.num_steps

    def loss(
        self, model: nn.Module, x0: Tensor, generator: torch.Generator | int, extra: Tensor | None = None
    ) -> Tensor:
        """The epsilon-prediction loss L(theta) (module docstring) on a batch x0 [B, C, H, W]."""
        gen = as_generator(generator, x0.device)
        alphas_cumprod = self.schedule.alphas_cumprod.to(x0.device)
        t = torch.randint(len(alphas_cumprod), (len(x0),), generator=gen, device=x0.device)  # [B]
        abar = alphas_cumprod[t].to(x0.dtype).view(-1, 1, 1, 1)  # [B, 1, 1, 1]
        eps = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        return (predict_eps(model, x_t, t, extra) - eps).pow(2).mean()

    def reverse_mean_var(
        self,
        model: nn.Module,
        x: Tensor,
        levels: Tensor,
        extra: Tensor | None = None,
        guidance: Guidance | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(mean [N, C, H, W], var [N, 1, 1, 1]) of p_theta(x_{j-1} | x_j) for rows x [N, C, H, W] at levels [N]; a
        model with a parameter `log_variance_scale` [K + 1] (a posterior that learns its variance) scales var_j by
        exp(log_variance_scale[j])."""
        s = self.schedule
        t = s.timesteps.to(levels.device)[levels]  # [N]
        abar = s.at(s.abar, levels, x)
        eps = predict_eps(model, x, t, extra)
        x0_hat = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        if self.config.clip_x0_hat:
            x0_hat = x0_hat.clamp(-1, 1)
        mean = s.at(s.reverse_coef_x0, levels, x) * x0_hat + s.at(s.reverse_coef_xt, levels, x) * x
        if guidance is not None:
            mean = mean + guidance(x, t, x0_hat)
        var = s.at(s.reverse_var, levels, x)
        log_scale = getattr(model, "log_variance_scale", None)  # [K + 1]: a posterior that learns its variance
        if log_scale is not None:
            var = var * log_scale[levels].exp().view(-1, 1, 1, 1)
        return mean, var

    def sample(
        self,
        model: nn.Module,
        n: int | None,
        generator: torch.Generator | int,
        *,
        extra: Tensor | None = None,
        guidance: Guidance | None = None,
        exploration_std: float = 0.0,
        start: Tensor | None = None,
        start_index: int = 0,
        with_grad: bool = False,
    ) -> Trajectory:
        """n trajectories from x_T ~ N(0, I), or the chain from `start` [B, C, H, W] at position `start_index` on
        (a partial trajectory, e.g. from `noise_back`), to x_0.

        Each step draws x_{j-1} = mean + sqrt(var + exploration_std^2) z and records log N(x_{j-1}; mean, var).
        States are always detached; with_grad keeps the graph of `log_prob_steps` (score-function gradients).
        `extra` [B, E, H, W]: conditioning channels of the model (fixed along the chain).
        """
        K = self.num_steps
        device = start.device if start is not None else model_device(model)
        gen = as_generator(generator, device)
        if start is None:
            if n is None or start_index != 0:
                raise ValueError(
                    f"without a start state give n and start_index=0 (x_T ~ N(0, I)), not {n}, {start_index}"
                )
            x = torch.randn((n, *self.shape), generator=gen, device=device)  # x_T: [B, C, H, W]
        else:
            if n is not None and n != len(start):
                raise ValueError(f"n={n} but start holds {len(start)} states")
            if not 0 <= start_index <= K:
                raise ValueError(f"start_index={start_index} must lie in [0, K={K}]")
            x = start.detach()
        states, log_probs = [x], []
        with torch.set_grad_enabled(with_grad):
            for p in range(start_index, K):
                levels = torch.full((len(x),), K - p, device=device)  # level j = K - p
                mean, var = self.reverse_mean_var(model, x, levels, extra, guidance)
                z = torch.randn(x.shape, generator=gen, device=device, dtype=x.dtype)
                x = (mean + (var + exploration_std**2).sqrt() * z).detach()
                log_probs.append(gaussian_log_prob(x, mean, var))  # scored under the un-inflated policy
                states.append(x)
        log_prob_steps = torch.stack(log_probs, 1) if log_probs else torch.zeros(len(x), 0, device=device)
        return Trajectory(torch.stack(states, 1), log_prob_steps, start_index)

    def ode_sample(self, model: nn.Module, x: Tensor) -> Tensor:
        """x_0 of the deterministic DDIM chain (eta = 0, Song et al. 2021) from x_K = x [B, C, H, W] through the
        strided levels, differentiable in x; a clipped x0_hat gets the eps that matches it (as diffusers' DDIM):

            x0_hat = (x_j - sqrt(1 - abar_j) eps) / sqrt(abar_j),
            x_{j-1} = sqrt(abar_{j-1}) x0_hat + sqrt(1 - abar_{j-1}) eps      (x_0 = x0_hat: abar_0 = 1)
        """
        s = self.schedule
        for j in range(self.num_steps, 0, -1):
            levels = torch.full((len(x),), j, device=x.device)
            abar, abar_prev = s.at(s.abar, levels, x), s.at(s.abar, levels - 1, x)
            eps = predict_eps(model, x, s.timesteps.to(x.device)[levels])
            x0_hat = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
            if self.config.clip_x0_hat:
                x0_hat = x0_hat.clamp(-1, 1)
                eps = (x - abar.sqrt() * x0_hat) / (1 - abar).sqrt()
            x = abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps
        return x

    def log_prob_steps(
        self,
        model: nn.Module,
        states: Tensor,
        extra: Tensor | None = None,
        *,
        steps: Tensor | None = None,
        start_index: int = 0,
        guidance: Guidance | None = None,
    ) -> Tensor:
        """[B, S]: log p_theta(states[:, p + 1] | states[:, p]) for p in `steps` (default all), with gradient when
        the model has it; one batched model call over the B * S rows, so `steps` bounds time and memory.

        states [B, L + 1, C, H, W] start at position `start_index` (as `Trajectory.states`); steps [S] are indices
        into its L transitions.
        """
        B, L = states.shape[0], states.shape[1] - 1
        if start_index + L != self.num_steps:
            raise ValueError(f"{L} transitions from start_index={start_index} do not end at x_0 (K={self.num_steps})")
        steps = torch.arange(L, device=states.device) if steps is None else torch.as_tensor(steps, device=states.device)
        S = len(steps)
        x_from = states[:, steps].flatten(0, 1)  # [B * S, C, H, W], row b * S + s
        x_to = states[:, steps + 1].flatten(0, 1)
        levels = (self.num_steps - start_index - steps).repeat(B)  # [B * S]
        extra_rows = None if extra is None else extra.repeat_interleave(S, dim=0)  # [B * S, E, H, W]
        mean, var = self.reverse_mean_var(model, x_from, levels, extra_rows, guidance)
        return gaussian_log_prob(x_to, mean, var).view(B, S)

    def noise_back(self, x_lower: Tensor, from_index: int, num_steps: int, generator: torch.Generator | int) -> Tensor:
        """The exact forward chain q(x_j | x_{j-1}) = N(sqrt(a_j) x_{j-1}, (1 - a_j) I) run num_steps levels up
        from x_lower [B, C, H, W] at position from_index: states [B, num_steps + 1, C, H, W] at positions
        from_index - num_steps .. from_index (the layout of `sample`; the last is x_lower), ready for
        `sample(start=states[:, 0], start_index=from_index - num_steps)`."""
        if not 0 <= num_steps <= from_index <= self.num_steps:
            raise ValueError(f"need 0 <= num_steps={num_steps} <= from_index={from_index} <= K={self.num_steps}")
        gen = as_generator(generator, x_lower.device)
        a = self.schedule.step_alpha
        x, states = x_lower, [x_lower]
        for j in range(self.num_steps - from_index + 1, self.num_steps - from_index + num_steps + 1):  # levels up
            z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            x = a[j].sqrt().item() * x + (1 - a[j]).sqrt().item() * z
            states.append(x)
        return torch.stack(states[::-1], 1)

    def backtrack(
        self,
        model: nn.Module,
        x0: Tensor,
        num_steps: int,
        generator: torch.Generator | int,
        *,
        extra: Tensor | None = None,
        exploration_std: float = 0.0,
        guidance: Guidance | None = None,
    ) -> tuple[Tensor, Trajectory]:
        """Backtracking (arXiv:2405.20971's back_and_forth): x0 [B, C, H, W] noised k = num_steps levels back by q
        (`noise_back`, states [B, k + 1, ...] from x_{K-k} down to x0), and `model`'s re-denoising of that same
        x_{K-k} down to a new x' (a Trajectory at positions K - k .. K)."""
        gen = as_generator(generator, x0.device)
        noised = self.noise_back(x0, from_index=self.num_steps, num_steps=num_steps, generator=gen)
        start_index = self.num_steps - num_steps
        redenoised = self.sample(
            model,
            None,
            gen,
            extra=extra,
            guidance=guidance,
            start=noised[:, 0],
            start_index=start_index,
            exploration_std=exploration_std,
        )
        return noised, redenoised
