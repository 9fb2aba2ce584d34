"""scikit-learn digits: deterministic, stratified, disjoint splits; images as float tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from workloads.data.digits import DigitsConfig, digits_splits

SPLITS = digits_splits()


def test_splits_are_disjoint_cover_everything_and_are_stratified():
    parts = [part.indices for _, part in SPLITS.items()]
    everything = np.concatenate(parts)
    assert len(everything) == 1797 and len(np.unique(everything)) == 1797
    for (name, part), fraction in zip(SPLITS.items(), (0.7, 0.15, 0.15)):
        counts = np.bincount(part.labels.numpy(), minlength=10)
        assert counts.min() > 0, name
        # Per class round(fraction n_c): the class shares of every split match the whole set's.
        assert np.abs(counts - fraction * np.bincount(load_digits().target)).max() <= 1.0, name


def test_same_seed_same_split_other_seed_other_split():
    again = digits_splits(DigitsConfig(seed=0))
    other = digits_splits(DigitsConfig(seed=1))
    np.testing.assert_array_equal(again.test.indices, SPLITS.test.indices)
    assert torch.equal(again.train.images, SPLITS.train.images)
    assert not np.array_equal(other.test.indices, SPLITS.test.indices)


def test_images_are_the_shipped_pixels_over_16():
    digits = load_digits()
    image, label = SPLITS.val[5]
    index = SPLITS.val.indices[5]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    np.testing.assert_array_equal(image[0].numpy(), (digits.images[index] / 16).astype(np.float32))
    assert label.item() == digits.target[index]
    assert 0 <= SPLITS.train.images.min() and SPLITS.train.images.max() == 1


@pytest.mark.parametrize("resolution", [16, 32])
def test_upsampling_keeps_the_digit(resolution):
    big = digits_splits(DigitsConfig(resolution=resolution)).test
    assert big.images.shape == (len(SPLITS.test), 1, resolution, resolution)
    # Bilinear upsampling keeps each image's mean brightness and the labels.
    torch.testing.assert_close(
        big.images.mean(dim=(1, 2, 3)), SPLITS.test.images.mean(dim=(1, 2, 3)), atol=0.02, rtol=0
    )
    assert torch.equal(big.labels, SPLITS.test.labels)


def test_fractions_must_leave_a_training_set():
    with pytest.raises(ValueError, match="must be < 1"):
        DigitsConfig(val_fraction=0.5, test_fraction=0.5)
