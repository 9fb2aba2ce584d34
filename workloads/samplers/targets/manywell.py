"""Manywell (arXiv:2402.05098, Table 1), 32-d: 16 independent 2-d double wells, unnormalized.

    log R(x) = sum_{j=1}^{16} [ -a_j^4 + 6 a_j^2 + a_j / 2 - b_j^2 / 2 ],    (a_j, b_j) = (x_{2j-1}, x_{2j})
    log Z = 16 (log Z_1 + log(2 pi) / 2),    Z_1 = int exp(-a^4 + 6 a^2 + a / 2) da ~ 11784.50927

Z_1 by adaptive quadrature at construction (log Z ~ 164.6957). Exact samples: each a_j by inverse CDF
on a fine grid (linear interpolation of the CDF), each b_j ~ N(0, 1).
"""

from __future__ import annotations

import math

import torch
from scipy.integrate import quad
from torch import Tensor

from workloads.samplers.targets.base import Target


def double_well_log_density(a: Tensor | float) -> Tensor | float:
    """Unnormalized log density of a well's first coordinate: -a^4 + 6 a^2 + a / 2 (elementwise)."""
    return -(a**4) + 6 * a**2 + 0.5 * a


class ManyWell(Target):
    dim = 32

    def __init__(self, grid_points: int = 200_001, grid_limit: float = 5.0):
        super().__init__()
        self.num_wells = self.dim // 2
        # the density peaks near a = +-1.73; beyond |a| = 5 it is below e^{-460} of its peak
        z1, _ = quad(
            lambda a: math.exp(double_well_log_density(a)),
            -grid_limit,
            grid_limit,
            points=[-1.73, 1.73],
            epsabs=0.0,
            epsrel=1e-12,
        )
        self.log_z1 = math.log(z1)
        self.log_z = self.num_wells * (self.log_z1 + 0.5 * math.log(2 * math.pi))
        # CDF of a on a uniform grid by the trapezoid rule, normalized to end at exactly 1
        a = torch.linspace(-grid_limit, grid_limit, grid_points, dtype=torch.float64)  # [G]
        p = torch.exp(double_well_log_density(a) - self.log_z1)  # [G]
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (p[1:] + p[:-1]), 0)])  # [G]
        self.register_buffer("cdf", (cdf / cdf[-1]).float())
        self.grid_start, self.grid_step = -grid_limit, 2 * grid_limit / (grid_points - 1)

    def log_reward(self, x: Tensor) -> Tensor:
        a, b = x[:, 0::2], x[:, 1::2]  # [B, 16] each
        return (double_well_log_density(a) - 0.5 * b**2).sum(-1)  # [B]

    def mode_metrics(self, x: Tensor) -> dict[str, float]:
        """minor_mode_fraction: the share of (sample, well) pairs in a well's lighter mode, a_j < 0 (exact:
        int_{a<0} exp(-a^4 + 6 a^2 + a / 2) da / Z_1 = 0.156). A sampler that never visits it leaves 16 log(1 / 0.844)
        = 2.7 nats of log Z that importance weights cannot recover."""
        return {"minor_mode_fraction": (x[:, 0::2] < 0).float().mean().item()}

    def sample(self, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)  # CPU draws: the same samples on every device
        u = torch.rand(n, self.num_wells, generator=g).to(self.cdf)  # [n, 16]
        b = torch.randn(n, self.num_wells, generator=g).to(self.cdf)  # [n, 16]
        # cdf[i-1] <= u < cdf[i], so the interval is never empty
        i = torch.searchsorted(self.cdf, u, right=True).clamp(1, self.cdf.numel() - 1)  # [n, 16]
        lo, hi = self.cdf[i - 1], self.cdf[i]
        a = self.grid_start + self.grid_step * (i - 1 + (u - lo) / (hi - lo))  # [n, 16]
        return torch.stack([a, b], dim=-1).reshape(n, self.dim)  # [n, 32] as (a_1, b_1, a_2, b_2, ...)
