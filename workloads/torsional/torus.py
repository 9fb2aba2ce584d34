"""Trajectories over the torus [0, 2 pi)^K of the Torsional-GFN (arXiv:2507.11759), and its log reward.

State: x in [0, 2 pi)^K, the K torsion angles of one conformer. A trajectory of S steps (default 20)
    s_0 -> x_0 -> x_1 -> ... -> x_S
starts with a uniform draw x_0 ~ U([0, 2 pi)^K), log p(x_0) = -K log 2 pi, then moves all torsions at once:
    PF(x_{k+1} | x_k) = WN(x_{k+1}; x_k + mu_theta(x_k, k), sigma_k^2)      k = 0..S-1  (policy)
    PB(x_k | x_{k+1}) = WN(x_k; x_{k+1}, sigma_k^2)                          k = S-1..0  (fixed noising)
with the wrapped normal WN(x; m, s^2) = sum_{n in Z} N(x + 2 pi n; m, s^2) and the log-spaced schedule
    sigma_k = pi * 0.01^{k / (S-1)}          (pi at the first step .. 0.01 pi at the last)
The last backward step x_0 -> s_0 is deterministic (PB = 1), so for trajectory b with K_b torsions
    log_pf[b] = -K_b log 2 pi + sum_k sum_{m in b} log PF,     log_pb[b] = sum_k sum_{m in b} log PB,
and trajectory balance reads  log Z + log_pf = log R(x_S) + log_pb,  log R = -E / kT.

Mixed batches: a batch may hold molecules with different K, so the torsions of all B trajectories are
flattened to M = sum_b K_b and `torsion_index` [M] names each torsion's trajectory; per-trajectory sums are
`index_add`. The policy enters as a drift function
    drift_fn(x [P, M], k [P]) -> mu [P, M]
(P rows that share the batch's molecular graphs: steps, or replicas), a closure that has encoded the
graphs once (`TorsionPolicy.drift_fn`). States are sampled without gradient; log PF is then evaluated with
gradient in one call over all S steps.

Exploration (off-policy): a step's sampling std is sigma_k * sqrt(temperature), times `noise_factor` for a
(trajectory, step) with probability `noise_prob` (reference: 0.2, x5); log PF is always evaluated under the
unmodified policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

KB_KCAL_PER_MOL_K = 0.001987204118
"""Boltzmann constant in kcal / (mol K)."""
TWO_PI = 2.0 * math.pi
LOG_2PI = math.log(TWO_PI)
NUM_WINDINGS = 5
"""|n| <= 5 windings: the truncated WN density is exact to ~1e-6 relative for std <= 2 pi."""

DriftFn = Callable[[Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]
"""(x [P, M] angles, k [P] long step indices) -> mu [P, M] mean shifts, or (mu, r) with r [P, M] (or [P, 1]) the
forward kernel's std in units of sigma_k: PF(x_{k+1} | x_k) = WN(x_k + mu, (r sigma_k)^2). PB keeps sigma_k."""


def mean_and_std(drift_out: Tensor | tuple[Tensor, Tensor], sigma: Tensor) -> tuple[Tensor, Tensor]:
    """A drift function's output -> (mu, std of PF): std = r sigma, or sigma when it gave mu alone."""
    if isinstance(drift_out, tuple):
        mu, r = drift_out
        return mu, r * sigma
    return drift_out, sigma


def kt_kcal_mol(temperature_k: float = 298.15) -> float:
    """kT in kcal/mol."""
    return KB_KCAL_PER_MOL_K * temperature_k


def log_reward(energy_kcal_mol, temperature_k: float = 298.15):
    """log R(x) = -E(x) / kT (the only place the temperature enters the reward; applied once)."""
    return -energy_kcal_mol / kt_kcal_mol(temperature_k)


def wrap(x: Tensor) -> Tensor:
    """x mod 2 pi, in [0, 2 pi)."""
    return torch.remainder(x, TWO_PI)


