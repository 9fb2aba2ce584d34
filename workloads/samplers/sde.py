"""Trajectories of the forward SDE and of the fixed Brownian-bridge backward process (arXiv:2402.05098, Sec. 2).

Time grid t_i = i / T, i = 0..T, dt = 1 / T, x_0 = 0 (Dirac).

Forward policy (Euler-Maruyama):
    PF(x_{i+1} | x_i) = N(x_{i+1}; x_i + f_theta(x_i, t_i) dt, sigma^2 dt I),          i = 0..T-1
Exploration (off-policy): states are *sampled* with std sqrt(sigma^2 dt + expl^2), but log PF is
always evaluated under the unmodified policy above.

Backward policy (Brownian bridge pinned at x_0 = 0, fixed):
    PB(x_i | x_{i+1}) = N(x_i; x_{i+1} t_i / t_{i+1}, sigma^2 dt (t_i / t_{i+1}) I),  i = 1..T-1
The last backward step to x_0 = 0 is deterministic and contributes no log PB term; all T forward
log PF terms count.

States are sampled without gradient; log PF is then evaluated with gradient in one batched pass over
all [B, T] transitions (one network call instead of T), which is what the TB / VarGrad losses need.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from workloads.samplers.policy import DriftPolicy

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Trajectory:
    states: Tensor
    """[B, T+1, D], states[:, 0] = 0, states[:, -1] = terminal x_1."""
    log_pf: Tensor
    """[B] sum_i log PF(x_{i+1} | x_i) (differentiable in theta)."""
    log_pb: Tensor
    """[B] sum_i log PB(x_i | x_{i+1})."""

    @property
    def terminal(self) -> Tensor:
        return self.states[:, -1]  # [B, D]


def time_grid(T: int, device: torch.device | str = "cpu") -> Tensor:
    """t_i = i / T, [T+1]."""
    return torch.arange(T + 1, device=device, dtype=torch.float32) / T


def forward_log_prob(policy: DriftPolicy, states: Tensor, sigma2: float) -> Tensor:
    """sum_{i=0}^{T-1} log N(x_{i+1}; x_i + f(x_i, t_i) dt, sigma^2 dt I), states [B, T+1, D] -> [B]."""
    T = states.shape[1] - 1
    dt = 1.0 / T
    t = time_grid(T, states.device)[:-1]  # [T]
    x, x_next = states[:, :-1], states[:, 1:]  # [B, T, D]
    f = policy.drift(x, policy.time_embedding(t))  # [B, T, D]; [T, H] broadcasts over B
    resid = x_next - x - f * dt  # [B, T, D]
    var = sigma2 * dt
    D = states.shape[-1]
    return -0.5 * (resid**2).sum((-1, -2)) / var - 0.5 * T * D * (LOG_2PI + math.log(var))  # [B]


def backward_log_prob(states: Tensor, sigma2: float) -> Tensor:
    """sum_{i=1}^{T-1} log N(x_i; x_{i+1} t_i / t_{i+1}, sigma^2 dt t_i / t_{i+1} I), [B, T+1, D] -> [B]."""
    T = states.shape[1] - 1
    dt = 1.0 / T
    i = torch.arange(1, T, device=states.device, dtype=states.dtype)  # [T-1]
    ratio = (i / (i + 1))[:, None]  # t_i / t_{i+1}, [T-1, 1]
    mean = states[:, 2:] * ratio  # [B, T-1, D]
    var = sigma2 * dt * ratio  # [T-1, 1]
    lp = -0.5 * ((states[:, 1:-1] - mean) ** 2 / var + LOG_2PI + var.log())  # [B, T-1, D]
    return lp.sum((-1, -2))  # [B]


def _device(policy: DriftPolicy) -> torch.device:
    return next(policy.parameters()).device


def sample_forward(
    policy: DriftPolicy,
    batch_size: int,
    T: int,
    sigma2: float,
    exploration_std: float,
    dim: int,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Roll out B forward trajectories from x_0 = 0; log PF under the unmodified policy (with gradient)."""
    device = _device(policy)
    dt = 1.0 / T
    std = math.sqrt(sigma2 * dt + exploration_std**2)  # sampling std (policy std if no exploration)
    with torch.no_grad():
        t_emb = policy.time_embedding(time_grid(T, device)[:-1])  # [T, H]
        eps = torch.randn(T, batch_size, dim, device=device, generator=generator)  # [T, B, D]
        states = torch.zeros(batch_size, T + 1, dim, device=device)  # [B, T+1, D]
        x = states[:, 0]
        for i in range(T):
            x = x + policy.drift(x, t_emb[i]) * dt + std * eps[i]  # [B, D]
            states[:, i + 1] = x
    return Trajectory(states, forward_log_prob(policy, states, sigma2), backward_log_prob(states, sigma2))


def sample_backward(
    policy: DriftPolicy,
    x_terminal: Tensor,
    T: int,
    sigma2: float,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Roll the Brownian bridge back from x_T = x_terminal [B, D] to x_0 = 0; log PF along it (with gradient)."""
    B, D = x_terminal.shape
    dt = 1.0 / T
    with torch.no_grad():
        eps = torch.randn(T, B, D, device=x_terminal.device, generator=generator)  # [T, B, D]
        states = torch.zeros(B, T + 1, D, device=x_terminal.device)  # [B, T+1, D]
        x = states[:, T] = x_terminal
        for i in range(T - 1, 0, -1):  # x_i | x_{i+1}, i = T-1..1; x_0 = 0 stays
            ratio = i / (i + 1)
            x = x * ratio + math.sqrt(sigma2 * dt * ratio) * eps[i]
            states[:, i] = x
    return Trajectory(states, forward_log_prob(policy, states, sigma2), backward_log_prob(states, sigma2))
