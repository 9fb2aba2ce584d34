"""Typed configuration of inverse problems under diffusion priors (arXiv:2503.09746); defaults in one place.

`OperatorConfig`: a measurement y = A(x) + sigma_y n of an image x [C, H, W] in [-1, 1] (operators.py), and
`operator_problem`, which says why an operator does not fit a prior's image shape (the sweep's validation calls it).

`LinearGaussianConfig`: the calibration toy (linear_gaussian.py, amortized.py): a Gaussian prior in R^d, linear
measurements, its analytic DDPM prior and the y-conditioned posterior trained with relative trajectory balance.

`ImageInverseConfig`: an operator on digits under a DDPM prior on pixels or on a VAE's latents, and the amortized
posterior p_phi(x | y) of image_posterior.py (RTB, or the DPS baseline).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from workloads.diffusion.config import DDPMConfig, LatentDDPMConfig, VAEConfig
from workloads.rtb.config import IMAGE_REPLAY, PosteriorReplayConfig
from workloads.typed_config import StrictConfig


def _positive_sigma_y(value: float) -> float:
    if not value > 0:  # also catches NaN
        raise ValueError(
            f"sigma_y must be > 0, got {value}: it is the measurement noise std, and log r_y(x) = "
            "-|y - A(x)|^2 / (2 sigma_y^2) divides by it"
        )
    return value


MeasurementStd = Annotated[float, AfterValidator(_positive_sigma_y)]
"""sigma_y: a float that must be > 0."""


class OperatorConfig(StrictConfig):
    """A measurement operator A and its noise: y = A(x) + sigma_y n, n ~ N(0, I)."""

    kind: Literal["box_inpainting", "random_inpainting", "gaussian_deblur", "fourier_magnitude"] = "box_inpainting"
    """box_inpainting: a square of pixels set to 0 (all channels). random_inpainting: a seeded set of pixels kept,
    the rest set to 0. gaussian_deblur: a per-channel convolution with a normalised Gaussian kernel.
    fourier_magnitude: |F(x)| per channel, F the orthonormal 2-D DFT (phase retrieval; non-linear)."""
    sigma_y: MeasurementStd = 0.05
    """Std of the additive measurement noise; must be > 0."""

    box_size: int = Field(4, gt=0)
    """box_inpainting: side of the masked square, in pixels."""
    box_corner: tuple[int, int] | None = None
    """box_inpainting: (row, column) of the square's top-left pixel; None = centred, at ((H - s) // 2, (W - s) // 2)."""

    keep_fraction: float = Field(0.5, gt=0, le=1)
    """random_inpainting: the fraction of the H * W pixels kept; exactly round(keep_fraction * H * W) are."""
    mask_seed: int = 0
    """random_inpainting: seed of the kept pixels (a fixed operator, the same for every image)."""

    blur_sigma: float = Field(1.0, gt=0)
    """gaussian_deblur: std of the Gaussian kernel, in pixels."""
    blur_kernel_size: int = Field(5, gt=0)
    """gaussian_deblur: side of the (odd, centred) kernel."""
    blur_padding: Literal["reflect", "zeros"] = "reflect"
    """gaussian_deblur: how the border is extended. reflect mirrors about the edge pixel without repeating it
    (torch's 'reflect', scipy.ndimage's 'mirror': d c b | a b c d | c b a); zeros pads with 0 (scipy's 'constant')."""

    @field_validator("blur_kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"blur_kernel_size must be odd (a kernel centred on its pixel), got {value}")
        return value


def operator_problem(config: OperatorConfig, image_shape: tuple[int, int, int]) -> str | None:
    """Why `config`'s operator does not fit images of shape (C, H, W), or None when it does."""
    _, height, width = image_shape
    c = config
    if c.kind == "box_inpainting":
        if c.box_size > min(height, width):
            return f"box_size={c.box_size} is larger than the {height} x {width} image"
        if c.box_corner is not None:
            row, col = c.box_corner
            if row < 0 or col < 0 or row + c.box_size > height or col + c.box_size > width:
                return (
                    f"the {c.box_size} x {c.box_size} box at box_corner={c.box_corner} does not lie inside the "
                    f"{height} x {width} image"
                )
    if c.kind == "random_inpainting" and round(c.keep_fraction * height * width) == 0:
        return f"keep_fraction={c.keep_fraction} keeps no pixel of the {height} x {width} image"
    if c.kind == "gaussian_deblur" and c.blur_padding == "reflect":
        half = c.blur_kernel_size // 2
        if half >= min(height, width):
            return (
                f"blur_kernel_size={c.blur_kernel_size} needs a reflect padding of {half} pixels, which must be "
                f"smaller than the {height} x {width} image (use a smaller kernel or blur_padding='zeros')"
            )
    return None


class LinearGaussianConfig(StrictConfig):
    """The linear-Gaussian calibration toy and its amortized RTB posterior.

    Prior x ~ N(m, S) in R^d, measurements y = A x + sigma_y n in R^n_obs; the prior diffusion model is exact
    (linear_gaussian.py), sampled in `sampling_steps` strided DDPM steps; the posterior adds a y-conditioned MLP
    correction to its noise prediction and a log Z(y) network, trained with relative trajectory balance.
    """

    # ---------------------------------------------------------------- problem
    dim: int = Field(4, ge=1)
    """d: dimension of x."""
    num_measurements: int = Field(2, ge=1)
    """n_obs: rows of A (fewer than d leaves directions only the prior informs)."""
    sigma_y: MeasurementStd = 0.5
    """Std of the measurement noise; must be > 0."""
    problem_seed: int = 0
    """Seed of m, S and A (LinearGaussianProblem.random)."""

    # ---------------------------------------------------------------- the analytic prior's DDPM chain
    num_train_timesteps: int = Field(1000, gt=1)
    """T of the linear beta schedule beta_start .. beta_end (diffusers' DDPMScheduler)."""
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)
    sampling_steps: int = Field(50, ge=2)
    """K strided reverse steps (schedule.py)."""
    variance: Literal["fixed_small", "fixed_large"] = "fixed_large"
    """The reverse steps' variance (schedule.py). With the exact eps, fixed_large's chain is the closer to N(m, S):
    2.8 % off in covariance at K = 50 on the default problem, against fixed_small's 16 % (linear_gaussian.py)."""

    # ---------------------------------------------------------------- posterior networks and RTB training
    hidden_dim: int = Field(64, gt=0)
    """Width of the eps-correction MLP and of the log Z(y) MLP."""
    batch_size: int = Field(128, gt=0)
    """Pairs (x, y) per iteration, one posterior trajectory each."""
    exploration_std: float = Field(0.0, ge=0)
    """Extra std of the training rollouts (off-policy; log-probs are scored under the policy's own variance)."""
    lr: float = Field(3e-3, gt=0)
    """Adam learning rate of the eps correction."""
    lr_log_z: float = Field(1e-2, gt=0)
    """Adam learning rate of the log Z(y) network."""
    grad_clip: float = Field(10.0, gt=0)
    """Gradient-norm clip of each step (both networks together)."""
    total_iters: int = Field(1000, gt=0)
    """S: both learning rates follow a cosine, scaled by (1 + cos(pi min(s, S) / S)) / 2 at iteration s (0 from S
    on): the log Z(y) network's noise at a constant rate is what limits log Z and the covariance otherwise."""

    # ---------------------------------------------------------------- evaluation
    eval_pairs: int = Field(200, gt=1)
    """(x*, y) pairs drawn from the joint, each with its own posterior samples."""
    eval_samples_per_pair: int = Field(256, gt=1)
    """Posterior samples per pair: their mean and covariance estimate the posterior's."""
    credible_level: float = Field(0.9, gt=0, lt=1)
    """Level of the credible ellipsoid whose coverage is measured."""

    @model_validator(mode="after")
    def _consistent(self) -> LinearGaussianConfig:
        if self.beta_end <= self.beta_start:
            raise ValueError(f"beta_end={self.beta_end} must exceed beta_start={self.beta_start}")
        if self.sampling_steps > self.num_train_timesteps:
            raise ValueError(f"sampling_steps={self.sampling_steps} exceeds num_train_timesteps")
        if self.eval_samples_per_pair <= self.dim:
            raise ValueError(f"eval_samples_per_pair={self.eval_samples_per_pair} must exceed dim={self.dim}")
        return self

    def lr_factor(self, step: int) -> float:
        """The learning rates' scale at iteration `step` (total_iters)."""
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_iters) / self.total_iters))

    def ddpm_config(self) -> DDPMConfig:
        """The schedule's fields as a DDPMConfig (its data and UNet fields are unused: the prior is analytic);
        x0_hat is never clipped, since x is not an image in [-1, 1]."""
        return DDPMConfig(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            sampling_steps=self.sampling_steps,
            variance=self.variance,
            clip_x0_hat=False,
        )


