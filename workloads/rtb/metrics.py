"""Metrics of a posterior sampler against exact answers (the RTB toy, arXiv:2405.20971).

The exact posterior of the prior actually used (the fitted model p_theta, not the GMM25 it approximates), from M
samples x_m ~ p_theta with self-normalized weights w_m ~ r(x_m)^beta:

    log Z_MC           = log (1/M) sum_m r(x_m)^beta                   (Z = E_{p_theta}[r^beta]; Z_MC unbiased)
    mass_k             = sum_{m: mode(x_m) = k} w_m / sum_m w_m        (the 25 mode masses of p_theta r^beta / Z)
    E_post[log r]      = sum_m w_m log r(x_m) / sum_m w_m
    exact samples      = x_m resampled with probabilities w_m           (sampling-importance-resampling)

From N on-policy posterior trajectories tau ~ q (q = p_post, or the guided sampler), with the prior's log-probability
of the same states (both start at x_0 = 0 and share the backward process, so the ratio of path densities is the
ratio of forward log-probabilities):

    log w(tau)  = log p_theta(tau) + beta log r(x) - log q(tau)
    log Z_IW    = log (1/N) sum_n exp(log w(tau_n))                   (<= log Z in expectation; = at q = p_post)
    ELBO        = mean_n log w(tau_n)

Mode masses of samples: the fraction nearest each of the 25 means. Total variation over the 25 modes:
    TV(p, q) = (1/2) sum_k |p_k - q_k|
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from workloads.samplers.metrics import log_z_reweighted


def mode_masses(modes: Tensor, num_modes: int, weights: Tensor | None = None) -> Tensor:
    """Fraction of the (weighted) samples in each mode: modes [N] int64, weights [N] (None: equal) -> [K]."""
    w = torch.ones(modes.shape, dtype=torch.float64, device=modes.device) if weights is None else weights.double()
    masses = torch.zeros(num_modes, dtype=torch.float64, device=modes.device).index_add_(0, modes, w)  # [K]
    return masses / w.sum()


def total_variation(p: Tensor, q: Tensor) -> float:
    """(1/2) sum_k |p_k - q_k| of two distributions over the same K modes, [K] each."""
    return 0.5 * (p.double() - q.double()).abs().sum().item()


@dataclass
class ExactPosterior:
    """The exact posterior p_theta r^beta / Z of a prior model, estimated from its samples (weights r^beta)."""

    log_z: float
    """log Z_MC = log mean_m r(x_m)^beta."""
    mode_masses: Tensor
    """[K] float64 mode masses of the posterior."""
    prior_mode_masses: Tensor
    """[K] float64 mode masses of the prior samples themselves."""
    mean_log_r: float
    """E_post[log r], self-normalized."""
    samples: Tensor
    """[n, D] the prior samples resampled with weights r^beta."""
    effective_sample_size: float
    """(sum w)^2 / sum w^2 of the M weights."""


def exact_posterior(
    prior_samples: Tensor,
    log_r: Tensor,
    beta: float,
    modes: Tensor,
    num_modes: int,
    num_resampled: int,
    generator: torch.Generator,
) -> ExactPosterior:
    """From M prior samples [M, D], their log r [M] and modes [M]; `num_resampled` exact posterior samples."""
    log_w = beta * log_r.double()  # [M]
    w = torch.softmax(log_w, dim=0)  # [M], self-normalized
    idx = torch.multinomial(w.float(), num_resampled, replacement=True, generator=generator)  # [n]
    return ExactPosterior(
        log_z=log_z_reweighted(log_w),
        mode_masses=mode_masses(modes, num_modes, w),
        prior_mode_masses=mode_masses(modes, num_modes),
        mean_log_r=(w * log_r.double()).sum().item(),
        samples=prior_samples[idx],
        effective_sample_size=(1.0 / (w**2).sum()).item(),
    )


def log_weights(log_p_prior: Tensor, log_q: Tensor, log_r: Tensor, beta: float) -> Tensor:
    """log w(tau) = log p_theta(tau) + beta log r(x) - log q(tau), [N]."""
    return log_p_prior + beta * log_r - log_q
