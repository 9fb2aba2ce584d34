"""25GMM (arXiv:2402.05098, Table 1): equal-weight Gaussians at {-10, -5, 0, 5, 10}^2, covariance 0.3 I.

R(x) = (1/25) sum_k N(x; mu_k, 0.3 I),    log Z = 0
"""

from __future__ import annotations

import torch
from torch import Tensor

from workloads.samplers.targets.base import Target
from workloads.samplers.targets.gaussian_mixture import mixture_log_density, mixture_sample


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
        return mixture_log_density(x, self.mu, self.variance)

    def sample(self, n: int, seed: int) -> Tensor:
        return mixture_sample(self.mu, self.variance, n, seed)
