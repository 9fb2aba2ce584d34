"""The RL baselines of RTB (arXiv:2405.20971, Sec. 4): on-policy REINFORCE on trajectories tau ~ q of the posterior
sampler, with the surrogate

    L = - mean_b sg(A_b) log q(tau_b),       grad L = - E_q[A grad log q]      (sg = stop-gradient)

Advantages, centred by the batch mean (a baseline: E_q[grad log q] = 0, so it leaves the gradient unbiased):
    rl (DDPO-like, reward only):    A = r(x) - mean r             or  log r(x) - mean log r
    rl_kl (DPOK-like, KL-regularized; the centred form of Deleu et al., arXiv:2509.01632):
                                    A = log r(x) - alpha (log q(tau) - log p(tau)),   minus its batch mean
rl_kl ascends E_q[log r] - alpha KL(q || p), whose maximizer is q ~ p r^(1/alpha): the RTB posterior at alpha = 1/beta.
(The reference's `fwd_rl` adds alpha (log q - log p)^2 to a reward-only REINFORCE instead, which Deleu et al. call
mis-specified.) RTB's own objectives live in workloads/objectives.py.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor


def reinforce_loss(log_q: Tensor, advantage: Tensor) -> Tensor:
    """- mean_b sg(A_b) log q(tau_b); log_q [B] with the gradient, advantage [B]."""
    return -(advantage.detach() * log_q).mean()


def reward_advantage(log_r: Tensor, kind: Literal["reward", "log_reward"]) -> Tensor:
    """A = r - mean r (kind 'reward') or log r - mean log r ('log_reward'), [B]."""
    reward = log_r.exp() if kind == "reward" else log_r
    return reward - reward.mean()


def kl_regularized_advantage(log_r: Tensor, log_q: Tensor, log_p: Tensor, alpha: float) -> Tensor:
    """A = log r - alpha (log q - log p), centred by its batch mean, [B] (no gradient)."""
    advantage = (log_r - alpha * (log_q - log_p)).detach()
    return advantage - advantage.mean()
