"""Typed configuration of the RTB workload (Relative Trajectory Balance, arXiv:2405.20971); defaults in one place.

The defaults are the reference code's 2-D toy (`rtb_diffusion/`): a prior fitted by maximum likelihood for 10k
iterations (batch 500, lr 1e-3), T = 100 steps with sigma^2 = 5 per unit time (per-step variance 0.05), a 64-wide
two-layer PIS MLP; the posterior fine-tuned for 5,000 iterations at batch 500, lr 1e-3, log Z lr 0.1, exploration
std 0.5 held for the first 500 iterations and decayed linearly to 0 at 4,500. A sweep's `config:` block may only
override fields that exist here.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from workloads.typed_config import StrictConfig

PRIOR_FIELDS = (
    "task",
    "num_steps",
    "sigma2",
    "hidden_dim",
    "time_embedding_dim",
    "num_layers",
    "prior_iters",
    "prior_batch_size",
    "prior_lr",
    "prior_seed",
)
"""The fields that determine the fitted prior (and nothing else does): the key under which a fitted prior can be
cached and shared by every trial that agrees on them (`RTBConfig.prior_key`)."""

SMOKE_MODEL = {"num_steps": 20, "prior_iters": 50, "prior_batch_size": 64, "prior_eval_samples": 2_000}
SMOKE_RUN = {"total_iters": 20, "batch_size": 64, "eval_every": 10, "eval_samples": 500, "w2_samples": 200}
"""What `smoke()` changes: a coarser, barely fitted prior and a few iterations of the posterior."""


class PosteriorReplayConfig(StrictConfig):
    """A buffer of the posterior's own samples with their log r, replayed by backward trajectories (RTB is
    off-policy, so any trajectory trains it)."""

    enabled: bool = False
    """Off in the reference's 2-D toy. On: odd iterations of rtb train on Brownian bridges to buffer states."""
    capacity: int = Field(100_000, gt=0)
    prioritization: Literal["rank", "reward", "uniform"] = "rank"
    """How buffer states are drawn: rank p(i) ~ 1 / (k |D| + rank(i)) of log r, reward p ~ r, or uniform."""
    rank_k: float = Field(0.01, gt=0)
    draw_every: int = Field(100, gt=0)
    """Iterations trained on one draw from the buffer (one round trip to the replay-buffer actor)."""


IMAGE_REPLAY = PosteriorReplayConfig(capacity=10_000, draw_every=10)
"""The image posteriors' buffer (digits and inverse problems): 10,000 samples, one draw every 10 iterations."""


