"""25GMM (arXiv:2402.05098, Table 1): equal-weight Gaussians at {-10, -5, 0, 5, 10}^2, covariance 0.3 I.

    R(x) = (1/25) sum_k N(x; mu_k, 0.3 I),    log Z = 0
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from workloads.samplers.targets.base import Target


class GMM25(Target):
    dim = 2
    log_z = 0.0

    def __init__(self, variance: float = 0.3):
        super().__init__()
        grid = torch.tensor([-10.0, -5.0, 0.0, 5.0, 10.0])
        mu = torch.cartesian_prod(grid, grid)  # [K=25, 2]
        self.register_buffer("mu", mu)
        self.variance = variance
        self.num_modes = mu.shape[0]

    def log_reward(self, x: Tensor) -> Tensor:
        d2 = ((x[:, None, :] - self.mu[None]) ** 2).sum(-1)  # [B, K]
        log_n = -0.5 * d2 / self.variance - 0.5 * self.dim * math.log(2 * math.pi * self.variance)  # [B, K]
        return torch.logsumexp(log_n, dim=-1) - math.log(self.num_modes)  # [B]

    def sample(self, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        k = torch.randint(self.num_modes, (n,), generator=g)  # [n]
        eps = torch.randn(n, self.dim, generator=g)  # [n, D]
        x = self.mu.cpu()[k] + math.sqrt(self.variance) * eps  # [n, D]
        return x.to(self.mu.device)
