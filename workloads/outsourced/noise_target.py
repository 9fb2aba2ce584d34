"""The outsourced sampler's target (arXiv:2502.06999): a posterior p(x | y) ~ p_f(x) r(x)^beta under a generator
x = f(z), z ~ N(0, I), pulled back to noise space:

    R(z) = N(z; 0, I) r(f(z))^beta,        Z = E_{z ~ N(0, I)}[r(f(z))^beta]

z ~ R / Z pushed through f is an exact sample of the data-space posterior, whether or not f is invertible. As a
`Target` of the diffusion-sampler family with sigma^2 = 1, TB is RTB against the Brownian reference process, whose
terminal marginal is N(0, I): log PF - log PB - log R(z) = log PF - log p_ref(tau) - beta log r(f(z)).

The exact answers are Monte Carlo over M reference draws z_m ~ N(0, I) (a fixed seed), as for the RTB toy:
    log Z_MC = log mean_m r(f(z_m))^beta                                   (unbiased in Z)
    exact samples: the z_m resampled with weights r(f(z_m))^beta           (exact as M grows, for the f in use)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from workloads.outsourced.flow import standard_normal_log_prob
from workloads.samplers.targets.base import Target

REFERENCE_CHUNK = 8192
"""Reference draws pushed through f at once (bounds the generator's activations)."""


class NoiseSpaceTarget(Target):
    name = "noise space"

    def __init__(
        self,
        generator: nn.Module,
        log_r: Callable[[Tensor], Tensor],
        beta: float = 1.0,
        reference_samples: int = 100_000,
        reference_seed: int = 0,
        beta_start: float | None = None,
        anneal_iters: int = 0,
    ):
        """generator: z [B, d] -> x, differentiable in z (its weights are not trained here); log_r: x -> [B],
        differentiable in x; beta > 0. With anneal_iters > 0, training step s uses
        beta_s = beta_start + (beta - beta_start) min(1, s / anneal_iters) (`at_step`); evaluation and the exact
        answers use beta."""
        super().__init__()
        if beta <= 0 or (beta_start is not None and beta_start <= 0):
            raise ValueError(f"beta and beta_start must be > 0, got beta={beta}, beta_start={beta_start}")
        if anneal_iters > 0 and beta_start is None:
            raise ValueError(f"anneal_iters={anneal_iters} needs a beta_start to anneal from")
        self.generator = generator.requires_grad_(False)
        self.log_r = log_r
        self.beta, self.beta_start, self.anneal_iters = beta, beta_start, anneal_iters
        self.anneals = anneal_iters > 0
        self.current_beta = beta
        self.dim = math.prod(generator.latent_shape)
        self.reference_samples, self.reference_seed = reference_samples, reference_seed
        self._reference: tuple[Tensor, Tensor] | None = None
        self.value_pool: Callable[[Tensor], Tensor] | None = None
        """z [B, d] -> log r(f(z)) [B], values only, computed elsewhere (the reward actors; None: here)."""

    def at_step(self, step: int | None) -> None:
        """beta_s of training step s (None: beta)."""
        if step is None or not self.anneals:
            self.current_beta = self.beta
        else:
            self.current_beta = self.beta_start + (self.beta - self.beta_start) * min(1.0, step / self.anneal_iters)

    def log_reward(self, z: Tensor) -> Tensor:
        """log R(z) = log N(z; 0, I) + beta log r(f(z)), z [B, d] -> [B]; differentiable in z through f."""
        return standard_normal_log_prob(z) + self.current_beta * self.log_r_of_noise(z)

    def log_r_of_noise(self, z: Tensor) -> Tensor:
        """log r(f(z)) [B]: from `value_pool` where no gradient is asked for and one is set, else here."""
        if self.value_pool is not None and not (torch.is_grad_enabled() and z.requires_grad):
            return self.value_pool(z)
        return self.log_r(self.decode(z))

    def decode(self, z: Tensor) -> Tensor:
        """x = f(z) for z [B, d] (the latent flattened)."""
        return self.generator(z.reshape(-1, *self.generator.latent_shape))

    @torch.no_grad()
    def reference(self) -> tuple[Tensor, Tensor]:
        """(z_m [M, d] ~ N(0, I), beta log r(f(z_m)) [M]), drawn once (seed `reference_seed`)."""
        if self._reference is None:
            g = torch.Generator().manual_seed(self.reference_seed)  # CPU draws: the same on every device
            z = torch.randn(self.reference_samples, self.dim, generator=g).to(self.device)  # [M, d]
            log_w = torch.cat([self.beta * self.log_r_of_noise(chunk) for chunk in z.split(REFERENCE_CHUNK)])
            self._reference = (z, log_w)
        return self._reference

    @property
    def log_z(self) -> float:
        """log Z_MC = log mean_m r(f(z_m))^beta."""
        _, log_w = self.reference()
        return (torch.logsumexp(log_w.double(), 0) - math.log(log_w.numel())).item()

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> Tensor:
        """n of the reference draws resampled with weights r(f(z_m))^beta (with replacement), [n, d]."""
        z, log_w = self.reference()
        g = torch.Generator().manual_seed(seed)
        idx = torch.multinomial(torch.softmax(log_w.double(), 0).cpu(), n, replacement=True, generator=g)  # [n]
        return z[idx.to(z.device)]

    def effective_sample_size(self) -> float:
        """ESS = (sum w)^2 / sum w^2 of the reference weights: how many of the M draws the exact answers rest on."""
        _, log_w = self.reference()
        log_w = log_w.double()
        return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)).item()
