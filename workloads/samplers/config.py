"""Typed configuration of the diffusion-sampler workload (arXiv:2402.05098); defaults in one place.

A sweep file's `config:` block may only override fields that exist here (unknown keys are errors).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from workloads.typed_config import StrictConfig


class ReplayConfig(StrictConfig):
    """Replay buffer of terminal states and local search (MALA) on it."""

    enabled: bool = False
    """Train on backward trajectories from buffer states (paper: '+ LS'), on the iterations `share` says."""
    share: float | None = Field(None, gt=0, lt=1)
    """None: every odd iteration replays (arXiv:2402.05098). A value: each iteration replays with this
    probability (arXiv:2502.06999's code: 0.1-0.2), drawn from (seed, step) so a resumed run draws the same."""
    capacity: int = Field(600_000, gt=0)
    prioritization: Literal["rank", "reward", "uniform"] = "rank"
    rank_k: float = Field(0.01, gt=0)
    """Rank prioritization p(i) ~ 1 / (k |D| + rank(i)); the paper's k is 0.01. A smaller k favours high log R more,
    and with it a target's heavier modes (tests/test_samplers_replay.py). Local search draws its start states and
    replay its training states so, and without LP Manywell's lighter modes fade over training at 0.01
    (docs/samplers.md)."""
    local_search_every: int = Field(100, gt=0)
    """Iterations between local-search rounds."""
    local_search_batch: int = Field(300, gt=0)
    mala_steps: int = Field(200, gt=0)
    mala_burn_in: int = Field(100, ge=0)
    mala_step_size: float = Field(0.01, gt=0)
    mala_target_acceptance: float = Field(0.574, gt=0, lt=1)
    searched_states: Literal["accepted", "final"] = "accepted"
    """What a round puts in the searched buffer: every proposal accepted after burn-in (the reference's
    `langevin_dynamics`, ~17,000 states a round at the defaults), or only the chains' final states (B a round).
    The two compared: docs/samplers.md."""


SIGMA2_BY_TARGET: dict[str, float] = {"gmm25": 5.0, "gmm40": 5.0, "funnel": 1.0, "manywell": 1.0}
"""Default sigma^2 per target, as in arXiv:2402.05098 (5 for the Gaussian mixtures, 1 for Funnel and Manywell)."""
EXPLORATION_BY_TARGET: dict[str, tuple[float, float]] = {
    "gmm25": (0.2, 0.5),
    "gmm40": (0.2, 0.5),
    "funnel": (0.1, 0.2),
    "manywell": (0.1, 0.2),
}
"""Default (exploration factor, decay fraction) per target for the off-policy losses. The sigma^2 = 1 targets as the
reference's Manywell TB + Expl. + LS command (factor 0.1, decayed over 5,000 of 25,000 iterations): a policy step's
std is then only 0.1, and 0.2 of extra std widens the first forward batches to x ~ N(0, 5 I) (Manywell: log R ~
-700) against replayed local-search states of high log R; the learned log Z, pulled both ways, stalls or drifts and
the sampler does not learn while it explores (docs/samplers.md, "Exploration")."""


class SamplerConfig(StrictConfig):
    """Forward-SDE diffusion sampler trained towards an unnormalized target density."""

    target: Literal["gmm25", "gmm40", "funnel", "manywell"] = "gmm25"
    """Key of `workloads.samplers.targets.TARGETS`."""
    num_steps: int = Field(100, gt=0)
    """T: discretization steps of the SDE on t in [0, 1]."""
    sigma2: float | None = Field(None, gt=0)
    """sigma^2: diffusion coefficient squared; None: the target's default. Read it as `diffusion_sigma2`."""
    hidden_dim: int = Field(64, gt=0)
    time_embedding_dim: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    loss: Literal["tb", "vargrad", "subtb", "fl_subtb", "pis"] = "tb"
    """Training objective (arXiv:2402.05098, Sec. 2-3): tb (trajectory balance, learned log Z), vargrad
    (TB with the batch estimate of log Z), subtb (lambda-weighted subtrajectory balance with a learned
    flow log F(x, t)), fl_subtb (SubTB with the forward-looking flow (1 - t) log p_ref + t log R + log F~),
    pis (reparameterized KL through the SDE; on-policy: no exploration, no replay)."""
    subtb_lambda: float = Field(2.0, gt=0)
    """lambda of (FL-)SubTB: subtrajectory i -> j weighs lambda^{j-i} (lambda > 1 favours long ones)."""
    langevin: bool = False
    """Langevin parameterization (LP): drift = NN1(x, t) + NN2(t) * clip(grad log R(x), -100, 100)."""
    log_variance_range: float = Field(0.0, ge=0)
    """c > 0: the policy also learns its step variance sigma^2 dt exp(s(x, t)), |s| <= c per dimension
    (workloads/samplers/policy.py); 0: the fixed sigma^2 dt (the paper's)."""
    reference_share: float = Field(0.0, ge=0, lt=1)
    """Probability that an iteration which does not replay trains on trajectories of the reference process (the
    Brownian motion from 0, terminal N(0, sigma^2 I), rolled back by the bridge) instead of the policy's; drawn as
    `replay.share`. arXiv:2502.06999's code uses 0.2-0.4 in noise space, where that process ends in the prior."""
    batch_size: int = Field(300, gt=0)
    lr_policy: float = Field(1e-3, gt=0)
    lr_log_z: float = Field(1e-1, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """constant (the reference), or cosine: both learning rates scaled by (1 + cos(pi s / total_iters)) / 2 at
    iteration s, to 0 at the end, so the final sampler is not one draw of Adam's noise."""
    grad_clip: float | None = Field(100.0, gt=0)
    """Largest global gradient norm of an Adam step (larger gradients are scaled down to it); None: no clipping,
    as the reference code. Manywell without LP runs at norms of 500-3,000 for most of training, so 100 rescales
    nearly every step there."""
    exploration_factor: float | None = Field(None, ge=0)
    """Extra std added to the sampling policy (off-policy); decays linearly to 0. None: the target's default
    (EXPLORATION_BY_TARGET), 0 for pis. Read it as `exploration`."""
    exploration_decay_fraction: float | None = Field(None, gt=0, le=1)
    """Fraction of total_iters over which the exploration std decays to 0; None: the target's default. Read it as
    `exploration_decay`."""
    total_iters: int = Field(5_000, gt=0)
    eval_every: int = Field(500, gt=0)
    """Iterations between evaluations; each evaluation is one Tune report and checkpoint."""
    eval_samples: int = Field(2_000, gt=1)
    """N: forward samples and exact target samples per evaluation."""
    log_z_eval_samples: int | None = Field(None, gt=1)
    """Forward samples of the log Z estimates (eval/elbo, eval/log_z_rw, eval/delta_log_z, eval/delta_log_z_rw) when
    more than N; None: N. The reference evaluates log Z on 10,000: on 2,000 the RW estimate varies too much from
    one draw to the next for the issue's checks (docs/samplers.md). W2, W1 and the figures keep the first N."""
    eval_backward_trajectories: int = Field(10, gt=0)
    """K: backward trajectories per exact sample in the importance-sampled log-likelihood of the sampler
    (eval/exact_log_likelihood) and in the EUBO; 10 as the reference code's `mean_log_likelihood`. Costs
    N K backward trajectories per evaluation (no gradient)."""
    replay: ReplayConfig = ReplayConfig()

    @model_validator(mode="after")
    def _pis_is_on_policy(self) -> SamplerConfig:
        """PIS differentiates through states sampled from the policy itself: off-policy data has no
        pathwise gradient."""
        if self.loss != "pis":
            return self
        conflicts = []
        if self.exploration_factor:
            conflicts.append(f"exploration_factor={self.exploration_factor}")
        if self.replay.enabled:
            conflicts.append("replay.enabled=true")
        if conflicts:
            raise ValueError(
                f"loss='pis' is on-policy, which conflicts with {' and '.join(conflicts)}: set "
                "exploration_factor=0 and replay.enabled=false, or use an off-policy loss "
                "(tb, vargrad, subtb, fl_subtb)"
            )
        return self

    @property
    def diffusion_sigma2(self) -> float:
        """sigma^2 in use: `sigma2` if set, else SIGMA2_BY_TARGET[target].

        Resolved on every read rather than stored by a validator: the orchestrator re-validates a dumped
        config with a sampled `target`, and a stored default would keep the base target's sigma^2."""
        return self.sigma2 if self.sigma2 is not None else SIGMA2_BY_TARGET[self.target]

    @property
    def exploration(self) -> float:
        """The exploration factor in use: `exploration_factor` if set, else the target's default (0 for pis)."""
        if self.exploration_factor is not None:
            return self.exploration_factor
        return 0.0 if self.loss == "pis" else EXPLORATION_BY_TARGET[self.target][0]

    @property
    def exploration_decay(self) -> float:
        """The decay fraction in use: `exploration_decay_fraction` if set, else the target's default."""
        if self.exploration_decay_fraction is not None:
            return self.exploration_decay_fraction
        return EXPLORATION_BY_TARGET[self.target][1]

    def lr_factor(self, step: int) -> float:
        """The learning rates' scale at iteration `step` (lr_schedule)."""
        if self.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_iters) / self.total_iters))

    def smoke(self) -> SamplerConfig:
        """A few iterations of the same model: a whole-stack check in seconds."""
        return self.model_copy(
            update={
                "total_iters": 40,
                "eval_every": 20,
                "eval_samples": 200,
                "log_z_eval_samples": None,
                "batch_size": 64,
                "num_steps": 20,
            },
        )