class RTBConfig(StrictConfig):
    """Fine-tuning a diffusion prior p into a posterior p_post(x) ~ p(x) r(x)^beta."""

    task: Literal["toy2d"] = "toy2d"
    """The prior and constraint r: toy2d = 25-mode GMM prior, r keeping 9 of its modes (workloads/rtb/toy.py)."""
    method: Literal["rtb", "classifier_guidance", "dps", "rl", "rl_kl"] = "rtb"
    """rtb: relative trajectory balance (off-policy, learned log Z). classifier_guidance: the prior's drift plus
    scale sigma^2 i/(i+1) grad log r at the noisy state x_t (training-free). dps: the same with r evaluated at the
    estimate x1_hat = x_t + (1 - t) f_prior(x_t, t) of the clean sample, the gradient taken through f_prior
    (diffusion posterior sampling, training-free). rl: reward-only REINFORCE (DDPO-like, on-policy). rl_kl:
    KL-regularized REINFORCE with the centred advantage log r - kl_weight (log q - log p) (DPOK-like, as corrected
    in arXiv:2509.01632; on-policy)."""
    beta: float = Field(1.0, gt=0)
    """Inverse temperature of the constraint: the posterior is p r^beta (rtb, rl_kl with kl_weight None)."""

    # ---------------------------------------------------------------- diffusion model (prior and posterior)
    num_steps: int = Field(100, gt=0)
    """T: Euler-Maruyama steps on t in [0, 1] from x_0 = 0 (dt = 1 / T)."""
    sigma2: float = Field(5.0, gt=0)
    """sigma^2: diffusion coefficient squared, per unit time (per-step variance sigma^2 / T)."""
    hidden_dim: int = Field(64, gt=0)
    time_embedding_dim: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    """Hidden layers of the drift MLP after the state embedding (the reference's 2 'joint layers')."""

    # ---------------------------------------------------------------- prior fit (maximum likelihood)
    prior_iters: int = Field(10_000, ge=0)
    """Adam steps of the prior's maximum-likelihood fit on backward Brownian-bridge trajectories of exact samples."""
    prior_batch_size: int = Field(500, gt=0)
    prior_lr: float = Field(1e-3, gt=0)
    prior_seed: int = 0
    """Seed of the prior's initialization, data and bridges: one prior for every trial seed (the reference ships
    one pretrained prior), so a sweep fits it once per prior key."""

    # ---------------------------------------------------------------- posterior training
    total_iters: int = Field(5_000, gt=0)
    """Posterior training iterations (the prior fit is not counted)."""
    batch_size: int = Field(500, gt=0)
    """Trajectories per iteration."""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate of the posterior drift (a full fine-tune of a copy of the prior)."""
    log_variance_range: float = Field(0.0, ge=0)
    """c > 0: the posterior also learns its step variance sigma^2 dt exp(s(x, t)), |s| <= c per dimension, with a
    head of its own that starts at s = 0 (the prior's variance); 0: the prior's fixed variance (the reference)."""
    lr_log_z: float = Field(0.1, gt=0)
    """Adam learning rate of the scalar log Z (rtb with loss tb)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """constant (the reference), or cosine: both learning rates scaled by (1 + cos(pi s / total_iters)) / 2 at
    iteration s, to 0 at the end (less Adam noise in the final posterior)."""
    loss: Literal["tb", "vargrad"] = "tb"
    """rtb's objective: tb = relative TB with a learned log Z; vargrad = relative VarGrad, log Z replaced by the
    batch mean of log p(tau) + beta log r(x) - log p_post(tau)."""
    loss_clip: float = Field(0.0, ge=0)
    """c of the clipped loss mean relu(delta^2 - c) (0: off; the reference's image runs use 0.1)."""
    grad_steps_fraction: float = Field(1.0, gt=0, le=1)
    """Fraction of the T steps whose log p_post carries a gradient (a random subset each iteration, rescaled by
    T / |subset| so the gradient stays unbiased): bounds the memory of the backward pass. 1: all steps."""
    grad_clip: float | None = Field(None, gt=0)
    """Largest global gradient norm of a step; None: no clipping (the reference)."""
    exploration_std: float = Field(0.5, ge=0)
    """sigma_e: extra std of rtb's sampling steps (states drawn with variance sigma^2 dt + sigma_e^2; log-probs
    are those of the unmodified policy)."""
    exploration_hold_fraction: float = Field(0.1, ge=0, le=1)
    """sigma_e is held for this fraction of total_iters (the reference: 500 of 5,000) ..."""
    exploration_end_fraction: float = Field(0.9, gt=0, le=1)
    """... and is sigma_e max(0, 1 - s / (this * total_iters)) afterwards (the reference: 0 at 4,500 of 5,000)."""
    guidance_scale: float = Field(1.0, ge=0)
    """s of classifier_guidance and dps: drift f_prior + s sigma^2 i / (i + 1) grad log r (at x_t or x1_hat; the
    reference's classifier guidance: 1.0)."""
    rl_advantage: Literal["reward", "log_reward"] = "reward"
    """rl's advantage: r - mean r (the reference's fwd_rl) or log r - mean log r."""
    kl_weight: float | None = Field(None, ge=0)
    """alpha of rl_kl's advantage log r - alpha (log q - log p), whose optimum is p r^(1 / alpha); None: 1 / beta,
    the RTB posterior p r^beta."""

    replay: PosteriorReplayConfig = PosteriorReplayConfig()

    # ---------------------------------------------------------------- evaluation
    eval_every: int = Field(500, gt=0)
    """Iterations between evaluations; each evaluation is one report and checkpoint."""
    eval_samples: int = Field(10_000, gt=1)
    """N: on-policy posterior samples per evaluation (mode masses, log Z estimates, mean log r)."""
    w2_samples: int = Field(2_000, gt=1)
    """Samples of the exact optimal-assignment W2 (O(N^3)); the first ones of the N."""
    prior_eval_samples: int = Field(100_000, gt=1)
    """M: prior samples behind the exact posterior of the fitted prior (weights r^beta): its mode masses, the
    Monte Carlo log Z = log mean r^beta and the resampled posterior samples. Drawn once per learner."""

    @model_validator(mode="after")
    def _exploration_schedule(self) -> RTBConfig:
        if self.exploration_end_fraction < self.exploration_hold_fraction:
            raise ValueError(
                f"exploration_end_fraction ({self.exploration_end_fraction}) must not be below "
                f"exploration_hold_fraction ({self.exploration_hold_fraction})"
            )
        return self

    @property
    def trains(self) -> bool:
        """False for the training-free baselines (classifier_guidance, dps): no posterior network, no log Z."""
        return self.method not in ("classifier_guidance", "dps")

    @property
    def kl_alpha(self) -> float:
        """alpha of rl_kl: kl_weight if set, else 1 / beta."""
        return self.kl_weight if self.kl_weight is not None else 1.0 / self.beta

    def exploration(self, step: int) -> float:
        """sigma_e at posterior iteration `step` (rtb only; the RL methods sample on-policy)."""
        if self.method != "rtb":
            return 0.0
        if step < self.exploration_hold_fraction * self.total_iters:
            return self.exploration_std
        return self.exploration_std * max(0.0, 1.0 - step / (self.exploration_end_fraction * self.total_iters))

    def lr_factor(self, step: int) -> float:
        """The learning rates' scale at posterior iteration `step` (lr_schedule)."""
        if self.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_iters) / self.total_iters))

    def prior_key(self) -> dict:
        """The fields that determine the fitted prior (PRIOR_FIELDS) with their values."""
        return {name: getattr(self, name) for name in PRIOR_FIELDS}

    def smoke(self) -> RTBConfig:
        """The same method, tiny: a whole-stack check in seconds."""
        return self.model_copy(update=SMOKE_MODEL | SMOKE_RUN)
