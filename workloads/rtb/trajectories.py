"""log p_post(tau) of a trajectory with the gradient through a random subset of its steps (arXiv:2405.20971,
Sec. 3 "gradient subsampling"): the backward pass of a T-step trajectory then stores the activations of |S| steps
only, not T.

    log p_post(tau) = sum_i sg(log PF_i) + (T / |S|) sum_{i in S} (log PF_i - sg(log PF_i)),    S ~ Uniform(|S|-subsets)

sg = stop-gradient. The value is the exact sum; the gradient, (T / |S|) sum_{i in S} grad log PF_i, is an unbiased
estimate of grad sum_i log PF_i (each step is in S with probability |S| / T).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workloads.samplers.policy import DriftPolicy
from workloads.samplers.sde import LOG_2PI, time_grid


def log_pf_at_steps(policy: DriftPolicy, states: Tensor, steps: Tensor, sigma2: float) -> Tensor:
    """log N(x_{i+1}; x_i + f(x_i, t_i) dt, sigma^2 dt I) at the steps i of `steps` [S], states [B, T+1, D]
    -> [B, S] (with the gradient in theta)."""
    T, D = states.shape[1] - 1, states.shape[-1]
    var = sigma2 / T  # sigma^2 dt
    t_emb = policy.time_embedding(time_grid(T, states.device)[steps])  # [S, H]
    x, x_next = states[:, steps], states[:, steps + 1]  # [B, S, D] each
    mean = x + policy.drift(x, t_emb) / T  # [B, S, D]
    return -0.5 * ((x_next - mean) ** 2).sum(-1) / var - 0.5 * D * (LOG_2PI + math.log(var))  # [B, S]


def subset_gradient_log_pf(
    policy: DriftPolicy,
    states: Tensor,
    log_pf_steps: Tensor,
    sigma2: float,
    fraction: float,
    generator: torch.Generator,
) -> Tensor:
    """log p_post(tau) [B] with the gradient through ceil(fraction T) random steps; `log_pf_steps` [B, T] are the
    per-step values computed without gradient (the same policy and states [B, T+1, D])."""
    T = log_pf_steps.shape[1]
    num_steps = max(1, math.ceil(fraction * T))
    steps = torch.randperm(T, generator=generator, device=generator.device)[:num_steps].sort().values  # [S]
    with_grad = log_pf_at_steps(policy, states, steps, sigma2)  # [B, S]
    correction = (T / num_steps) * (with_grad - with_grad.detach()).sum(-1)  # [B], value 0, gradient only
    return log_pf_steps.detach().sum(-1) + correction
