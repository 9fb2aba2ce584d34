"""A DDPM prior in a VAE's latent space (latent diffusion, Rombach et al. 2022, arXiv:2112.10752): images are
x = Dec(z) with z ~ p_theta(z) the DDPM's samples, so that an inverse problem y = A(Dec(z)) + sigma_y n can be
posed over z. Training-free guidance (DPS) is biased there; RTB fine-tuning of p_theta(z) is not.

    z_0 = latent_scale * mu_phi(x)                  the data of the prior: scaled posterior means (vae.py)
    L(theta) = E |eps - eps_theta(sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps, t)|^2     train.py's train_ddpm
    x = Dec(z_0 / latent_scale),  z_0 ~ p_theta    sample_latent_prior_images

The DDPM machinery (DDPM, build_unet, train_ddpm) reads the sample's channels from `config.channels`, which a
DDPMConfig ties to its data set; LatentDDPMConfig makes them the latent's, and is otherwise a DDPMConfig whose
"image" is the latent [c, s, s] (its data fields dataset, num_images and data_root are unused: the data is the
VAE's, VAEConfig).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import torch
from torch import Tensor, nn

from workloads.diffusion.config import VAE_NOT_TRAINING_FIELDS, LatentDDPMConfig, VAEConfig
from workloads.diffusion.ddpm import DDPM
from workloads.diffusion.train import prior_key, train_ddpm
from workloads.diffusion.vae import VAE, VAEStats, decode, encode_latents, train_vae, vae_images

LATENT_PRIOR_FORMAT = 1
"""Part of `latent_prior_key`: raise it when a change to vae.py's training or this file's makes a cached pair stale."""


def train_latent_prior(
    vae: VAE,
    config: LatentDDPMConfig,
    images: Tensor,
    seed: int,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """eps_theta of train_ddpm on encode_latents(vae, images [N, C, S, S]); eval mode, frozen.
    progress(step, loss) after each step, as train_ddpm's."""
    vae = vae.to(device)
    latents = encode_latents(vae, images.to(device))  # [N, c, s, s]
    if tuple(latents.shape[1:]) != (config.channels, config.image_size, config.image_size):
        raise ValueError(
            f"the VAE's latents are [N, {list(latents.shape[1:])}]: set latent_channels and image_size to them, "
            f"not {config.latent_channels} and {config.image_size}"
        )
    return train_ddpm(config, latents, seed, progress, device)


@torch.no_grad()
def sample_latent_prior_images(
    vae: VAE, unet: nn.Module, config: LatentDDPMConfig, n: int, generator: torch.Generator | int
) -> Tensor:
    """images [n, C, S, S] in [-1, 1] = Dec(z_0) of n latents z_0 [n, c, s, s] of the DDPM's strided sampler."""
    latents = DDPM(config).sample(unet, n, generator).x0  # [n, c, s, s]
    return decode(vae, latents)


def fit_vae_and_latent_prior(
    vae_config: VAEConfig,
    ddpm_config: LatentDDPMConfig,
    seed: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[VAE, VAEStats, nn.Module]:
    """(VAE, its held-out VAEStats, eps_theta): both trained from `seed` on the VAE config's train split (of the
    fixed split seed 0, as train.py's training_images), the pair that latent_prior_key(vae_config, ddpm_config,
    seed) names. progress(step, loss) after each step of both, counted on: the prior's steps follow the VAE's."""
    images = vae_images(vae_config, "train")
    vae, stats = train_vae(vae_config, images, seed, device, progress=progress)
    offset = vae_config.train_iters
    prior_progress = None if progress is None else (lambda step, loss: progress(offset + step, loss))
    return vae, stats, train_latent_prior(vae, ddpm_config, images, seed, device=device, progress=prior_progress)


def latent_prior_key(vae_config: VAEConfig, ddpm_config: LatentDDPMConfig, seed: int) -> str:
    """sha256 (hex) of the canonical JSON of what determines fit_vae_and_latent_prior's pair: the VAE config's
    fields but its NOT_TRAINING_FIELDS, train.py's prior_key of the latent prior (with the seed) and
    LATENT_PRIOR_FORMAT."""
    vae_fields = {k: v for k, v in vae_config.model_dump(mode="json").items() if k not in VAE_NOT_TRAINING_FIELDS}
    payload = {"vae": vae_fields, "prior": prior_key(ddpm_config, seed), "format": LATENT_PRIOR_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
