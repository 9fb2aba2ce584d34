"""Drift network f_theta(x, t) of the forward SDE (PIS-style Fourier MLP, arXiv:2111.15141 / 2402.05098).

    gamma(t) = [sin(omega t), cos(omega t)],   omega = linspace(0.1, 100, E)     (fixed Fourier features)
    h_0 = W_x x + MLP_t(gamma(t))
    h_l = W_l GELU(h_{l-1}),  l = 1..L
    f_theta(x, t) = W_out GELU(h_L)                                               (W_out zero-initialized)

The zero-initialized output makes the initial sampler the pure Brownian motion x_1 ~ N(0, sigma^2 I).
The time embedding depends on t only, so trajectories compute it once for the T time points
(`time_embedding`) and call `drift` per step; `forward(x, t)` broadcasts x [..., D] against t [...].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class DriftPolicy(nn.Module):
    def __init__(self, dim: int, hidden_dim: int = 64, time_embedding_dim: int = 64, num_layers: int = 2):
        super().__init__()
        self.dim = dim
        self.register_buffer("omega", torch.linspace(0.1, 100.0, time_embedding_dim))  # [E]
        self.time_mlp = nn.Sequential(
            nn.Linear(2 * time_embedding_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.state_embed = nn.Linear(dim, hidden_dim)
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
        self.trunk = nn.Sequential(*layers, nn.GELU())
        self.out = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def time_embedding(self, t: Tensor) -> Tensor:
        """MLP_t(gamma(t)) for t [...] -> [..., H]."""
        wt = t[..., None] * self.omega  # [..., E]
        return self.time_mlp(torch.cat([wt.sin(), wt.cos()], dim=-1))  # [..., H]

    def drift(self, x: Tensor, t_emb: Tensor) -> Tensor:
        """f_theta for x [..., D] and a precomputed time embedding broadcastable to [..., H]."""
        h = self.state_embed(x) + t_emb  # [..., H]
        return self.out(self.trunk(h))  # [..., D]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.drift(x, self.time_embedding(t))
