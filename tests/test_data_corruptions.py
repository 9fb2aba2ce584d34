"""Corruptions at severity 1..5: stronger at 5 than at 1, deterministic in the seed, on both image domains."""

from __future__ import annotations

import pytest
import torch

from workloads.data.color_dsprites import (
    ColorDSpritesConfig,
    ColorDSpritesDataset,
    ColorDSpritesRenderer,
    sample_latents,
)
from workloads.data.corruptions import CORRUPTIONS, CorruptedDataset, corrupt, item_seed
from workloads.data.digits import DigitsConfig, digits_splits

NOISES = {"gaussian_noise", "shot_noise"}
SPRITES = ColorDSpritesRenderer(ColorDSpritesConfig(resolution=32)).render_batch(sample_latents(6, 0))  # [6, 3, 32, 32]
DIGITS = digits_splits(DigitsConfig(resolution=16)).test.images[:6]  # [6, 1, 16, 16]
DOMAINS = {"color_dsprites": SPRITES, "digits": DIGITS}


def change(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> float:
    return (corrupt(images, name, severity, seed) - images).abs().mean().item()


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_severity_5_changes_images_more_than_severity_1(name, domain):
    images = DOMAINS[domain]
    out = corrupt(images, name, 5, seed=0)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert change(images, name, 5) > change(images, name, 1) > 0


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_deterministic_in_the_seed(name):
    assert torch.equal(corrupt(SPRITES, name, 3, seed=4), corrupt(SPRITES, name, 3, seed=4))
    differs = not torch.equal(corrupt(SPRITES, name, 3, seed=4), corrupt(SPRITES, name, 3, seed=5))
    assert differs == (name in NOISES)  # only the noises draw random numbers
    # One image [C, H, W] is the batch of one.
    assert torch.equal(corrupt(SPRITES[2], name, 3, seed=4), corrupt(SPRITES[2:3], name, 3, seed=4)[0])


def test_documented_rules_on_a_constant_image():
    gray = torch.full((1, 3, 8, 8), 0.5)
    assert torch.equal(corrupt(gray, "contrast", 5), gray)  # contrast scales around the image mean
    assert torch.equal(corrupt(gray, "pixelate", 5), gray) and torch.equal(corrupt(gray, "gaussian_blur", 5), gray)
    torch.testing.assert_close(corrupt(gray, "brightness", 2), gray + 0.2)
    noise = corrupt(torch.full((1, 1, 100, 100), 0.5), "gaussian_noise", 4) - 0.5
    assert noise.std().item() == pytest.approx(0.26, rel=0.05)
    counts = corrupt(torch.full((1, 1, 100, 100), 0.2), "shot_noise", 1) * 60  # Poisson(0.2 * 60) counts
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    assert counts.mean().item() == pytest.approx(12, rel=0.02) and counts.var().item() == pytest.approx(12, rel=0.1)


def test_corrupted_dataset_noise_does_not_depend_on_reading_order():
    base = ColorDSpritesDataset(
        sample_latents(4, seed=1), labels=torch.arange(4).numpy(), config=ColorDSpritesConfig(resolution=16)
    )
    shifted = CorruptedDataset(base, "gaussian_noise", 2, seed=9)
    forward = [shifted[i][0] for i in range(4)]
    backward = [shifted[i][0] for i in reversed(range(4))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert torch.equal(forward[1], corrupt(base[1][0], "gaussian_noise", 2, item_seed(9, 1)))
    assert not torch.equal(forward[0], forward[1]) and shifted[3][1].item() == 3


def test_unknown_corruption_or_severity_is_an_error():
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(SPRITES, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(SPRITES, "contrast", 0)
    with pytest.raises(ValueError, match="severity"):
        CorruptedDataset(ColorDSpritesDataset(sample_latents(1, seed=0)), "contrast", 6)
