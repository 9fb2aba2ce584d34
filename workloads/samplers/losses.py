"""Losses of the diffusion sampler (arXiv:2402.05098, Sec. 2-3) as pure functions of tensors.

Trajectory-level losses (TB, VarGrad, PIS) take [B] tensors: log_pf = sum_i log PF(x_{i+1}|x_i),
log_pb = sum_i log PB(x_i|x_{i+1}), log_reward = log R(x_T). Gradients flow through log_pf (and
log_z for TB; for PIS also through log_pb and log_reward, whose states are reparameterized).
Subtrajectory balance (SubTB, FL-SubTB) takes the per-step terms log_pf_steps, log_pb_steps [B, T]
and the log flows of the T+1 states [B, T+1].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def tb_loss(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor, log_z: Tensor) -> Tensor:
    """Trajectory balance (Malkin et al. 2022; arXiv:2402.05098 eq. 6) with a learned scalar log Z:

        L_TB = mean_b ( log Z + sum log PF(tau_b) - sum log PB(tau_b | x_b) - log R(x_b) )^2

    Zero iff PF(tau) Z = R(x) PB(tau | x) on every trajectory of the batch.
    """
    return (log_z + log_pf - log_pb - log_reward).pow(2).mean()


def vargrad_loss(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor) -> Tensor:
    """VarGrad / log-variance loss (Richter et al. 2020; arXiv:2402.05098 Sec. 2): TB with log Z replaced
    by its batch estimate

        zeta_b = log R(x_b) + sum log PB(tau_b | x_b) - sum log PF(tau_b)
        log Z_hat = mean_b zeta_b
        L_VarGrad = mean_b ( log Z_hat - zeta_b )^2  = Var_b[zeta]   (biased batch variance)

    (The gradient through log Z_hat vanishes because the residuals sum to zero.)
    """
    zeta = log_reward + log_pb - log_pf  # [B]
    return (zeta - zeta.mean()).pow(2).mean()


def pis_loss(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor) -> Tensor:
    """Path integral sampler (Zhang & Chen 2022, arXiv:2111.15141), reparameterized KL:

        L_PIS = mean_b ( sum log PF(tau_b) - sum log PB(tau_b | x_b) - log R(x_b) ),  tau_b = g_theta(eps_b)
              ~ KL(PF || PB R / Z) - log Z                                               (>= -log Z)

    Only meaningful on-policy, with the states differentiable in theta (`sample_forward_reparameterized`):
    the gradient is the pathwise one through the SDE. No log Z is learned.
    """
    return (log_pf - log_pb - log_reward).mean()


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


def boundary_log_flows(log_flows_interior: Tensor, log_z: Tensor, log_reward: Tensor) -> Tensor:
    """[log Z, log F(x_1), .., log F(x_{T-1}), log R(x_T)], [B, T+1], from the interior flows [B, T-1],
    the learned scalar log Z (x_0 = 0 is a fixed point, F(x_0) = Z) and log R(x_T) [B]."""
    B = log_flows_interior.shape[0]
    return torch.cat([log_z.expand(B, 1), log_flows_interior, log_reward[:, None]], dim=1)


def forward_looking_log_flows(log_f_tilde: Tensor, log_p_ref: Tensor, log_reward: Tensor, t: Tensor) -> Tensor:
    """Forward-looking flow (Zhang et al. 2023, DGFS, arXiv:2310.02679), at interior times 0 < t < 1:

        log F(x_t, t) = (1 - t) log p_ref(x_t, t) + t log R(x_t) + log F~_theta(x_t, t)

    p_ref(., t) = N(0, sigma^2 t I) is the marginal at time t of the zero-drift reference process
    (`sde.reference_log_marginal`); the learned F~_theta only corrects the interpolation between it and
    the target. All inputs [B, T-1] (t broadcastable) -> [B, T-1]. (At t = 0 the flow is the learned
    log Z, at t = 1 log R: `boundary_log_flows`.)
    """
    return (1 - t) * log_p_ref + t * log_reward + log_f_tilde
