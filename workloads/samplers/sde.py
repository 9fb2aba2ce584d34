"""Trajectories of the forward SDE and of the fixed Brownian-bridge backward process (arXiv:2402.05098, Sec. 2).

Time grid t_i = i / T, i = 0..T, dt = 1 / T, x_0 = 0 (Dirac).

Forward policy (Euler-Maruyama):
    PF(x_{i+1} | x_i) = N(x_{i+1}; x_i + f_theta(x_i, t_i) dt, sigma^2 dt I),          i = 0..T-1
    (a policy with a learned variance scales sigma^2 dt by exp(s_theta(x_i, t_i)), per dimension)
Exploration (off-policy): states are *sampled* with variance sigma^2 dt + expl^2, but log PF is
always evaluated under the unmodified policy above.

Backward policy (Brownian bridge pinned at x_0 = 0, fixed):
    PB(x_i | x_{i+1}) = N(x_i; x_{i+1} t_i / t_{i+1}, sigma^2 dt (t_i / t_{i+1}) I),  i = 1..T-1
The last backward step to x_0 = 0 is deterministic and contributes no log PB term (log PB_0 := 0);
all T forward log PF terms count.

Reference process (zero drift, the one PB reverses): x_t = sigma W_t, marginal p_ref(x, t) = N(x; 0, sigma^2 t I).

Per-step terms are [B, T] (column i: the transition between x_i and x_{i+1}); the trajectory sums
log PF = sum_i log PF_i, log PB = sum_i log PB_i are their row sums (TB / VarGrad / PIS use the sums,
SubTB the steps). Off-policy rollouts sample states without gradient and then evaluate log PF with
gradient in one batched pass over the [B, T] transitions (a network call per chunk of ~4096 transitions,
~13 steps at B = 300, instead of one per step); the reparameterized rollout (PIS) keeps the gradient
through the states. Rollouts compute what depends on t only (the time embedding) and the scaled noise
once for all T steps, so a step is the drift network and one Euler-Maruyama update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from workloads.samplers.policy import DriftPolicy

LOG_2PI = math.log(2 * math.pi)
LOG_PF_CHUNK_TRANSITIONS = 4096
"""Transitions per network call of the batched log PF pass: [chunk, H] activations stay in cache, which on CPU is
~10 % faster than one call on all B T transitions (and bounds the memory of a large evaluation batch); the
per-step numbers are the same for any chunking."""


@dataclass
class Trajectory:
    states: Tensor
    """[B, T+1, D], states[:, 0] = 0, states[:, -1] = terminal x_1."""
    log_pf_steps: Tensor
    """[B, T] log PF(x_{i+1} | x_i) (differentiable in theta)."""
    log_pb_steps: Tensor
    """[B, T] log PB(x_i | x_{i+1}); column 0 (the deterministic step to x_0) is 0."""

    @property
    def terminal(self) -> Tensor:
        return self.states[:, -1]  # [B, D]

    @property
    def log_pf(self) -> Tensor:
        """[B] sum_i log PF(x_{i+1} | x_i)."""
        return self.log_pf_steps.sum(-1)

    @property
    def log_pb(self) -> Tensor:
        """[B] sum_i log PB(x_i | x_{i+1})."""
        return self.log_pb_steps.sum(-1)


def time_grid(T: int, device: torch.device | str = "cpu") -> Tensor:
    """t_i = i / T, [T+1]."""
    return torch.arange(T + 1, device=device, dtype=torch.float32) / T


def forward_log_prob_steps(
    policy: DriftPolicy, states: Tensor, sigma2: float, chunk_transitions: int = LOG_PF_CHUNK_TRANSITIONS
) -> Tensor:
    """log N(x_{i+1}; x_i + f(x_i, t_i) dt, sigma^2 dt I) for i = 0..T-1, states [B, T+1, D] -> [B, T].

    One network call per chunk of about `chunk_transitions` transitions (whole time steps), not per step."""
    B, T = states.shape[0], states.shape[1] - 1
    t_emb = policy.time_embedding(time_grid(T, states.device)[:-1])  # [T, H]
    steps = max(1, chunk_transitions // B)  # time steps per chunk
    log_pf = []
    for i in range(0, T, steps):
        j = min(i + steps, T)
        # [B, j-i, D] states; the [j-i, H] embedding broadcasts over B
        log_pf.append(step_log_prob(policy, states[:, i:j], states[:, i + 1 : j + 1], t_emb[i:j], sigma2, T))
    return torch.cat(log_pf, dim=1)  # [B, T]


def step_log_prob(policy: DriftPolicy, x: Tensor, x_next: Tensor, t_emb: Tensor, sigma2: float, T: int) -> Tensor:
    """log PF(x_next | x) = log N(x_next; x + f(x, t) dt, sigma^2 dt exp(s(x, t)) I), s = 0 unless the policy
    learns its variance; x, x_next [..., D] with a time embedding broadcastable to [..., H] -> [...]."""
    dt = 1.0 / T
    var = sigma2 * dt
    resid = x_next - x - policy.drift(x, t_emb) * dt  # [..., D]
    log_scale = policy.log_variance_scale(x, t_emb)  # [..., D] or None
    if log_scale is None:
        return -0.5 * (resid**2).sum(-1) / var - 0.5 * x.shape[-1] * (LOG_2PI + math.log(var))
    return -0.5 * (resid**2 / (var * log_scale.exp()) + LOG_2PI + math.log(var) + log_scale).sum(-1)


def backward_log_prob_steps(states: Tensor, sigma2: float) -> Tensor:
    """log N(x_i; x_{i+1} t_i / t_{i+1}, sigma^2 dt t_i / t_{i+1} I) for i = 1..T-1, and 0 for i = 0,
    states [B, T+1, D] -> [B, T]."""
    T = states.shape[1] - 1
    dt = 1.0 / T
    i = torch.arange(1, T, device=states.device, dtype=states.dtype)  # [T-1]
    ratio = (i / (i + 1))[:, None]  # t_i / t_{i+1}, [T-1, 1]
    mean = states[:, 2:] * ratio  # [B, T-1, D]
    var = sigma2 * dt * ratio  # [T-1, 1]
    lp = -0.5 * ((states[:, 1:-1] - mean) ** 2 / var + LOG_2PI + var.log()).sum(-1)  # [B, T-1]
    return torch.nn.functional.pad(lp, (1, 0))  # [B, T]; the step to x_0 = 0 is deterministic


def forward_log_prob(policy: DriftPolicy, states: Tensor, sigma2: float) -> Tensor:
    """sum_{i=0}^{T-1} log PF(x_{i+1} | x_i), states [B, T+1, D] -> [B]."""
    return forward_log_prob_steps(policy, states, sigma2).sum(-1)


def backward_log_prob(states: Tensor, sigma2: float) -> Tensor:
    """sum_{i=1}^{T-1} log PB(x_i | x_{i+1}), states [B, T+1, D] -> [B]."""
    return backward_log_prob_steps(states, sigma2).sum(-1)


def reference_log_marginal(x: Tensor, t: Tensor, sigma2: float) -> Tensor:
    """log p_ref(x, t) = log N(x; 0, sigma^2 t I), the marginal at time t > 0 of the zero-drift reference
    process x_t = sigma W_t from x_0 = 0 (exact on the grid too: a sum of i steps of variance sigma^2 dt).
    x [..., D], t broadcastable to [...] -> [...]."""
    var = sigma2 * t  # [...]
    D = x.shape[-1]
    return -0.5 * (x**2).sum(-1) / var - 0.5 * D * (LOG_2PI + var.log())


def _device(policy: DriftPolicy) -> torch.device:
    return next(policy.parameters()).device


def _trajectory(policy: DriftPolicy, states: Tensor, sigma2: float) -> Trajectory:
    """Per-step log PF (with gradient in theta) and log PB of given states [B, T+1, D]."""
    return Trajectory(states, forward_log_prob_steps(policy, states, sigma2), backward_log_prob_steps(states, sigma2))


def _euler_maruyama(policy: DriftPolicy, eps: Tensor, sigma2: float, exploration_std: float = 0.0) -> Tensor:
    """x_0 = 0, x_{i+1} = x_i + f_theta(x_i, t_i) dt + std_i eps_i for noise eps [T, B, D] -> states [B, T+1, D],
    std_i^2 = sigma^2 dt exp(s_theta(x_i, t_i)) + exploration_std^2 (s = 0 for a fixed variance).
    Differentiable in theta (through every state) unless called under no_grad."""
    T = eps.shape[0]
    dt = 1.0 / T
    t_emb = policy.time_embedding(time_grid(T, eps.device)[:-1])  # [T, H], once for all steps
    nn1_weights = policy.nn1.weights()  # looked up once for all steps
    fixed_noise = math.sqrt(sigma2 * dt + exploration_std**2) * eps  # [T, B, D]
    x = torch.zeros_like(eps[0])  # [B, D]
    states = [x]
    for i in range(T):
        log_scale = policy.log_variance_scale(x, t_emb[i])  # [B, D] or None
        if log_scale is None:
            noise = fixed_noise[i]
        else:
            noise = (sigma2 * dt * log_scale.exp() + exploration_std**2).sqrt() * eps[i]
        x = x + policy.drift(x, t_emb[i], nn1_weights) * dt + noise  # [B, D]
        states.append(x)
    return torch.stack(states, dim=1)  # [B, T+1, D]


def sample_forward(
    policy: DriftPolicy,
    batch_size: int,
    T: int,
    sigma2: float,
    exploration_std: float,
    dim: int,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Roll out B forward trajectories from x_0 = 0 (states without gradient); log PF under the unmodified
    policy (with gradient)."""
    eps = torch.randn(T, batch_size, dim, device=_device(policy), generator=generator)  # [T, B, D]
    with torch.no_grad():
        states = _euler_maruyama(policy, eps, sigma2, exploration_std)  # [B, T+1, D]
    return _trajectory(policy, states, sigma2)


def sample_forward_reparameterized(
    policy: DriftPolicy,
    batch_size: int,
    T: int,
    sigma2: float,
    dim: int,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """On-policy forward trajectories x = g_theta(eps) with the gradient kept through every state (PIS).

    (log PF of a reparameterized state is -|eps|^2 / 2 + const, so its total derivative in theta is 0;
    the gradient of a PIS loss comes through log PB and log R of the states.)
    """
    eps = torch.randn(T, batch_size, dim, device=_device(policy), generator=generator)  # [T, B, D]
    states = _euler_maruyama(policy, eps, sigma2)  # [B, T+1, D]; the policy's std
    return _trajectory(policy, states, sigma2)


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
    return _trajectory(policy, states, sigma2)