def wrapped_normal_log_prob(x: Tensor, mean: Tensor, std: Tensor | float, num_windings: int = NUM_WINDINGS) -> Tensor:
    """log WN(x; mean, std^2) = log sum_{|n| <= W} N(d + 2 pi n; 0, std^2),  d = (x - mean) wrapped to [-pi, pi).

    Broadcasts x, mean, std; differentiable in mean (and std)."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    d = torch.remainder(x - mean + math.pi, TWO_PI) - math.pi  # [...]
    n = torch.arange(-num_windings, num_windings + 1, dtype=x.dtype, device=x.device) * TWO_PI  # [2W+1]
    z = (d[..., None] + n) / std[..., None]  # [..., 2W+1]
    return torch.logsumexp(-0.5 * z.pow(2), dim=-1) - std.log() - 0.5 * LOG_2PI  # [...]


def sample_wrapped_normal(mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """x = (mean + std * eps) mod 2 pi, eps ~ N(0, 1): an exact draw from WN(mean, std^2)."""
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return wrap(mean + std * eps)


def sigma_schedule(num_steps: int, sigma_max: float = math.pi, sigma_min: float = 0.01 * math.pi) -> Tensor:
    """sigma_k = sigma_max (sigma_min / sigma_max)^{k / (S-1)}, k = 0..S-1, [S] (S = 1: [sigma_max])."""
    t = torch.linspace(0.0, 1.0, num_steps) if num_steps > 1 else torch.zeros(1)
    return sigma_max * (sigma_min / sigma_max) ** t  # [S]


def remaining_noise_variance(num_steps: int) -> Tensor:
    """c_k = sum_{j >= k} sigma_j^2, [S]: the variance PB adds going back from x_S to x_k, so the reversed process's
    marginal at step k is the target smoothed by N(0, c_k)."""
    return sigma_schedule(num_steps).double().pow(2).flip(0).cumsum(0).flip(0)  # [S]


@dataclass
class Exploration:
    """Off-policy sampling: per (trajectory, step), std x noise_factor with probability noise_prob; all stds x
    sqrt(temperature) (a tempered Gaussian kernel). Exploration() is the reference's 0.2 / x5."""

    noise_prob: float = 0.2
    noise_factor: float = 5.0
    temperature: float = 1.0


