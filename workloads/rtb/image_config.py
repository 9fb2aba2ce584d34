"""Typed configuration of RTB on images (Relative Trajectory Balance, arXiv:2405.20971): fine-tuning a DDPM
prior p on scikit-learn digits into class-conditional posteriors p_post(x | c) ~ p(x) r(x, c)^beta; defaults in one
place.

The prior defaults to 8 x 8 digits (the data set's own size), a (32, 64) UNet with attention (the LoRA targets), 2,000
AdamW steps at batch 64 (about 5 min on one CPU thread) and K = 20 strided sampling steps with the `fixed_large`
reverse variance, as the reference forces: with `fixed_small`, the step to t_1 = 0 has std 0.01 while its mean moves
by 0.16 eps, so its score term (x - mean) / var d mean / d phi, and with it RTB's gradient, is ~16 times noisier
than any other step's (measured: LoRA reached mean log r -3.1 in 600 iterations with fixed_small, -1.8 in 300 with
fixed_large; docs/rtb.md). The posterior defaults
follow the reference's `inverse_diffusion/` where they fit a CPU: LoRA on the attention projections, the loss
clipped at c = 0.1, log Z lr 0.1, no exploration; the batch and the rank are smaller. A sweep's `config:` block may
only override fields that exist here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from workloads.diffusion.config import DDPMConfig
from workloads.rtb.config import IMAGE_REPLAY, PosteriorReplayConfig
from workloads.typed_config import StrictConfig

DEFAULT_PRIOR = DDPMConfig(
    image_size=8, block_out_channels=(32, 64), train_iters=2000, batch_size=64, variance="fixed_large"
)
"""8 x 8 digits (no upsampling), 0.70 M parameters, 2,000 steps: 150 ms a step at batch 64 on one thread."""
NUM_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "color_dsprites": 3}
"""Classes of each data set's labels (workloads/data/images.py): the classifier reward's digits / classes."""

SMOKE_RUN = {"total_iters": 6, "batch_size": 4, "eval_every": 3, "eval_samples": 4, "prior_eval_samples": 32}
"""What `smoke()` changes besides the prior's own smoke(): a few iterations at a tiny batch."""


