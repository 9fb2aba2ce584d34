"""Neal's funnel (arXiv:2402.05098, Table 1), 10-d: x0 ~ N(0, 3^2), x_1..9 | x0 ~ N(0, e^{x0} I).

log R(x) = log N(x0; 0, 3^2) + sum_{i=1}^{9} log N(x_i; 0, e^{x0}),    log Z = 0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workloads.samplers.targets.base import Target


class Funnel(Target):
    dim = 10
    log_z = 0.0

    def __init__(self, x0_std: float = 3.0):
        super().__init__()
        # a buffer, so that `.to(device)` / `.double()` also place and type the samples
        self.register_buffer("x0_std", torch.tensor(x0_std))

    def log_reward(self, x: Tensor) -> Tensor:
        x0, xi = x[:, 0], x[:, 1:]  # [B], [B, D-1]
        log_2pi = math.log(2 * math.pi)
        log_p0 = -0.5 * (x0 / self.x0_std) ** 2 - torch.log(self.x0_std) - 0.5 * log_2pi  # [B]
        # log N(x_i; 0, e^{x0}) = -x_i^2 e^{-x0} / 2 - x0 / 2 - log(2 pi) / 2
        log_pi = -0.5 * xi**2 * torch.exp(-x0)[:, None] - 0.5 * x0[:, None] - 0.5 * log_2pi  # [B, D-1]
        return log_p0 + log_pi.sum(-1)  # [B]

    def sample(self, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)  # CPU draws: the same samples on every device
        eps = torch.randn(n, self.dim, generator=g).to(self.x0_std)  # [n, D]
        x0 = self.x0_std * eps[:, :1]  # [n, 1]
        return torch.cat([x0, torch.exp(0.5 * x0) * eps[:, 1:]], dim=1)  # [n, D]
