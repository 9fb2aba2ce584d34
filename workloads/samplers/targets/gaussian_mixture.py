"""Equal-weight isotropic Gaussian mixtures, shared by the GMM targets.

R(x) = (1/K) sum_k N(x; mu_k, s^2 I),    log Z = 0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mixture_log_density(x: Tensor, mu: Tensor, variance: float) -> Tensor:
    """log (1/K) sum_k N(x; mu_k, variance I) for x [B, D], mu [K, D] -> [B]."""
    K, D = mu.shape
    d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)  # [B, K]
    log_n = -0.5 * d2 / variance - 0.5 * D * math.log(2 * math.pi * variance)  # [B, K]
    return torch.logsumexp(log_n, dim=-1) - math.log(K)  # [B]


def mixture_sample(mu: Tensor, variance: float, n: int, seed: int) -> Tensor:
    """n exact samples [n, D] on mu's device: a uniform mode k, then mu_k + sqrt(variance) eps."""
    g = torch.Generator().manual_seed(seed)  # CPU draws: the same samples on every device
    K, D = mu.shape
    k = torch.randint(K, (n,), generator=g)  # [n]
    eps = torch.randn(n, D, generator=g)  # [n, D]
    x = mu.cpu()[k] + math.sqrt(variance) * eps  # [n, D]
    return x.to(mu.device)