@dataclass
class TorusTrajectory:
    angles: Tensor
    """[M, S+1] x_0..x_S in [0, 2 pi) of every torsion of every trajectory (M = sum_b K_b)."""
    torsion_index: Tensor
    """[M] long, trajectory b of each torsion."""
    log_pf: Tensor
    """[B] log p(x_0) + sum_k log PF(x_{k+1} | x_k) (differentiable in theta)."""
    log_pb: Tensor
    """[B] sum_k log PB(x_k | x_{k+1})."""

    @property
    def terminal(self) -> Tensor:
        return self.angles[:, -1]  # [M]

    def dense(self) -> Tensor:
        """[B, S+1, K] when every trajectory has the same K (torsions of a trajectory are contiguous)."""
        B = self.log_pf.shape[0]
        M, S1 = self.angles.shape
        assert M % B == 0, "dense() needs the same number of torsions in every trajectory"
        return self.angles.reshape(B, M // B, S1).transpose(1, 2)  # [B, S+1, K]


def _per_trajectory(values: Tensor, torsion_index: Tensor, num_trajectories: int) -> Tensor:
    """sum over the torsions of each trajectory: [..., M] -> [..., B]."""
    out = values.new_zeros(*values.shape[:-1], num_trajectories)
    return out.index_add_(values.dim() - 1, torsion_index, values)


def _log_pf_per_torsion(drift_fn: DriftFn, angles: Tensor) -> Tensor:
    """log p(x_0) + sum_k log PF for angles [R, M, S+1] (R replicas) -> [R, M], one drift call over R*S rows."""
    R, M, S1 = angles.shape
    S = S1 - 1
    sigma = sigma_schedule(S).to(angles)  # [S]
    x = angles[:, :, :-1].permute(0, 2, 1).reshape(R * S, M)  # [R*S, M]
    k = torch.arange(S, device=angles.device).repeat(R)  # [R*S]
    mu, std = mean_and_std(drift_fn(x, k), sigma.repeat(R)[:, None])  # [R*S, M], [R*S, M] or [R*S, 1]
    x_next = angles[:, :, 1:].permute(0, 2, 1).reshape(R * S, M)  # [R*S, M]
    lp = wrapped_normal_log_prob(x_next, x + mu, std)  # [R*S, M]
    return lp.reshape(R, S, M).sum(1) - LOG_2PI  # [R, M]


def _log_pb_per_torsion(angles: Tensor) -> Tensor:
    """sum_k log PB(x_k | x_{k+1}) for angles [..., M, S+1] -> [..., M]."""
    S = angles.shape[-1] - 1
    sigma = sigma_schedule(S).to(angles)  # [S]
    return wrapped_normal_log_prob(angles[..., :-1], angles[..., 1:], sigma).sum(-1)  # [..., M]


def forward_log_prob(drift_fn: DriftFn, angles: Tensor, torsion_index: Tensor, num_trajectories: int) -> Tensor:
    """log_pf [B] of trajectories angles [M, S+1], including the uniform initial density."""
    return _per_trajectory(_log_pf_per_torsion(drift_fn, angles[None])[0], torsion_index, num_trajectories)


def backward_log_prob(angles: Tensor, torsion_index: Tensor, num_trajectories: int) -> Tensor:
    """log_pb [B] of trajectories angles [M, S+1]."""
    return _per_trajectory(_log_pb_per_torsion(angles), torsion_index, num_trajectories)


def sample_forward_angles(
    drift_fn: DriftFn,
    torsion_index: Tensor,
    num_trajectories: int,
    num_steps: int = 20,
    exploration: Exploration | None = None,
    generator: torch.Generator | None = None,
    log_pf: Tensor | None = None,
) -> Tensor:
    """The angles [M, S+1] of B forward trajectories from uniform x_0. A learner recomputes log PF with gradient
    at its step anyway; for samples without gradient, pass log_pf [M] (zeros) and it is filled in place with
    each torsion's log p(x_0) + sum_k log PF under the unmodified policy (std sigma_k), at no extra drift call."""
    device = torsion_index.device
    M, S, B = torsion_index.numel(), num_steps, num_trajectories
    sigma = sigma_schedule(S).to(device)  # [S]
    with torch.no_grad():
        angles = torch.empty(M, S + 1, device=device)  # [M, S+1]
        x = torch.rand(M, generator=generator, device=device) * TWO_PI  # [M]
        angles[:, 0] = x
        if log_pf is not None:
            log_pf -= LOG_2PI
        for k in range(S):
            mu, policy_std = mean_and_std(drift_fn(x[None], torch.full((1,), k, device=device)), sigma[k])
            mean, policy_std = x + mu[0], policy_std.expand(1, M)[0]  # [M], [M]
            std = policy_std
            if exploration is not None:
                wide = torch.rand(B, generator=generator, device=device) < exploration.noise_prob  # [B]
                factor = (1.0 + wide.float() * (exploration.noise_factor - 1.0)) * math.sqrt(exploration.temperature)
                std = std * factor[torsion_index]  # [M]
            x = sample_wrapped_normal(mean, std, generator)  # [M]
            angles[:, k + 1] = x
            if log_pf is not None:
                log_pf += wrapped_normal_log_prob(x, mean, policy_std)
    return angles


def sample_trajectories(
    drift_fn: DriftFn,
    torsion_index: Tensor,
    num_trajectories: int,
    num_steps: int = 20,
    exploration: Exploration | None = None,
    generator: torch.Generator | None = None,
) -> TorusTrajectory:
    """B forward trajectories from uniform x_0 (exploration None: on-policy); log PF under the unmodified policy
    (with gradient when enabled: one more drift call over all S steps; without, accumulated while sampling)."""
    B = num_trajectories
    if torch.is_grad_enabled():
        angles = sample_forward_angles(drift_fn, torsion_index, B, num_steps, exploration, generator)
        log_pf = forward_log_prob(drift_fn, angles, torsion_index, B)
    else:
        per_torsion = torch.zeros(torsion_index.numel(), device=torsion_index.device)  # [M]
        angles = sample_forward_angles(drift_fn, torsion_index, B, num_steps, exploration, generator, per_torsion)
        log_pf = _per_trajectory(per_torsion, torsion_index, B)
    return TorusTrajectory(angles, torsion_index, log_pf, backward_log_prob(angles, torsion_index, B))


def sample_backward_angles(terminal: Tensor, num_steps: int, generator: torch.Generator | None) -> Tensor:
    """Run the fixed PB from x_S = terminal [..., M]: angles [..., M, S+1]."""
    sigma = sigma_schedule(num_steps).to(terminal)  # [S]
    angles = terminal.new_empty(*terminal.shape, num_steps + 1)  # [..., M, S+1]
    x = angles[..., num_steps] = wrap(terminal)
    for k in range(num_steps - 1, -1, -1):  # x_k | x_{k+1}
        x = sample_wrapped_normal(x, sigma[k], generator)
        angles[..., k] = x
    return angles


def backward_trajectories(
    drift_fn: DriftFn,
    torsion_index: Tensor,
    terminal: Tensor,
    num_trajectories: int,
    num_steps: int = 20,
    generator: torch.Generator | None = None,
) -> TorusTrajectory:
    """Trajectories sampled by the fixed PB back from given terminal angles [M] (replayed states); log PF along them."""
    with torch.no_grad():
        angles = sample_backward_angles(terminal.detach(), num_steps, generator)  # [M, S+1]
    log_pf = forward_log_prob(drift_fn, angles, torsion_index, num_trajectories)
    return TorusTrajectory(angles, torsion_index, log_pf, backward_log_prob(angles, torsion_index, num_trajectories))


@torch.no_grad()
def log_terminal_density(
    drift_fn: DriftFn,
    torsion_index: Tensor,
    terminal: Tensor,
    num_trajectories: int,
    num_steps: int = 20,
    num_backward: int = 8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Importance-sampled log p_T(x) of the model's terminal density (w.r.t. Lebesgue measure on the torus):

        p_T(x) = E_{tau ~ PB(. | x)} [ PF(tau) / PB(tau | x) ]
        log p_T(x_b) ~= logmeanexp_{j=1..J} ( log_pf(tau_j) - log_pb(tau_j | x_b) ),     J = num_backward

    (a lower bound in expectation; exact for every J when PF is the time reversal of PB; its variance grows fast
    with how far PF is from that reversal, e.g. at points where the model puts little mass). terminal [M] -> [B]."""
    J = num_backward
    angles = sample_backward_angles(terminal[None].expand(J, -1), num_steps, generator)  # [J, M, S+1]
    log_w = _log_pf_per_torsion(drift_fn, angles) - _log_pb_per_torsion(angles)  # [J, M]
    log_w = _per_trajectory(log_w, torsion_index, num_trajectories)  # [J, B]
    return torch.logsumexp(log_w, dim=0) - math.log(J)  # [B]
