"""Evaluation metrics of a diffusion sampler (arXiv:2402.05098, Sec. 5).

From on-policy forward trajectories tau ~ PF (no exploration), the log importance weight
    log w(tau) = log R(x_T) + sum log PB(tau | x_T) - sum log PF(tau)
gives two estimators of log Z:
    ELBO         log Z_hat    = mean_b log w_b                 (<= log Z in expectation)
    reweighted   log Z_hat_RW = log (1/B) sum_b exp(log w_b)    (<= log Z in expectation, tighter)
and their errors Delta log Z = |log Z - log Z_hat|, Delta log Z_RW = |log Z - log Z_hat_RW|.

From K backward trajectories tau_k ~ PB(. | x) of each exact sample x ~ p = R / Z, the same log
weights give an upper bound and the sampler's log-likelihood of x:
    EUBO         mean_{x, k} log w(tau_k)                      (>= log Z in expectation)
    log p_theta(x) ~ log (1/K) sum_k exp(log PF(tau_k) - log PB(tau_k | x))
                                                    (importance sampling with proposal PB(. | x);
                                                     <= log p_theta(x) in expectation, exact as K -> inf)
At the optimum PF(tau) = PB(tau | x) R(x) / Z, so ELBO = EUBO = log Z and log p_theta = log p.

W2 between equal-size empirical sets {x_i}, {y_j} by exact optimal assignment pi:
    W2 = sqrt( min_pi (1/N) sum_i ||x_i - y_pi(i)||^2 )
and W1 likewise with Euclidean cost:
    W1 = min_pi (1/N) sum_i ||x_i - y_pi(i)||
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch import Tensor


def log_importance_weights(log_reward: Tensor, log_pf: Tensor, log_pb: Tensor) -> Tensor:
    """log w = log R + log PB - log PF, [B]."""
    return log_reward + log_pb - log_pf


def elbo(log_w: Tensor) -> float:
    return log_w.mean().item()


def log_z_reweighted(log_w: Tensor) -> float:
    """logmeanexp(log w)."""
    return (torch.logsumexp(log_w.double(), dim=0) - math.log(log_w.numel())).item()


def eubo(log_w_backward: Tensor) -> float:
    """EUBO = mean log w over backward trajectories of exact target samples, log_w_backward [N, K]."""
    return log_w_backward.double().mean().item()


def log_likelihood(log_pf: Tensor, log_pb: Tensor) -> Tensor:
    """log p_theta(x) ~ logmeanexp_k (log PF(tau_k) - log PB(tau_k | x)) for log_pf, log_pb [N, K] -> [N]."""
    K = log_pf.shape[-1]
    return torch.logsumexp((log_pf - log_pb).double(), dim=-1) - math.log(K)


def log_z_metrics(log_w: Tensor, log_z: float) -> dict[str, float]:
    """ELBO, log Z_RW and their absolute errors against the exact log Z."""
    lb, rw = elbo(log_w), log_z_reweighted(log_w)
    return {"elbo": lb, "delta_log_z": abs(log_z - lb), "log_z_rw": rw, "delta_log_z_rw": abs(log_z - rw)}


def _optimal_pair_distances(
    samples: np.ndarray | Tensor, exact_samples: np.ndarray | Tensor, p: Literal[1, 2]
) -> np.ndarray:
    """||x_i - y_pi(i)||, [N], for the assignment pi minimizing sum_i ||x_i - y_pi(i)||^p."""
    x = np.asarray(samples.detach().cpu() if isinstance(samples, Tensor) else samples, dtype=np.float64)
    y = np.asarray(
        exact_samples.detach().cpu() if isinstance(exact_samples, Tensor) else exact_samples, dtype=np.float64
    )
    assert x.shape == y.shape, f"W{p} needs equal-size sets, got {x.shape} and {y.shape}"
    cost = cdist(x, y, {1: "euclidean", 2: "sqeuclidean"}[p])  # [N, N] ||x_i - y_j||^p
    row, col = linear_sum_assignment(cost)
    return np.linalg.norm(x[row] - y[col], axis=1)  # exact distances of the optimal pairs


def w2(samples: np.ndarray | Tensor, exact_samples: np.ndarray | Tensor) -> float:
    """Exact 2-Wasserstein distance between two equal-size empirical measures (sqrt of mean squared cost)."""
    return float(math.sqrt((_optimal_pair_distances(samples, exact_samples, p=2) ** 2).mean()))


def w1(samples: np.ndarray | Tensor, exact_samples: np.ndarray | Tensor) -> float:
    """Exact 1-Wasserstein distance between two equal-size empirical measures (mean Euclidean cost)."""
    return float(_optimal_pair_distances(samples, exact_samples, p=1).mean())
