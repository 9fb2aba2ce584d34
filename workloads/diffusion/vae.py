"""A small convolutional VAE (Kingma & Welling 2013, arXiv:1312.6114) whose latent space carries a DDPM prior
(latent.py), as in latent diffusion (Rombach et al. 2022, arXiv:2112.10752).

    q_phi(z | x) = N(mu_phi(x), diag sigma_phi^2(x))       encoder: image [C, S, S] -> latent [c, s, s]
    p_theta(x | z) = N(Dec_theta(z), sigma_x^2 I)          decoder: latent -> image in [-1, 1] (tanh)
    ELBO(x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || N(0, I))

Multiplying -ELBO by 2 sigma_x^2 and dropping constants gives the loss minimized here (a beta-VAE with
beta = kl_weight = 2 sigma_x^2, one reparameterized z = mu + sigma eps per image):

    L(phi, theta) = E_x [ |x - Dec_theta(mu + sigma eps)|^2 + kl_weight KL(q_phi(z | x) || N(0, I)) ]
    KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_i (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2)

A small kl_weight keeps reconstructions sharp but leaves the latents' scale arbitrary, so (as Stable Diffusion's
0.18215) the trained VAE stores `latent_scale` = 1 / std of the posterior means over its training images:
`encode_latents` returns latent_scale * mu (element std 1 on the training images) and `decode` divides by it,
so that a DDPM's unit-variance noise x_T ~ N(0, I) matches the data's scale.

Training is deterministic in `seed` as train.py's: the initialization (a forked global RNG) and every batch and
reparameterization draw (a generator of its own) come from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workloads.data.images import load_images
from workloads.diffusion.config import VAEConfig
from workloads.diffusion.image_metrics import psnr
from workloads.diffusion.train import lr_factor


def vae_images(config: VAEConfig, split: str = "train", seed: int = 0) -> Tensor:
    """images [N, C, S, S] in [-1, 1] of the config's data set: the split's first num_images (all of val / test)."""
    num_images = config.num_images if split == "train" else None
    return load_images(config.dataset, config.image_size, split, config.data_root, num_images=num_images, seed=seed)[0]


def conv_level(in_channels: int, out_channels: int, resample: nn.Module) -> nn.Sequential:
    """resample, then two 3x3 conv-SiLU layers. No BatchNorm: an image's latent must not depend on its batch."""
    return nn.Sequential(
        resample,
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.SiLU(),
    )


class VAE(nn.Module):
    """Encoder x [B, C, S, S] -> (mu, log sigma^2) [B, c, s, s]; decoder z [B, c, s, s] -> x_hat [B, C, S, S]."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        h = config.hidden_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(config.channels, h[0], 3, padding=1),
            nn.SiLU(),
            *(conv_level(a, b, nn.AvgPool2d(2)) for a, b in zip(h[:1] + h[:-1], h, strict=True)),
            nn.Conv2d(h[-1], 2 * config.latent_channels, 1),  # mu and log sigma^2
        )
        up = h[::-1]  # lowest resolution first
        self.decoder = nn.Sequential(
            nn.Conv2d(config.latent_channels, up[0], 3, padding=1),
            nn.SiLU(),
            *(conv_level(a, b, nn.Upsample(scale_factor=2)) for a, b in zip(up, up[1:] + up[-1:], strict=True)),
            nn.Conv2d(up[-1], config.channels, 3, padding=1),
            nn.Tanh(),  # the data range [-1, 1]
        )
        self.register_buffer("latent_scale", torch.tensor(1.0))
        """1 / std of the posterior means on the training images (set by train_vae); saved in the state dict."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2), each [B, c, s, s], of q_phi(z | x)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)  # exp stays finite early in training

    def forward(self, z: Tensor) -> Tensor:
        """Dec_theta(z): unscaled latents z [B, c, s, s] -> images [B, C, S, S] in [-1, 1]."""
        return self.decoder(z)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row: [B, ...] -> [B], summed over the other dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def vae_loss(x: Tensor, x_hat: Tensor, mu: Tensor, logvar: Tensor, kl_weight: float) -> Tensor:
    """L (module docstring), a batch mean: |x - x_hat|^2 summed over pixels + kl_weight KL(N(mu, exp(logvar)) ||
    N(0, I)), for images x, x_hat [B, C, S, S] and x_hat = Dec(z) of a z ~ q(z | x) of moments mu, logvar."""
    return ((x - x_hat).pow(2).flatten(1).sum(1) + kl_weight * gaussian_kl(mu, logvar)).mean()


