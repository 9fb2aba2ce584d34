"""Typed configuration of the diffusion-sampler workload (arXiv:2402.05098); defaults in one place.

A sweep file's `config:` block may only override fields that exist here (unknown keys are errors).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from workloads.typed_config import StrictConfig


class ReplayConfig(StrictConfig):
    """Replay buffer of terminal states and local search (MALA) on it."""

    enabled: bool = False
    """Train odd iterations on backward trajectories from buffer states (paper: '+ LS')."""
    capacity: int = Field(600_000, gt=0)
    prioritization: Literal["rank", "reward", "uniform"] = "rank"
    rank_k: float = Field(0.01, gt=0)
    """Rank prioritization p(i) ~ 1 / (k |D| + rank(i))."""
    local_search_every: int = Field(100, gt=0)
    """Iterations between local-search rounds."""
    local_search_batch: int = Field(300, gt=0)
    mala_steps: int = Field(200, gt=0)
    mala_burn_in: int = Field(100, ge=0)
    mala_step_size: float = Field(0.01, gt=0)
    mala_target_acceptance: float = Field(0.574, gt=0, lt=1)


class SamplerConfig(StrictConfig):
    """Forward-SDE diffusion sampler trained towards an unnormalized target density."""

    target: Literal["gmm25"] = "gmm25"
    num_steps: int = Field(100, gt=0)
    """T: discretization steps of the SDE on t in [0, 1]."""
    sigma2: float = Field(5.0, gt=0)
    """sigma^2: diffusion coefficient squared (5 for 25GMM)."""
    hidden_dim: int = Field(64, gt=0)
    time_embedding_dim: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    loss: Literal["tb", "vargrad"] = "tb"
    batch_size: int = Field(300, gt=0)
    lr_policy: float = Field(1e-3, gt=0)
    lr_log_z: float = Field(1e-1, gt=0)
    grad_clip: float = Field(100.0, gt=0)
    exploration_factor: float = Field(0.2, ge=0)
    """Extra std added to the sampling policy (off-policy); decays linearly to 0."""
    exploration_decay_fraction: float = Field(0.5, gt=0, le=1)
    """Fraction of total_iters over which the exploration std decays to 0."""
    total_iters: int = Field(5_000, gt=0)
    eval_every: int = Field(500, gt=0)
    """Iterations between evaluations; each evaluation is one Tune report and checkpoint."""
    eval_samples: int = Field(2_000, gt=1)
    replay: ReplayConfig = ReplayConfig()

    def smoke(self) -> "SamplerConfig":
        """A few iterations of the same model: a whole-stack check in seconds."""
        return self.model_copy(
            update=dict(total_iters=40, eval_every=20, eval_samples=200, batch_size=64, num_steps=20),
        )
