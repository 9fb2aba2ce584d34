"""Trajectory-level losses of the diffusion sampler as pure functions of per-trajectory sums.

Inputs are [B] tensors: log_pf = sum_i log PF(x_{i+1}|x_i), log_pb = sum_i log PB(x_i|x_{i+1}),
log_reward = log R(x_T). Gradients flow through log_pf (and log_z for TB).
"""
from __future__ import annotations

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
