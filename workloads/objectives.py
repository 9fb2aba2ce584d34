"""GFlowNet objectives as pure functions of tensors, shared by every family (samplers, torsional, ...).

Trajectory-level objectives (TB, VarGrad, RTB, PIS) take [B] tensors, one entry per trajectory tau_b:
    log_pf     = sum_i log PF(x_{i+1} | x_i)       (forward policy)
    log_pb     = sum_i log PB(x_i | x_{i+1})       (backward policy)
    log_reward = log R(x_T)                        (terminal state)
Subtrajectory objectives (SubTB, FL-SubTB) take the per-step terms log_pf_steps, log_pb_steps [B, T]
(step l: between x_l and x_{l+1}) and log flows of the T+1 states [B, T+1]. None of them detaches
anything: which tensors carry a gradient is the caller's choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


# ---------------------------------------------------------------- trajectory level
def tb_loss(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor, log_z: Tensor) -> Tensor:
    """Trajectory balance (Malkin et al. 2022, arXiv:2201.13259; arXiv:2402.05098 eq. 6) with a learned log Z
    (a scalar, or [B] for a conditional log Z(c_b)):

        L_TB = mean_b ( log Z + sum log PF(tau_b) - sum log PB(tau_b | x_b) - log R(x_b) )^2

    Zero iff PF(tau) Z = R(x) PB(tau | x) on every trajectory of the batch.
    """
    return (log_z + log_pf - log_pb - log_reward).pow(2).mean()


def vargrad_loss(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor, log_z_hat: Tensor | None = None) -> Tensor:
    """VarGrad / log-variance loss (Richter et al. 2020, arXiv:2010.10436; as in arXiv:2402.05098 Sec. 2):
    TB with log Z replaced by an estimate from the batch,

        zeta_b = log R(x_b) + sum log PB(tau_b | x_b) - sum log PF(tau_b)      [B]
        L_VarGrad = mean_b ( zeta_b - log Z_hat_b )^2

    log_z_hat: None (default) -> the batch mean zeta.mean(), so L = Var_b[zeta] (biased batch variance; the
    gradient through the mean vanishes because the residuals sum to zero). Else a scalar or [B], e.g. the
    detached mean of zeta over the trajectories of the same condition, gathered to [B] (a conditional VarGrad).
    """
    zeta = log_reward + log_pb - log_pf  # [B]
    if log_z_hat is None:
        log_z_hat = zeta.mean()
    return (zeta - log_z_hat).pow(2).mean()


def relative_tb_loss(
    log_p_post: Tensor, log_p_prior: Tensor, log_reward: Tensor, log_z: Tensor, beta: float = 1.0
) -> Tensor:
    """Relative trajectory balance (Venkatraman et al. 2024, arXiv:2405.20971 eq. 8), fine-tuning a posterior
    sampler p_post from a prior diffusion model p_prior towards p_post(x) ~ p_prior(x) r(x)^beta:

        L_RTB = mean_b ( log Z + sum log p_post(tau_b) - sum log p_prior(tau_b) - beta log r(x_b) )^2

    log_p_post, log_p_prior, log_reward [B]; log Z a scalar (or [B]). Zero iff
    p_post(tau) Z = p_prior(tau) r(x)^beta on every trajectory.
    """
    return (log_z + log_p_post - log_p_prior - beta * log_reward).pow(2).mean()


def clipped_relative_tb_loss(
    log_p_post: Tensor, log_p_prior: Tensor, log_reward: Tensor, log_z: Tensor, beta: float, threshold: float
) -> Tensor:
    """Relative trajectory balance with loss clipping (arXiv:2405.20971; its reference code's image fine-tuning
    uses c = 0.1):

        delta_b = log Z + sum log p_post(tau_b) - sum log p_prior(tau_b) - beta log r(x_b)
        L = mean_b relu(delta_b^2 - c)

    Trajectories already balanced to |delta_b| <= sqrt(c) add neither loss nor gradient; c = 0 is `relative_tb_loss`.
    """
    delta = log_z + log_p_post - log_p_prior - beta * log_reward  # [B]
    return F.relu(delta.pow(2) - threshold).mean()


def backtracking_pair_loss(
    log_p_post: Tensor, log_p_prior: Tensor, log_reward: Tensor, beta: float = 1.0, threshold: float = 0.0
) -> Tensor:
    """Relative trajectory balance on backtracking pairs (arXiv:2405.20971's back_and_forth). Rows b and B + b of the
    [2B] inputs are two partial trajectories from one start x_s (b: the noising chain of a sample x read downwards,
    B + b: the posterior's re-denoising of x_s to x'). At the optimum each satisfies
    log p_post(x_s) + log Z + Delta = log p_prior(x_s) + beta log r(x_end), Delta = sum log p_post - sum log p_prior,
    so their difference drops the unknown marginal ratio at x_s and log Z:

        delta_b = (Delta_b - beta log r(x_b)) - (Delta_{B+b} - beta log r(x'_b)),      L = mean_b relu(delta_b^2 - c)
    """
    B = len(log_p_post) // 2
    residual = log_p_post - log_p_prior - beta * log_reward  # [2B]: Delta - beta log r of each partial trajectory
    return F.relu((residual[:B] - residual[B:]).pow(2) - threshold).mean()


def pis_loss(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor) -> Tensor:
    """Path integral sampler (Zhang & Chen 2022, arXiv:2111.15141), reparameterized KL:

        L_PIS = mean_b ( sum log PF(tau_b) - sum log PB(tau_b | x_b) - log R(x_b) ),  tau_b = g_theta(eps_b)
              ~ KL(PF || PB R / Z) - log Z                                               (>= -log Z)

    Only meaningful on-policy, with the states differentiable in theta (the pathwise gradient through the
    sampler). No log Z is learned.
    """
    return (log_pf - log_pb - log_reward).mean()


# ---------------------------------------------------------------- subtrajectory balance
def boundary_log_flows(log_flows_interior: Tensor, log_z: Tensor, log_reward: Tensor) -> Tensor:
    """[log Z, log F(x_1), .., log F(x_{T-1}), log R(x_T)], [B, T+1]: the interior flows [B, T-1] between the
    GFlowNet's boundary conditions F(x_0) = Z (a scalar log Z: one source state) and F(x_T) = R(x_T) [B]."""
    B = log_flows_interior.shape[0]
    return torch.cat([log_z.expand(B, 1), log_flows_interior, log_reward[:, None]], dim=1)


def subtb_residuals(log_pf_steps: Tensor, log_pb_steps: Tensor, log_flows: Tensor) -> Tensor:
    """All subtrajectory-balance residuals at once, [B, T+1, T+1] (only i < j is used):

        resid_ij = log F(x_i) + sum_{i<=l<j} (log PF_l - log PB_l) - log F(x_j)  =  a_i - a_j,
        a_i = log F(x_i) - sum_{l<i} (log PF_l - log PB_l)                        (a cumulative sum)

    log_pf_steps, log_pb_steps [B, T] (step l: between x_l and x_{l+1}); log_flows [B, T+1].
    """
    cum = F.pad((log_pf_steps - log_pb_steps).cumsum(-1), (1, 0))  # [B, T+1], cum_i = sum_{l<i}
    a = log_flows - cum  # [B, T+1]
    return a[:, :, None] - a[:, None, :]  # [B, T+1, T+1]


def subtb_weights(T: int, lamda: float, device: torch.device | str = "cpu") -> Tensor:
    """w_ij = lambda^{j-i} / sum_{i'<j'} lambda^{j'-i'} for 0 <= i < j <= T, else 0; [T+1, T+1].

    Normalized in log space: lambda^T alone overflows float32 for lambda = 2 at T >= 128.
    """
    idx = torch.arange(T + 1, device=device)
    span = idx[None, :] - idx[:, None]  # [T+1, T+1], j - i
    log_w = (span * math.log(lamda)).masked_fill(span <= 0, -math.inf)  # [T+1, T+1]
    return torch.softmax(log_w.flatten(), dim=0).view(T + 1, T + 1)


def subtb_loss(log_pf_steps: Tensor, log_pb_steps: Tensor, log_flows: Tensor, lamda: float) -> Tensor:
    """lambda-weighted subtrajectory balance (Madan et al. 2023, arXiv:2209.12782):

        L_SubTB = mean_b  sum_{0<=i<j<=T} lambda^{j-i} resid_ij(tau_b)^2 / sum_{0<=i<j<=T} lambda^{j-i}

    with resid_ij from `subtb_residuals`; log_flows [B, T+1] carries the boundary conditions
    log F(x_0) = log Z and log F(x_T) = log R(x_T) (`boundary_log_flows`). Zero iff every
    subtrajectory is balanced: F(x_i) prod PF = F(x_j) prod PB.
    """
    T = log_pf_steps.shape[-1]
    w = subtb_weights(T, lamda, log_pf_steps.device)  # [T+1, T+1]
    resid = subtb_residuals(log_pf_steps, log_pb_steps, log_flows)  # [B, T+1, T+1]
    return (w * resid**2).sum((-1, -2)).mean()


def forward_looking_log_flows(log_f_tilde: Tensor, log_r_tilde: Tensor, log_z: Tensor, log_reward: Tensor) -> Tensor:
    """Forward-looking flows (Pan et al. 2023, arXiv:2302.01687), [B, T+1]: at the interior states

        log F(x_i) = log R~(x_i) + log F~(x_i),      i = 1..T-1

    where R~ is an intermediate reward known in closed form at every state and the learned F~ only corrects
    it; log F(x_0) = log Z and log F(x_T) = log R(x_T) as in `boundary_log_flows`. log_f_tilde, log_r_tilde
    [B, T-1]. (Diffusion samplers, arXiv:2402.05098 after DGFS arXiv:2310.02679: log R~(x_t) =
    (1 - t) log p_ref(x_t, t) + t log R(x_t).)
    """
    return boundary_log_flows(log_r_tilde + log_f_tilde, log_z, log_reward)


def fl_subtb_loss(
    log_pf_steps: Tensor,
    log_pb_steps: Tensor,
    log_f_tilde: Tensor,
    log_r_tilde: Tensor,
    log_z: Tensor,
    log_reward: Tensor,
    lamda: float,
) -> Tensor:
    """Forward-looking subtrajectory balance (arXiv:2302.01687; FL-SubTB of arXiv:2402.05098): `subtb_loss` on
    the flows log F(x_i) = log R~(x_i) + log F~(x_i) of `forward_looking_log_flows`,

        L_FL-SubTB = mean_b sum_{i<j} w_ij ( log F(x_i) + sum_{i<=l<j} (log PF_l - log PB_l) - log F(x_j) )^2

    log_pf_steps, log_pb_steps [B, T]; log_f_tilde, log_r_tilde [B, T-1] (interior states); log Z a scalar;
    log_reward [B] = log R(x_T).
    """
    log_flows = forward_looking_log_flows(log_f_tilde, log_r_tilde, log_z, log_reward)  # [B, T+1]
    return subtb_loss(log_pf_steps, log_pb_steps, log_flows, lamda)
