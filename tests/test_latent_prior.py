"""The VAE (workloads/diffusion/vae.py) and the DDPM prior in its latent space (latent.py), on scikit-learn's digits
at 16 x 16 with a 4 x 4 x 4 latent, on CPU in well under a minute.

Recorded (OMP_NUM_THREADS=1, torch CPU, seed 0): SMALL_VAE reaches a held-out (val split) PSNR of 22.96 dB from
its posterior means and a held-out latent std of 0.991; the test asks PSNR > 20 dB and |std - 1| < 0.1. SMALL_PRIOR's
epsilon loss falls from 0.92 (mean of the first 10 steps) to 0.52 (last 10); the test asks a fall below 0.8 x.
"""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from workloads.diffusion.config import NOT_TRAINING_FIELDS
from workloads.diffusion.latent import (
    LatentDDPMConfig,
    latent_prior_key,
    sample_latent_prior_images,
    train_latent_prior,
)
from workloads.diffusion.vae import VAEConfig, decode, encode_latents, gaussian_kl, train_vae, vae_images, vae_loss

SMALL_VAE = VAEConfig(hidden_channels=(16, 32), batch_size=32, train_iters=400, lr=3e-3)
"""~7 s on one CPU thread."""
MIN_PSNR = 20.0
"""dB on the val split; measured 22.96."""
LATENT_STD_TOLERANCE = 0.1
SMALL_PRIOR = LatentDDPMConfig(
    block_out_channels=(16, 32), train_iters=40, batch_size=64, warmup_iters=5, lr=2e-3, sampling_steps=10
)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) digits [N, 1, 16, 16] in [-1, 1]."""
    return vae_images(SMALL_VAE, "train"), vae_images(SMALL_VAE, "val")


@pytest.fixture(scope="module")
def trained(digits):
    return train_vae(SMALL_VAE, digits[0], seed=0, held_out=digits[1])


def test_vae_reconstructs_held_out_digits(trained):
    _, stats = trained
    assert stats.psnr > MIN_PSNR, stats
    assert stats.mse == pytest.approx(4 / 10 ** (stats.psnr / 10), rel=0.5)  # PSNR averages per image, MSE pools
    assert math.isfinite(stats.kl) and stats.kl > 0


def test_same_seed_same_weights(digits):
    config = SMALL_VAE.model_copy(update={"train_iters": 5})
    first, second, other = (train_vae(config, digits[0][:256], seed, held_out=digits[1][:8])[0] for seed in (3, 3, 4))
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.decoder[0].weight, other.decoder[0].weight)


def test_kl_matches_closed_form():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 4, 3, 3, generator=generator)
    logvar = torch.randn(5, 4, 3, 3, generator=generator)
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), reference)
    assert torch.equal(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))  # q = p
    x, x_hat = torch.randn(5, 1, 4, 4, generator=generator), torch.randn(5, 1, 4, 4, generator=generator)
    assert vae_loss(x, x, torch.zeros_like(mu), torch.zeros_like(logvar), kl_weight=0.3) == 0  # the optimum
    expected = (x - x_hat).pow(2).sum() / 5 + 0.3 * reference.mean()
    torch.testing.assert_close(vae_loss(x, x_hat, mu, logvar, kl_weight=0.3), expected)


def test_latent_shapes_and_unit_scale(trained, digits):
    vae, stats = trained
    latents = encode_latents(vae, digits[1])
    assert latents.shape == (len(digits[1]), *SMALL_VAE.latent_shape) == (len(digits[1]), 4, 4, 4)
    assert abs(latents.std().item() - 1) < LATENT_STD_TOLERANCE
    assert latents.std().item() == pytest.approx(stats.latent_std)
    assert encode_latents(vae, digits[0]).std().item() == pytest.approx(1.0, abs=1e-4)  # the scale's definition
    images = decode(vae, latents[:6])
    assert images.shape == (6, 1, 16, 16) and images.abs().max() <= 1


def test_latent_prior_trains_and_decodes_to_images(trained, digits):
    vae, _ = trained
    losses = []
    unet = train_latent_prior(vae, SMALL_PRIOR, digits[0], seed=0, progress=lambda step, loss: losses.append(loss))
    assert len(losses) == SMALL_PRIOR.train_iters
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10]), (losses[:10], losses[-10:])
    images = sample_latent_prior_images(vae, unet, SMALL_PRIOR, 8, generator=0)
    assert images.shape == (8, 1, 16, 16)
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    smoke = LatentDDPMConfig().smoke()
    assert isinstance(smoke, LatentDDPMConfig) and (smoke.channels, smoke.image_size) == (4, 4)
    with pytest.raises(ValueError, match="latent_channels"):
        train_latent_prior(vae, SMALL_PRIOR.model_copy(update={"latent_channels": 8}), digits[0][:4], seed=0)


CHANGES = [
    ("vae", "dataset", "mnist"),
    ("vae", "image_size", 32),
    ("vae", "num_images", 100),
    ("vae", "hidden_channels", (16, 32)),
    ("vae", "latent_channels", 8),
    ("vae", "kl_weight", 0.1),
    ("vae", "train_iters", 10),
    ("vae", "batch_size", 8),
    ("vae", "lr", 1e-3),
    ("vae", "warmup_iters", 0),
    ("prior", "dataset", "mnist"),
    ("prior", "image_size", 8),
    ("prior", "num_images", 10),
    ("prior", "block_out_channels", (32, 64)),
    ("prior", "layers_per_block", 2),
    ("prior", "attention", False),
    ("prior", "norm_num_groups", 4),
    ("prior", "num_train_timesteps", 500),
    ("prior", "beta_schedule", "squaredcos_cap_v2"),
    ("prior", "beta_start", 2e-4),
    ("prior", "beta_end", 0.03),
    ("prior", "train_iters", 10),
    ("prior", "batch_size", 8),
    ("prior", "lr", 1e-3),
    ("prior", "warmup_iters", 0),
    ("prior", "weight_decay", 0.1),
    ("prior", "grad_clip", 2.0),
    ("prior", "pretrained", "a/unet"),
    ("prior", "latent_channels", 8),
]
"""(config, field, a value other than the default) for every field that latent_prior_key must follow."""


def test_latent_prior_key_changes_with_every_training_field():
    configs = {"vae": VAEConfig(), "prior": LatentDDPMConfig()}
    assert {field for which, field, _ in CHANGES if which == "vae"} == set(VAEConfig.model_fields) - {"data_root"}
    assert {field for which, field, _ in CHANGES if which == "prior"} == set(LatentDDPMConfig.model_fields) - set(
        NOT_TRAINING_FIELDS
    )
    base = latent_prior_key(configs["vae"], configs["prior"], 0)
    keys = {base, latent_prior_key(configs["vae"], configs["prior"], 1)}
    for which, field, value in CHANGES:
        changed = configs | {which: configs[which].model_copy(update={field: value})}
        keys.add(latent_prior_key(changed["vae"], changed["prior"], 0))
    assert len(keys) == 2 + len(CHANGES)
    untouched = {"sampling_steps": 5, "variance": "fixed_large", "clip_x0_hat": True}
    assert latent_prior_key(configs["vae"].model_copy(update={"data_root": "/data"}), configs["prior"], 0) == base
    assert latent_prior_key(configs["vae"], configs["prior"].model_copy(update=untouched), 0) == base
