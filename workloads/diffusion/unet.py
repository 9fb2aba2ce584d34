"""The noise predictor eps_theta([x_t, y], t): a diffusers UNet2DModel built from a DDPMConfig (never from the hub
unless `pretrained` is set).

Input channels C + E: the image x_t and E optional conditioning channels y (e.g. a measurement of an inverse
problem, resized to the image) concatenated to it; output channels C (the predicted noise). With
`config.attention` the lowest-resolution level and the middle block carry self-attention, whose projections
`LORA_TARGETS` are what a LoRA fine-tune wraps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from workloads.diffusion.config import DDPMConfig

if TYPE_CHECKING:
    from diffusers import UNet2DModel

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""Module names of the attention projections (peft's `LoraConfig(target_modules=...)`)."""


def build_unet(config: DDPMConfig, extra_in_channels: int = 0) -> UNet2DModel:
    """A fresh UNet of the config's shape (initialized from the global torch RNG: seed it, or fork it, first)."""
    # imported here: diffusers costs ~5 s to import, and a process that builds no UNet never needs it
    from diffusers import UNet2DModel

    levels = len(config.block_out_channels)
    lowest_down, lowest_up = ("AttnDownBlock2D", "AttnUpBlock2D") if config.attention else ("DownBlock2D", "UpBlock2D")
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=config.channels + extra_in_channels,
        out_channels=config.channels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * (levels - 1) + (lowest_down,),  # highest resolution first
        up_block_types=(lowest_up,) + ("UpBlock2D",) * (levels - 1),  # lowest resolution first
        add_attention=config.attention,  # the middle block's attention
        norm_num_groups=config.norm_num_groups,
    )


def load_pretrained_unet(config: DDPMConfig, extra_in_channels: int = 0) -> UNet2DModel:
    """`UNet2DModel.from_pretrained(config.pretrained)`: needs internet or the hub cache (or a local folder)."""
    from diffusers import UNet2DModel

    model = UNet2DModel.from_pretrained(config.pretrained)
    found = (model.config.in_channels, model.config.out_channels, model.config.sample_size)
    expected = (config.channels + extra_in_channels, config.channels, config.image_size)
    if found != expected:
        raise ValueError(
            f"pretrained={config.pretrained!r} has (in_channels, out_channels, sample_size) = {found}, but dataset="
            f"{config.dataset!r}, image_size={config.image_size} and {extra_in_channels} extra channels need {expected}"
        )
    return model


def make_unet(config: DDPMConfig, extra_in_channels: int = 0) -> nn.Module:
    """The hub's UNet when `config.pretrained` is set, else a fresh one of the config's shape."""
    if config.pretrained is not None:
        return load_pretrained_unet(config, extra_in_channels)
    return build_unet(config, extra_in_channels)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
