"""log p_post(tau) of a trajectory with the gradient through a random subset of its steps (arXiv:2405.20971,
Sec. 3 "gradient subsampling"): the backward pass of a T-step trajectory then stores the activations of |S| steps
only, not T.

    log p_post(tau) = sum_i sg(log PF_i) + (T / |S|) sum_{i in S} (log PF_i - sg(log PF_i)),    S ~ Uniform(|S|-subsets)

sg = stop-gradient. The value is the exact sum; the gradient, (T / |S|) sum_{i in S} grad log PF_i, is an unbiased
estimate of grad sum_i log PF_i (each step is in S with probability |S| / T).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from workloads.samplers.policy import DriftPolicy
from workloads.samplers.sde import step_log_prob, time_grid


def log_pf_at_steps(policy: DriftPolicy, states: Tensor, steps: Tensor, sigma2: float) -> Tensor:
    """log PF(x_{i+1} | x_i) at the steps i of `steps` [S], states [B, T+1, D] -> [B, S] (with the gradient in
    theta)."""
    T = states.shape[1] - 1
    t_emb = policy.time_embedding(time_grid(T, states.device)[steps])  # [S, H]
    return step_log_prob(policy, states[:, steps], states[:, steps + 1], t_emb, sigma2, T)  # [B, S]


def subset_gradient_sum(
    values: Tensor, log_p_at: Callable[[Tensor], Tensor], fraction: float, generator: torch.Generator
) -> Tensor:
    """sum_i log p_i [B] with the gradient through a random subset S of the L steps, |S| = ceil(fraction L).

    `values` [B, L] are the per-step values (any gradient is dropped); log_p_at(steps [S]) -> [B, S] recomputes the
    chosen steps with gradient. The value is the full sum; the gradient is (L / |S|) sum_{i in S} grad log p_i."""
    L = values.shape[1]
    S = max(1, math.ceil(fraction * L))
    steps = torch.randperm(L, generator=generator, device=generator.device)[:S].sort().values.to(values.device)
    with_grad = log_p_at(steps)  # [B, S]
    return values.detach().sum(-1) + (L / S) * (with_grad - with_grad.detach()).sum(-1)


def subset_gradient_log_pf(
    policy: DriftPolicy,
    states: Tensor,
    log_pf_steps: Tensor,
    sigma2: float,
    fraction: float,
    generator: torch.Generator,
) -> Tensor:
    """log p_post(tau) [B] of a 2-D toy trajectory with the gradient through ceil(fraction T) random steps;
    `log_pf_steps` [B, T] are the per-step values computed without gradient (the same policy and states [B, T+1, D])."""
    return subset_gradient_sum(
        log_pf_steps, lambda steps: log_pf_at_steps(policy, states, steps, sigma2), fraction, generator
    )
