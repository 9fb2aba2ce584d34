"""scikit-learn's handwritten digits (UCI optdigits test part, 1,797 images of 8 x 8, 10 classes): real images
shipped inside scikit-learn, a second image domain next to ColorDSprites.

    image = pixel / 16                          (sklearn's counts 0..16 -> [0, 1]), float32 [1, 8, 8]
    upsampled to R = 16 or 32 by bilinear interpolation (align_corners=False)

Split: stratified per class; within class c (n_c images, in sklearn's order) a permutation from
default_rng(seed) puts round(test_fraction n_c) images in test, round(val_fraction n_c) in val, the rest in train.
The splits are disjoint and cover all 1,797 images; `indices` are positions in sklearn's arrays.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import Dataset

from workloads.data.splits import Splits
from workloads.typed_config import StrictConfig

NUM_CLASSES = 10
MAX_PIXEL = 16.0
"""sklearn's digits count 0..16 set pixels of a 4 x 4 block of the 32 x 32 original."""


class DigitsConfig(StrictConfig):
    """Resolution and split of the digits."""

    resolution: Literal[8, 16, 32] = 8
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check_fractions(self) -> DigitsConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}"
            )
        return self


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float32 in [0, 1], labels [1797] int64), read once from scikit-learn's files."""
    from sklearn.datasets import load_digits  # sklearn is slow to import; only this function needs it

    digits = load_digits()
    images = (digits.images / MAX_PIXEL).astype(np.float32)
    images.flags.writeable = False
    labels = digits.target.astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> Splits[np.ndarray]:
    """Stratified disjoint index arrays (sorted) into labels (rule in the module docstring)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(test_fraction * len(members))
        n_val = round(val_fraction * len(members))
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test : n_test + n_val])
        parts[0].append(members[n_test + n_val :])
    return Splits(*(np.sort(np.concatenate(p)).astype(np.int64) for p in parts))


def upsample(images: Tensor, resolution: int) -> Tensor:
    """[N, 1, h, w] -> [N, 1, R, R] by bilinear interpolation; unchanged when already R."""
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


class DigitsDataset(Dataset):
    """Item i = (image float32 [1, R, R] in [0, 1], label int64); all images held as one tensor [N, 1, R, R]."""

    def __init__(self, indices: np.ndarray, resolution: int = 8):
        all_images, all_labels = load_digits_arrays()
        self.indices = np.asarray(indices, dtype=np.int64)
        self.images = upsample(torch.from_numpy(all_images[self.indices].copy())[:, None], resolution)  # [N, 1, R, R]
        self.labels = torch.from_numpy(all_labels[self.indices].copy())  # [N]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


def digits_splits(config: DigitsConfig | None = None) -> Splits[DigitsDataset]:
    """Train / val / test datasets of the digits (split rule in the module docstring)."""
    config = config or DigitsConfig()
    _, labels = load_digits_arrays()
    indices = split_indices(labels, config.val_fraction, config.test_fraction, config.seed)
    return Splits(*(DigitsDataset(part, config.resolution) for _, part in indices.items()))
