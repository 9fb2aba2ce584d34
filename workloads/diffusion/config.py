"""Typed configuration of a DDPM image prior (Ho et al. 2020, arXiv:2006.11239); defaults in one place.

The defaults are a small prior on scikit-learn's digits upsampled to 16 x 16: a two-level UNet (32, 64 channels,
attention at the 8 x 8 level and in the middle block), 1000 training timesteps of a linear beta schedule
1e-4 .. 0.02, sampled in 20 strided steps. A family's config embeds it as a sub-model (`prior: DDPMConfig`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from workloads.typed_config import StrictConfig

DATASET_CHANNELS = {"digits": 1, "mnist": 1, "color_dsprites": 3, "cifar10": 3}
"""Image channels of each data set (workloads/data/images.py)."""
DSPRITES_SIZES = (16, 32, 64)
"""ColorDSprites renders at 64 and block-averages to these sides only."""
NOT_TRAINING_FIELDS = ("sampling_steps", "variance", "clip_x0_hat", "data_root")
"""Fields that do not change the trained prior (how it is sampled, where the data is read from): left out of
`prior_key`, so that priors differing only in them share one cache entry."""


class DDPMConfig(StrictConfig):
    """A DDPM prior: its data, UNet, noise schedule, training and strided sampling."""

    # ---------------------------------------------------------------- data
    dataset: Literal["digits", "color_dsprites", "mnist", "cifar10"] = "digits"
    """Training images (workloads/data/images.py): digits (scikit-learn, 8 x 8, 1 channel), color_dsprites
    (procedural, 3 channels), mnist (1 channel) and cifar10 (3 channels) read from `data_root`."""
    image_size: int = Field(16, ge=4)
    """Side of the images the prior models; the data set is resized to it (digits: bilinear up from 8)."""
    num_images: int | None = Field(None, gt=0)
    """Training images: the first this many of the train split; None = all of it (color_dsprites: 4,096)."""
    data_root: str | None = None
    """Folder of mnist / cifar10 in torchvision's on-disk layout; None = ./data. Unused by digits, color_dsprites."""

    # ---------------------------------------------------------------- UNet (diffusers UNet2DModel)
    block_out_channels: tuple[int, ...] = (32, 64)
    """Channels per resolution level, highest resolution first; each further level halves the side."""
    layers_per_block: int = Field(1, gt=0)
    """ResNet blocks per level (down path; the up path has one more, as in diffusers)."""
    attention: bool = True
    """Self-attention in the lowest-resolution level and the middle block: the LoRA targets to_q/to_k/to_v/to_out.0
    exist only with it."""
    norm_num_groups: int = Field(8, gt=0)
    """GroupNorm groups; must divide every entry of block_out_channels."""

    # ---------------------------------------------------------------- noise schedule
    num_train_timesteps: int = Field(1000, gt=1)
    """T: the discrete forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), t = 0 .. T - 1."""
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "linear"
    """beta_t (diffusers' DDPMScheduler): linear from beta_start to beta_end, or the cosine schedule of
    Nichol & Dhariwal 2021 (beta_start / beta_end unused)."""
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)

    # ---------------------------------------------------------------- training (epsilon prediction)
    train_iters: int = Field(4000, ge=0)
    """AdamW steps of the epsilon-prediction loss (0 keeps the initial or pretrained UNet)."""
    batch_size: int = Field(64, gt=0)
    lr: float = Field(5e-4, gt=0)
    """Peak learning rate, reached after warmup_iters and decayed to 0 by a cosine."""
    warmup_iters: int = Field(100, ge=0)
    """Linear warm-up of the learning rate from 0."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW's decoupled weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clip per step."""

    # ---------------------------------------------------------------- strided sampling
    sampling_steps: int = Field(20, ge=2)
    """K: reverse steps through the timesteps t_K = T - 1 > .. > t_1 = 0 (evenly spaced), then to x_0."""
    variance: Literal["fixed_small", "fixed_large"] = "fixed_small"
    """Reverse variance of a strided step: fixed_small = the posterior variance of q(x_{t_{k-1}} | x_{t_k}, x_0),
    fixed_large = 1 - abar_{t_k} / abar_{t_{k-1}}. The last step (to x_0) takes 1 - abar_{t_1} either way."""
    clip_x0_hat: bool = True
    """Clamp the predicted x_0 to the data range [-1, 1] before the posterior mean (diffusers' clip_sample)."""

    # ---------------------------------------------------------------- optional hub weights
    pretrained: str | None = None
    """A Hugging Face hub id (or local folder) of a diffusers UNet2DModel, loaded with `from_pretrained` instead
    of building from the fields above: needs internet (or the hub cache). Its schedule must be this config's."""

    @field_validator("block_out_channels")
    @classmethod
    def _positive_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) <= 0:
            raise ValueError(f"block_out_channels must be positive channel counts, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DDPMConfig:
        bad_groups = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad_groups:
            raise ValueError(
                f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels entry, not {bad_groups}"
            )
        halvings = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size % halvings:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by {halvings} "
                f"(block_out_channels has {len(self.block_out_channels)} levels)"
            )
        if self.dataset == "color_dsprites" and self.image_size not in DSPRITES_SIZES:
            raise ValueError(f"image_size={self.image_size} is not one of {DSPRITES_SIZES} for color_dsprites")
        if self.sampling_steps > self.num_train_timesteps:
            raise ValueError(
                f"sampling_steps={self.sampling_steps} must not exceed num_train_timesteps={self.num_train_timesteps}"
            )
        if self.beta_schedule == "linear" and self.beta_end <= self.beta_start:
            raise ValueError(f"beta_end={self.beta_end} must exceed beta_start={self.beta_start}")
        return self

    @property
    def channels(self) -> int:
        """C: image channels, fixed by the data set."""
        return DATASET_CHANNELS[self.dataset]

    def smoke(self) -> DDPMConfig:
        """The same prior made tiny: 8 x 8 images, a (16, 32) UNet, 30 training steps, 10 sampling steps."""
        size = 16 if self.dataset == "color_dsprites" else 8
        tiny = {
            "image_size": size,
            "num_images": min(self.num_images or 256, 256),
            "block_out_channels": (16, 32),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "train_iters": 30,
            "batch_size": 16,
            "warmup_iters": 5,
            "sampling_steps": 10,
        }
        return DDPMConfig.model_validate(self.model_dump() | tiny)  # validated, unlike model_copy(update=)