class ImagePosteriorConfig(StrictConfig):
    """A DDPM prior on images and its fine-tuning into p_post(x | c) ~ p(x) r(x, c)^beta for each target class c."""

    # ---------------------------------------------------------------- prior
    prior: DDPMConfig = DEFAULT_PRIOR
    """The DDPM prior: data, UNet, schedule, its training and the K strided sampling steps shared by the posterior."""
    prior_seed: int = 0
    """Seed of the prior's training: one prior for every trial seed, cached under its `prior_key`."""

    # ---------------------------------------------------------------- the posterior and its constraint
    reward: Literal["classifier", "mean_intensity"] = "classifier"
    """log r(x, c): classifier = log p_phi(c | x) of a classifier of the prior's training images, trained on first
    use (workloads/diffusion/classifier.py; c = 10 / 11: the even / odd digits; or pass `reward=` to the learner);
    mean_intensity = the analytic -(mean pixel - level_c)^2 / (2 s^2) of image_learner.MeanIntensityReward."""
    targets: tuple[int, ...] = (0,)
    """Classes c with a posterior each: 0 .. K - 1 the data set's classes, K the even ones, K + 1 the odd ones
    (classifier reward; K = NUM_CLASSES); 0 .. 10 for mean_intensity. One target: an unconditional posterior for
    it (the reference trains one model per class). Several: one posterior conditioned on the target's one-hot code,
    given as extra input channels."""
    method: Literal["rtb", "rl", "rl_kl", "classifier_guidance", "dps"] = "rtb"
    """rtb: relative trajectory balance (off-policy, learned log Z(c)). rl: reward-only REINFORCE (DDPO-like).
    rl_kl: REINFORCE with the centred advantage log r - alpha (log q - log p) (DPOK-like, as corrected by
    arXiv:2509.01632). classifier_guidance and dps: the prior with a guided reverse mean, training-free."""
    beta: float = Field(1.0, gt=0)
    """Inverse temperature: the posterior is p r^beta."""
    parameterization: Literal["copy", "lora"] = "lora"
    """The posterior network: copy = a full fine-tune of a copy of the prior; lora = the frozen prior with peft LoRA
    adapters on its attention projections (diffusion/unet.py LORA_TARGETS), B = 0 at the start."""
    lora_rank: int = Field(8, gt=0)
    """r of the adapters W + (alpha / r) B A (the reference: 32)."""
    lora_alpha: float = Field(8.0, gt=0)
    """alpha of the adapters' scale alpha / r (the reference: alpha = r)."""
    reward_guidance: bool = False
    """The posterior's reverse mean adds lambda_j (1 - a_j) / sqrt(a_j) grad log r(x0_hat, c), the gradient taken at
    its own x0_hat (detached: an input, as the Langevin drift of the samplers' family) with one learned lambda_j per
    level, 0 at the start (the prior); the reference's `--langevin`, which is a no-op there. RTB's optimum is still
    the exact posterior: the gradient is a feature, not a bias."""
    learned_variance: bool = False
    """The posterior also learns one log-scale s_j per level j of its reverse variance, var_j exp(s_j) (s = 0 at
    the start: the prior's variance); False: the prior's fixed variance (the reference)."""

    # ---------------------------------------------------------------- training
    total_iters: int = Field(1000, gt=0)
    """Posterior iterations (the prior's training is not counted)."""
    batch_size: int = Field(16, gt=0)
    """Trajectories per iteration; row b is for target b mod len(targets)."""
    lr: float = Field(3e-3, gt=0)
    """Adam learning rate of the posterior's trainable parameters (the reference README: 6e-4 with LoRA rank 32).
    A copy wants far less (the reference's default 1e-5): the last reverse step's variance is beta_0 = 1e-4, so a
    small change of eps there is a large change of log p_post, and 5e-5 already diverged here."""
    lr_log_z: float = Field(0.1, gt=0)
    """Adam learning rate of log Z(c) (rtb)."""
    loss_clip: float = Field(0.1, ge=0)
    """c of the clipped loss mean relu(delta^2 - c) (the reference: 0.1; 0: the plain squared residual)."""
    grad_clip: float | None = Field(1.0, gt=0)
    """Largest global gradient norm of a step; None: no clipping."""
    grad_steps_fraction: float = Field(1.0, gt=0, le=1)
    """Fraction of the K steps whose log p_post carries a gradient (a random subset each iteration, rescaled by
    K / |subset|, so the gradient stays unbiased and the value is the full sum). 1: all steps."""
    exploration_std: float = Field(0.0, ge=0)
    """sigma_e: extra std of rtb's sampling steps (drawn with variance var_j + sigma_e^2, scored under var_j)."""
    exploration_decay_fraction: float = Field(0.5, gt=0, le=1)
    """sigma_e decays linearly to 0 at this fraction of total_iters."""
    rl_advantage: Literal["reward", "log_reward"] = "log_reward"
    """rl's advantage: log r - mean log r, or r - mean r (the reference's exp(log r))."""
    kl_weight: float | None = Field(None, ge=0)
    """alpha of rl_kl, whose optimum is p r^(1 / alpha); None: 1 / beta, the RTB posterior."""

    # ---------------------------------------------------------------- replay with backtracking (rtb)
    backtrack_steps: int = Field(5, ge=1)
    """k: a replayed x_0 is noised k strided levels back by q and re-denoised k levels by the posterior; both partial
    trajectories share their start state, whose unknown marginal ratio cancels in their difference."""
    replay_every: int = Field(2, ge=1)
    """When `train` is given replay samples, every this-many-th iteration trains on backtracking pairs of them."""

    # ---------------------------------------------------------------- training-free guidance
    guidance_scale: float = Field(1.0, ge=0)
    """s of classifier_guidance and dps: the reverse mean moves by s (1 - a_j) / sqrt(a_j) g, g the gradient in x_j of
    log r(x_j, c) (CG) or of log r(x0_hat(x_j), c) (DPS)."""

    # ---------------------------------------------------------------- evaluation
    eval_every: int = Field(100, gt=0)
    """Iterations between evaluations; each evaluation is one report and checkpoint."""
    eval_samples: int = Field(64, gt=1)
    """On-policy posterior samples per target and evaluation."""
    prior_eval_samples: int = Field(512, gt=1)
    """M prior samples behind the Monte Carlo log Z(c) = log mean_m r(x_m, c)^beta; drawn once per learner."""

    # ---------------------------------------------------------------- the replay-buffer actor (rtb, in a sweep)
    replay: PosteriorReplayConfig = IMAGE_REPLAY
    """A buffer of the posterior's own samples (the replay-buffer actor of the rtb family), backtracked from every
    replay_every-th iteration of a sub-chunk of draw_every iterations."""

    @field_validator("targets")
    @classmethod
    def _classes_of_the_reward(cls, targets: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if "prior" not in info.data or "reward" not in info.data:  # their own errors are reported instead
            return targets
        most = NUM_CLASSES[info.data["prior"].dataset] + 1 if info.data["reward"] == "classifier" else 10
        if not targets or len(set(targets)) != len(targets) or min(targets) < 0 or max(targets) > most:
            sets = f" ({most - 1}: the even classes, {most}: the odd)" if info.data["reward"] == "classifier" else ""
            raise ValueError(
                f"distinct classes 0 .. {most} of reward {info.data['reward']} on {info.data['prior'].dataset}{sets}"
            )
        return targets

    @model_validator(mode="after")
    def _consistent(self) -> ImagePosteriorConfig:
        if self.backtrack_steps > self.prior.sampling_steps:
            raise ValueError(
                f"backtrack_steps={self.backtrack_steps} exceeds the prior's sampling_steps={self.prior.sampling_steps}"
            )
        return self

    @property
    def conditional(self) -> bool:
        """One posterior for several targets, told c by one-hot input channels."""
        return len(self.targets) > 1

    @property
    def trains(self) -> bool:
        """Whether the method fine-tunes a posterior (the guidance methods sample the prior)."""
        return self.method in ("rtb", "rl", "rl_kl")

    def exploration(self, step: int) -> float:
        """sigma_e at posterior iteration `step`: rtb's only (the RL methods sample on-policy)."""
        decay = max(0.0, 1.0 - step / (self.exploration_decay_fraction * self.total_iters))
        return self.exploration_std * decay if self.method == "rtb" else 0.0

    def smoke(self) -> ImagePosteriorConfig:
        """The same method, tiny: the prior's smoke() (8 x 8, a (16, 32) UNet, 30 steps, K = 10), k <= 3."""
        update = SMOKE_RUN | {"prior": self.prior.smoke(), "backtrack_steps": min(self.backtrack_steps, 3)}
        return ImagePosteriorConfig.model_validate(self.model_dump() | update)