PIXEL_PRIOR = DDPMConfig(
    image_size=8, block_out_channels=(32, 64), train_iters=2000, batch_size=64, variance="fixed_large"
)
"""8 x 8 digits, a (32, 64) UNet with attention, 2,000 steps: the prior of workloads/rtb/image_config.py's
DEFAULT_PRIOR (the same prior_key, so one trained prior serves both)."""
LATENT_PRIOR = LatentDDPMConfig(variance="fixed_large")
"""A DDPM on the default VAE's 4 x 4 x 4 latents of 16 x 16 digits."""
IMAGE_SMOKE_RUN = {"total_iters": 6, "batch_size": 4, "eval_every": 3, "eval_pairs": 4, "eval_samples_per_pair": 2}
"""What `ImageInverseConfig.smoke()` changes besides the priors' own smoke(): a few iterations at a tiny batch."""
SMOKE_VAE = {"hidden_channels": (16, 32), "train_iters": 100, "batch_size": 32, "lr": 3e-3, "warmup_iters": 10}
"""The VAE of `ImageInverseConfig.smoke()`: a few seconds on one CPU thread."""


class ImageInverseConfig(StrictConfig):
    """An image inverse problem y = A(x) + sigma_y n under a DDPM prior (on pixels, or on a VAE's latents) and its
    posterior p_phi(x | y) ~ p(x) r_y(x), amortized over y and trained with relative trajectory balance, or DPS.

    image_posterior.py holds the method; defaults in one place. A sweep's `config:` block may only override fields
    that exist here.
    """

    # ---------------------------------------------------------------- the measurement
    operator: OperatorConfig = OperatorConfig()
    """A and sigma_y (operators.py); A acts on images, also under a latent prior (on the decoded image)."""

    # ---------------------------------------------------------------- the prior
    prior_space: Literal["pixel", "latent"] = "pixel"
    """pixel: a DDPM on images (`prior`). latent: a DDPM on the latents of a VAE (`vae`, `latent_prior`); the posterior
    runs in latent space and r_y is scored on the decoded image Dec(z)."""
    prior: DDPMConfig = PIXEL_PRIOR
    """The pixel prior (prior_space = pixel): data, UNet, schedule, its training and the K strided steps."""
    vae: VAEConfig = VAEConfig()
    """The VAE (prior_space = latent): its data set and image size are the problem's images."""
    latent_prior: LatentDDPMConfig = LATENT_PRIOR
    """The latent DDPM (prior_space = latent); its latent_channels and image_size must be the VAE's latent's."""
    prior_seed: int = 0
    """Seed of the prior's (and VAE's) training: one prior for every trial seed."""

    # ---------------------------------------------------------------- the method
    method: Literal["rtb", "dps"] = "rtb"
    """rtb: the amortized posterior, trained with relative trajectory balance. dps: diffusion posterior sampling
    (Chung et al. 2023) with the prior, training-free."""
    parameterization: Literal["copy", "lora"] = "lora"
    """The posterior network (workloads/rtb/image_learner.build_posterior): copy = a full fine-tune of a copy of the
    prior; lora = the frozen prior with LoRA adapters on its attention projections. Either way the measurement enters
    as extra input channels through a zero-initialised conv that trains (ClassInputConv)."""
    lora_rank: int = Field(8, gt=0)
    lora_alpha: float = Field(8.0, gt=0)
    log_z_hidden: int = Field(64, gt=0)
    """Width of the log Z_psi(y) MLP (amortized.log_z_network: two hidden layers, output layer at 0)."""

    # ---------------------------------------------------------------- RTB training
    total_iters: int = Field(1000, gt=0)
    """Posterior iterations (the prior's training is not counted)."""
    batch_size: int = Field(16, gt=0)
    """Trajectories per iteration: batch_size / samples_per_y pairs (x*, y), x* from the prior's training images."""
    samples_per_y: int = Field(1, gt=0)
    """k trajectories per y. k = 1: delta uses the learned log Z_psi(y). k > 1: the posterior's delta uses instead the
    k rows' own estimate mean_k (log r - log p_phi + log p), detached (VarGrad, a per-y baseline of far lower
    variance than an early log Z_psi), while log Z_psi(y) is fitted by the RTB loss with the posterior detached."""
    lr: float = Field(3e-3, gt=0)
    """Adam learning rate of the posterior's trainable parameters (LoRA adapters and the measurement conv; a copy
    wants far less, as image_config's `lr` says)."""
    lr_log_z: float = Field(0.03, gt=0)
    """Adam learning rate of the log Z_psi(y) network."""
    loss_clip: float = Field(0.1, ge=0)
    """c of the clipped loss mean relu(delta^2 - c) (0: the plain squared residual)."""
    grad_clip: float | None = Field(1.0, gt=0)
    """Largest global gradient norm of a step; None: no clipping."""
    exploration_std: float = Field(0.0, ge=0)
    """sigma_e: extra std of the training rollouts (drawn with variance var_j + sigma_e^2, scored under var_j)."""
    exploration_decay_fraction: float = Field(0.5, gt=0, le=1)
    """sigma_e decays linearly to 0 at this fraction of total_iters."""
    beta_start: float = Field(1.0, gt=0, le=1)
    """beta of the RTB target p(x) r_y(x)^beta at the first iteration, raised linearly to 1 at
    beta_anneal_fraction of total_iters: a tempered start when log r_y of prior samples is thousands of nats below
    the truth's. 1: the target is the posterior from the start."""
    beta_anneal_fraction: float = Field(0.5, gt=0, le=1)
    """beta reaches 1 at this fraction of total_iters."""
    guided_share: float = Field(0.0, ge=0, le=1)
    """The share of RTB iterations whose trajectories are drawn off-policy, from the posterior's chain with DPS's
    shift of each step's mean (guidance_scale), and scored under the posterior: exploration toward samples that
    agree with y, which on-policy sampling rarely reaches when log r of the posterior's samples is thousands of
    nats below the data's. 0: on-policy only."""

    # ---------------------------------------------------------------- backtracking and replay (rtb)
    backtrack_every: int = Field(0, ge=0)
    """Every this-many-th RTB iteration trains on backtracking pairs (objectives.backtracking_pair_loss) instead of
    forward trajectories; 0: never. Each pair starts from a chain end z with its own y: a replayed posterior sample
    when `train` is given replay rows (the replay-buffer actor, `replay.enabled`), else a fresh training pair's own
    x* (its latent Enc(x*) under a latent prior), a sample of p(x | y) wherever the prior fits the data."""
    backtrack_steps: int | None = Field(None, ge=1)
    """k: the start is noised k strided levels back by q and re-denoised k levels by the posterior; None: the whole
    chain (k = K, the noising chain from x_K)."""
    replay: PosteriorReplayConfig = IMAGE_REPLAY
    """The replay-buffer actor (in a sweep): the posterior's samples with their y and log r_y, the starts of the
    backtracking iterations once it holds any (backtrack_every > 0)."""

    # ---------------------------------------------------------------- DPS
    guidance_scale: float = Field(1.0, ge=0)
    """zeta' of DPS's step (dps; and rtb's guided iterations, guided_share): the reverse mean moves by
    -zeta' grad_{x_j} |y - A(x0_hat)|^2 / |y - A(x0_hat)|."""

    # ---------------------------------------------------------------- evaluation
    eval_every: int = Field(100, gt=0)
    """Iterations between evaluations (a driver's; the learner evaluates when asked)."""
    eval_pairs: int = Field(32, gt=0)
    """P held-out pairs (x*, y): the first P images of the data set's test split, y drawn with `eval_seed`."""
    eval_samples_per_pair: int = Field(8, gt=1)
    """n posterior samples per y: their mean is the posterior-mean reconstruction."""
    eval_seed: int = 0
    """Seed of the held-out measurements' noise: every learner (any seed, any method) sees the same pairs."""

    @model_validator(mode="after")
    def _consistent(self) -> ImageInverseConfig:
        problem = operator_problem(self.operator, self.image_shape)
        if problem is not None:
            raise ValueError(f"operator: {problem}")
        if self.prior_space == "latent":
            latent = (self.latent_prior.latent_channels, self.latent_prior.image_size, self.latent_prior.image_size)
            if latent != self.vae.latent_shape:
                raise ValueError(
                    f"latent_prior models latents {latent}, but the VAE's are {self.vae.latent_shape}: set "
                    "latent_prior.latent_channels and image_size to them"
                )
        if self.batch_size % self.samples_per_y:
            raise ValueError(f"samples_per_y={self.samples_per_y} must divide batch_size={self.batch_size}")
        if (self.backtrack_steps or 0) > self.diffusion.sampling_steps:
            raise ValueError(
                f"backtrack_steps={self.backtrack_steps} exceeds the prior's sampling_steps="
                f"{self.diffusion.sampling_steps}"
            )
        if self.replay.enabled and not self.backtrack_every:
            raise ValueError("replay.enabled needs backtrack_every > 0: replayed samples are backtracked from")
        return self

    @property
    def diffusion(self) -> DDPMConfig:
        """The DDPM whose chain the posterior runs: `prior`, or `latent_prior` under a latent prior."""
        return self.latent_prior if self.prior_space == "latent" else self.prior

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images that A measures."""
        c = self.vae if self.prior_space == "latent" else self.prior
        return (c.channels, c.image_size, c.image_size)

    def exploration(self, step: int) -> float:
        """sigma_e at posterior iteration `step` (rtb only)."""
        decay = max(0.0, 1.0 - step / (self.exploration_decay_fraction * self.total_iters))
        return self.exploration_std * decay if self.method == "rtb" else 0.0

    def beta(self, step: int) -> float:
        """beta of the RTB target at iteration `step` (beta_start, beta_anneal_fraction)."""
        progress = min(1.0, step / (self.beta_anneal_fraction * self.total_iters))
        return self.beta_start + (1.0 - self.beta_start) * progress

    @property
    def backtrack_levels(self) -> int:
        """k of backtracking: backtrack_steps, or the whole chain."""
        return self.backtrack_steps or self.diffusion.sampling_steps

    def backtracks(self, step: int) -> bool:
        """Whether RTB iteration `step` trains on backtracking pairs (every backtrack_every-th)."""
        return self.backtrack_every > 0 and step % self.backtrack_every == self.backtrack_every - 1

    def guided(self, step: int) -> bool:
        """Whether RTB iteration `step` samples with DPS's guidance: guided_share of the iterations, spread evenly."""
        return math.floor((step + 1) * self.guided_share) > math.floor(step * self.guided_share)

    def smoke(self) -> ImageInverseConfig:
        """The same problem and method, tiny: the priors' smoke() (8 x 8 pixels, or a small VAE on 16 x 16 digits
        with a (16, 32) latent UNet), a few iterations at batch 4, 4 evaluation pairs of 2 samples."""
        prior, latent_prior = self.prior.smoke(), self.latent_prior.smoke()
        steps = (latent_prior if self.prior_space == "latent" else prior).sampling_steps
        update = IMAGE_SMOKE_RUN | {
            "prior": prior,
            "latent_prior": latent_prior,
            "vae": self.vae.model_dump() | SMOKE_VAE,
            "backtrack_steps": None if self.backtrack_steps is None else min(self.backtrack_steps, steps),
        }
        return ImageInverseConfig.model_validate(self.model_dump() | update)
