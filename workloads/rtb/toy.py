"""The 2-D toy of RTB (arXiv:2405.20971, Fig. 1; the reference's `rtb_diffusion/`): a 25-mode prior and a
constraint r that keeps 9 of its modes.

    p(x)      = GMM25(x) = (1/25) sum_{k=1}^{25} N(x; mu_k, 0.3 I),       mu_k on the grid {-10, -5, 0, 5, 10}^2
    N9(x)     = sum_{j=1}^{9} w_j N(x; nu_j, 0.3 I),                       w ~ 4, 10, 4, 5, 10, 5, 4, 15, 4
    log r(x)  = log N9(x) - log GMM25(x)
    p_post(x) = p(x) r(x)^beta / Z,        Z = E_p[r^beta]

At beta = 1 with the true prior, p_post = N9 exactly and Z = int N9 = 1 (log Z = 0). A model of the prior has its
own exact posterior (metrics.py estimates it from the model's samples). r uses the analytic GMM25, never a
learned prior. A sample's mode is the nearest of the 25 means mu_k.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from workloads.samplers.targets.base import Target
from workloads.samplers.targets.gmm25 import GMM25

MODE_VARIANCE = 0.3
"""Variance of every mixture component of GMM25 and N9."""
NINE_MODE_MEANS = (
    (-10.0, -5.0),
    (-5.0, -10.0),
    (-5.0, 0.0),
    (10.0, -5.0),
    (0.0, 0.0),
    (0.0, 5.0),
    (5.0, -5.0),
    (5.0, 0.0),
    (5.0, 10.0),
)
"""nu_j: the 9 kept modes, each one of the 25 grid means."""
NINE_MODE_WEIGHTS = (4.0, 10.0, 4.0, 5.0, 10.0, 5.0, 4.0, 15.0, 4.0)
"""w_j, unnormalized (they sum to 61)."""


def weighted_mixture_log_density(x: Tensor, mu: Tensor, log_w: Tensor, variance: float) -> Tensor:
    """log sum_j w_j N(x; mu_j, variance I) for x [B, D], mu [J, D], normalized log weights log_w [J] -> [B]."""
    D = mu.shape[-1]
    d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)  # [B, J]
    log_n = -0.5 * d2 / variance - 0.5 * D * math.log(2 * math.pi * variance)  # [B, J]
    return torch.logsumexp(log_n + log_w, dim=-1)  # [B]


class NineModeMixture(Target):
    """N9, the exact posterior of the true prior at beta = 1: normalized (log Z = 0), sampleable."""

    dim = 2
    log_z = 0.0

    def __init__(self):
        super().__init__()
        self.register_buffer("mu", torch.tensor(NINE_MODE_MEANS))  # [9, 2]
        w = torch.tensor(NINE_MODE_WEIGHTS)
        self.register_buffer("weights", w / w.sum())  # [9]

    def log_reward(self, x: Tensor) -> Tensor:
        return weighted_mixture_log_density(x, self.mu, self.weights.log(), MODE_VARIANCE)

    def sample(self, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)  # CPU draws: the same samples on every device
        j = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=g)  # [n]
        x = self.mu.cpu()[j] + math.sqrt(MODE_VARIANCE) * torch.randn(n, 2, generator=g)  # [n, 2]
        return x.to(self.mu.device)


class Toy2D(nn.Module):
    """The prior target, the constraint r and the mode bookkeeping of the 2-D toy (an nn.Module so `.to(device)`
    moves its constants)."""

    dim = 2

    def __init__(self):
        super().__init__()
        self.prior = GMM25(MODE_VARIANCE)
        self.target = NineModeMixture()
        self.num_modes = self.prior.num_modes  # K = 25
        kept = (self.prior.mu[:, None, :] == self.target.mu[None]).all(-1)  # [25, 9], kept[k, j]: mu_k = nu_j
        assert (kept.sum(0) == 1).all(), "every kept mode must be one of the grid means"
        self.register_buffer("kept_modes", kept.any(1))  # [25] bool
        self.register_buffer("target_mode_masses", kept.float() @ self.target.weights)  # [25], N9's w on the grid

    @property
    def means(self) -> Tensor:
        """mu_k, [25, 2]."""
        return self.prior.mu

    def log_r(self, x: Tensor) -> Tensor:
        """log r(x) = log N9(x) - log GMM25(x), x [B, 2] -> [B]; differentiable in x."""
        return self.target.log_reward(x) - self.prior.log_reward(x)

    def grad_log_r(self, x: Tensor) -> Tensor:
        """grad_x log r(x) for x [..., 2] -> [..., 2], by autograd (also under an outer no_grad); x is detached."""
        with torch.enable_grad():
            x_flat = x.detach().reshape(-1, self.dim).requires_grad_(True)  # [N, 2]
            (grad,) = torch.autograd.grad(self.log_r(x_flat).sum(), x_flat)
        return grad.reshape(x.shape)

    def mode_of(self, x: Tensor) -> Tensor:
        """Index of the nearest mean mu_k, x [N, 2] -> [N] int64."""
        return torch.cdist(x, self.means).argmin(-1)

    def sample_prior(self, n: int, seed: int) -> Tensor:
        """n exact samples of the true prior GMM25, [n, 2]."""
        return self.prior.sample(n, seed)

    def sample_target(self, n: int, seed: int) -> Tensor:
        """n exact samples of N9, the exact posterior of the true prior at beta = 1, [n, 2]."""
        return self.target.sample(n, seed)