@dataclass
class VAEStats:
    """How well a trained VAE reconstructs held-out images from its posterior means, and its training end."""

    mse: float
    """Mean over held-out pixels of (x - Dec(mu(x)))^2, in the [-1, 1] range."""
    psnr: float
    """Mean per-image PSNR (dB, data range 2) of Dec(mu(x)) to x on the held-out images."""
    kl: float
    """Mean KL(q(z | x) || N(0, I)) (nats per image) on the held-out images."""
    latent_std: float
    """Element std of encode_latents on the held-out images (1 on the training images by construction)."""
    final_loss: float
    """L of the last training batch."""


def train_vae(
    config: VAEConfig,
    images: Tensor,
    seed: int,
    device: torch.device | str = "cpu",
    held_out: Tensor | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[VAE, VAEStats]:
    """The VAE after config.train_iters Adam steps on images [N, C, S, S] in [-1, 1], its latent_scale set from
    them, and its VAEStats on held_out (default: vae_images' val split, test for mnist and cifar10); returned in
    eval mode with requires_grad off. progress(step, loss) after each step, as train_ddpm's."""
    c = config
    expected = (c.channels, c.image_size, c.image_size)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"images are [N, {list(images.shape[1:])}], dataset={c.dataset!r} and image_size need {expected}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VAE(c).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=c.lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    images = images.to(device)
    loss = torch.tensor(math.nan)
    for step in range(c.train_iters):
        for group in optimizer.param_groups:
            group["lr"] = c.lr * lr_factor(step, c.warmup_iters, c.train_iters)
        batch = images[torch.randint(len(images), (c.batch_size,), generator=generator, device=device)]
        mu, logvar = vae.encode(batch)  # [B, c, s, s] each
        eps = torch.randn(mu.shape, generator=generator, device=device)
        x_hat = vae(mu + (0.5 * logvar).exp() * eps)  # one reparameterized z ~ q(z | x) per image
        loss = vae_loss(batch, x_hat, mu, logvar, c.kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step, loss.item())
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        mu = torch.cat([vae.encode(x)[0] for x in images.split(512)])  # [N, c, s, s]
    vae.latent_scale.fill_(1 / mu.std().item())
    if held_out is None:
        held_out = vae_images(c, "val" if c.dataset in ("digits", "color_dsprites") else "test")  # mnist: no val
    held_out = held_out.to(device)
    return vae, reconstruction_stats(vae, held_out, loss.item())


@torch.no_grad()
def reconstruction_stats(vae: VAE, images: Tensor, final_loss: float = math.nan) -> VAEStats:
    """VAEStats of the VAE on images [N, C, S, S], reconstructed from their posterior means."""
    mu, logvar = vae.encode(images)
    x_hat = vae(mu)
    return VAEStats(
        mse=(images - x_hat).pow(2).mean().item(),
        psnr=psnr(x_hat, images),
        kl=gaussian_kl(mu, logvar).mean().item(),
        latent_std=(vae.latent_scale * mu).std().item(),
        final_loss=final_loss,
    )


@torch.no_grad()
def encode_latents(vae: VAE, images: Tensor) -> Tensor:
    """latents [N, c, s, s] = latent_scale * mu_phi(x) of images [N, C, S, S]: posterior means, unit scale."""
    return vae.latent_scale * vae.encode(images)[0]


def decode(vae: VAE, latents: Tensor) -> Tensor:
    """images [N, C, S, S] in [-1, 1] = Dec(latents / latent_scale) of scaled latents [N, c, s, s] (as
    encode_latents returns, or a latent prior samples); differentiable in the latents (e.g. for guidance)."""
    return vae(latents / vae.latent_scale)
