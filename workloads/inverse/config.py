"""Typed configuration of inverse problems under diffusion priors (arXiv:2503.09746); defaults in one place.

`OperatorConfig`: a measurement y = A(x) + sigma_y n of an image x [C, H, W] in [-1, 1] (operators.py), and
`operator_problem`, which says why an operator does not fit a prior's image shape (the sweep's validation calls it).

`LinearGaussianConfig`: the calibration toy (linear_gaussian.py, amortized.py): a Gaussian prior in R^d, linear
measurements, its analytic DDPM prior and the y-conditioned posterior trained with relative trajectory balance.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from workloads.diffusion.config import DDPMConfig
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
