"""The diffusion prior: a maximum-likelihood fit of the forward drift on backward Brownian-bridge trajectories of
exact data (the reference's `pretrain_prior.py`, `bwd_mle`).

    x ~ p_data (exact GMM25 samples),   tau = (x_0 = 0, x_1, .., x_T = x) ~ PB(. | x)   (Brownian bridge, sde.py)
    L(theta) = - mean_b sum_{i=0}^{T-1} log PF_theta(x_{i+1} | x_i)

PB is fixed, so minimizing L maximizes E_data E_PB[log PF_theta(tau) - log PB(tau | x)], the evidence lower bound
of log p_theta(x); `nll_bound` = mean (log PB - log PF) >= -log p_theta(x) is what the fit reports, to compare with
the data's entropy (GMM25: log 25 + log(2 pi e 0.3) = 4.853 nats, the best any model can reach).

Deterministic in `prior_seed`: the initialization, the data of iteration s (seed prior_seed * PRIOR_DATA_STRIDE + s)
and the bridges (a generator of its own) all come from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from workloads.rtb.config import RTBConfig
from workloads.rtb.toy import Toy2D
from workloads.samplers.policy import DriftPolicy
from workloads.samplers.sde import sample_backward

PRIOR_DATA_STRIDE = 1_000_003
"""Exact-sample seeds of iteration s are prior_seed * this + s: data sets of different prior seeds never overlap."""
PROGRESS_EVERY = 500
"""Iterations between two progress calls of the fit."""
GMM25_ENTROPY = math.log(25) + math.log(2 * math.pi * math.e * 0.3)
"""H(GMM25) in nats, to the precision that matters (its modes barely overlap): the floor of `nll_bound`."""


def new_drift_policy(
    config: RTBConfig, seed: int, device: torch.device | str, log_variance_range: float = 0.0
) -> DriftPolicy:
    """f_theta(x, t) of the reference's architecture, seeded without touching the global RNG; zero drift at init
    (and a learned variance when log_variance_range > 0, for a posterior)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        c = config
        policy = DriftPolicy(
            Toy2D.dim, c.hidden_dim, c.time_embedding_dim, c.num_layers, log_variance_range=log_variance_range
        )
    return policy.to(device)


def fit_prior(
    config: RTBConfig,
    task: Toy2D,
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[DriftPolicy, dict]:
    """(fitted prior drift, fit statistics {"nll_bound", "fit_s"}): `prior_iters` Adam steps of the MLE;
    `progress(iteration, nll_bound)` every PROGRESS_EVERY iterations."""
    c = config
    policy = new_drift_policy(c, c.prior_seed, device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=c.prior_lr)
    generator = torch.Generator(device=device).manual_seed(c.prior_seed)
    nll_bounds: list[torch.Tensor] = []
    t0 = time.time()
    for s in range(c.prior_iters):
        x = task.sample_prior(c.prior_batch_size, seed=c.prior_seed * PRIOR_DATA_STRIDE + s)  # [B, 2]
        traj = sample_backward(policy, x, c.num_steps, c.sigma2, generator)
        loss = -traj.log_pf.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        nll_bounds.append((traj.log_pb - traj.log_pf).mean().detach())
        if progress is not None and (s + 1) % PROGRESS_EVERY == 0:
            progress(s + 1, nll_bounds[-1].item())
    policy.requires_grad_(False)
    tail = nll_bounds[-max(1, len(nll_bounds) // 10) :]  # the last tenth: the fitted model, not its start
    nll_bound = torch.stack(tail).mean().item() if nll_bounds else float("nan")
    return policy, {"nll_bound": nll_bound, "fit_s": time.time() - t0}


def fitted_prior_state(
    config: RTBConfig, device: torch.device | str = "cpu", progress: Callable[[int, float], None] | None = None
) -> dict:
    """{'key': config.prior_key(), 'policy': the fitted drift's state dict, 'fit': its statistics}: what a learner
    takes as `prior_state`."""
    policy, fit = fit_prior(config, Toy2D().to(device), device, progress)
    return {"key": config.prior_key(), "policy": policy.state_dict(), "fit": fit}