VAE_NOT_TRAINING_FIELDS = ("data_root",)
"""Fields that do not change the trained VAE: left out of latent.py's `latent_prior_key`."""


class VAEConfig(StrictConfig):
    """The VAE's data, shape, objective and training; the latent is [latent_channels, latent_size, latent_size]."""

    # ---------------------------------------------------------------- data (workloads/data/images.py)
    dataset: Literal["digits", "color_dsprites", "mnist", "cifar10"] = "digits"
    """Images the VAE encodes: as DDPMConfig.dataset."""
    image_size: int = Field(16, ge=4)
    """S: side of the images (digits: bilinear up from 8)."""
    num_images: int | None = Field(None, gt=0)
    """Training images: the first this many of the train split; None = all of it (digits: 1,257)."""
    data_root: str | None = None
    """Folder of mnist / cifar10 (None = ./data); unused by digits, color_dsprites."""

    # ---------------------------------------------------------------- shape
    hidden_channels: tuple[int, ...] = (32, 64)
    """Encoder channels per level; each level halves the side, so s = S / 2^len(hidden_channels)."""
    latent_channels: int = Field(4, gt=0)
    """c: channels of the latent."""

    # ---------------------------------------------------------------- objective and training
    kl_weight: float = Field(0.01, ge=0)
    """beta = 2 sigma_x^2 in L (module docstring): the weight of the KL term against the summed squared error."""
    train_iters: int = Field(3000, ge=0)
    """Adam steps on L."""
    batch_size: int = Field(64, gt=0)
    lr: float = Field(2e-3, gt=0)
    """Peak learning rate, reached after warmup_iters and decayed to 0 by a cosine (train.py's lr_factor)."""
    warmup_iters: int = Field(50, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> VAEConfig:
        if not self.hidden_channels or min(self.hidden_channels) <= 0:
            raise ValueError(f"hidden_channels must be positive channel counts, got {self.hidden_channels}")
        if self.image_size % 2 ** len(self.hidden_channels):
            raise ValueError(
                f"image_size={self.image_size} must be divisible by 2^{len(self.hidden_channels)} "
                f"(hidden_channels has {len(self.hidden_channels)} levels)"
            )
        return self

    @property
    def channels(self) -> int:
        """C: image channels, fixed by the data set."""
        return DATASET_CHANNELS[self.dataset]

    @property
    def latent_size(self) -> int:
        """s: side of the latent."""
        return self.image_size // 2 ** len(self.hidden_channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, s, s)."""
        return (self.latent_channels, self.latent_size, self.latent_size)


class LatentDDPMConfig(DDPMConfig):
    """A DDPM prior on latents [latent_channels, image_size, image_size]; the defaults fit VAEConfig's 4 x 4 x 4."""

    latent_channels: int = Field(4, gt=0)
    """c: the VAE's VAEConfig.latent_channels."""
    image_size: int = Field(4, ge=1)
    """s: the VAE's VAEConfig.latent_size."""
    block_out_channels: tuple[int, ...] = (64, 128)
    """Two levels: 4 x 4, then 2 x 2 with attention."""
    clip_x0_hat: bool = False
    """Latents are not in [-1, 1]: clamping x0_hat there would bias every reverse step."""

    @property
    def channels(self) -> int:
        """c: channels of the latent, not of the data set."""
        return self.latent_channels

    def smoke(self) -> LatentDDPMConfig:
        """The same latent prior made tiny: a (16, 32) UNet, 30 training steps, 10 sampling steps."""
        tiny_run = {"train_iters": 30, "batch_size": 16, "warmup_iters": 5, "sampling_steps": 10}
        return LatentDDPMConfig.model_validate(self.model_dump() | tiny_run | {"block_out_channels": (16, 32)})


class ClassifierConfig(StrictConfig):
    """Architecture and training of the classifier; its data (dataset, image_size) is the prior's (DDPMConfig)."""

    architecture: Literal["resnet20", "convnet", "mlp", "vit"] = "convnet"
    """One of image_models.ARCHITECTURES."""
    epochs: int = Field(10, ge=0)
    """Passes over the train part, in shuffled minibatches."""
    batch_size: int = Field(64, gt=0)
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate, decayed to 0 by a cosine over all steps (no warm-up)."""
    weight_decay: float = Field(1e-4, ge=0)
    """AdamW's decoupled weight decay."""
    heldout_fraction: float = Field(0.15, gt=0, lt=1)
    """Images held out of training (a seeded random subset) to score the accuracy."""
