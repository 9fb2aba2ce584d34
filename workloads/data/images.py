"""Image data sets of diffusion priors as one tensor each: images [N, C, H, W] float32 in [-1, 1] (2 p - 1 of pixel
values p in [0, 1]), labels [N] int64, resized to the prior's side.

    digits          scikit-learn's 8 x 8 digits (digits.py): its stratified train / val / test split; label = digit
    color_dsprites  ColorDSprites (color_dsprites.py) rendered at 16, 32 or 64; label = shape. Split: a permutation
                    of all 2,949,120 latent combinations (default_rng(seed)), its first 10 % test, next 10 % val,
                    the rest train, and the first n of the part (disjoint for any n)
    mnist           torchvision's MNIST files in root/MNIST/raw (train-images-idx3-ubyte, ...): train / test
    cifar10         the pickled batches in root/cifar-10-batches-py (data_batch_1..5, test_batch): train / test

mnist and cifar10 have no val split. Nothing is downloaded unless download=True (torchvision then fetches the
files into root, which needs internet). The CIFAR-10 batches are read here, not by torchvision's CIFAR10, whose
md5 check of every file rejects anything but the published archive.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from workloads.data.color_dsprites import NUM_COMBINATIONS, ColorDSpritesConfig, ColorDSpritesRenderer
from workloads.data.color_dsprites import latents_from_flat as dsprites_latents
from workloads.data.digits import load_digits_arrays, split_indices, upsample

DATASETS = ("digits", "color_dsprites", "mnist", "cifar10")
DSPRITES_COUNT = 4096
"""ColorDSprites images of a split when num_images is None (it has 2.9 M combinations)."""
DSPRITES_PART = NUM_COMBINATIONS // 10
"""Combinations in ColorDSprites' test part, and in its val part."""
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load_images(
    name: str,
    image_size: int,
    split: str = "train",
    root: str | Path | None = None,
    download: bool = False,
    num_images: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """(images [N, C, image_size, image_size] in [-1, 1], labels [N]): the first num_images (None: all) of a split.

    root: the folder of mnist / cifar10 (None: ./data); seed: the split of digits and color_dsprites.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown image data set {name!r}; known: {DATASETS}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    root = Path("data" if root is None else root)
    if name == "digits":
        pixels, labels = _digits(split, seed)
    elif name == "color_dsprites":
        pixels, labels = _color_dsprites(split, image_size, num_images or DSPRITES_COUNT, seed)
    else:
        if split == "val":
            raise ValueError(f"{name} has no val split: use train or test")
        pixels, labels = (_mnist if name == "mnist" else _cifar10)(split, root, download)
    if num_images is not None:
        pixels, labels = pixels[:num_images], labels[:num_images]
    return 2 * resize(pixels, image_size) - 1, labels


def resize(images: Tensor, size: int) -> Tensor:
    """[N, C, h, w] -> [N, C, size, size], bilinear: up as digits.upsample, down with antialiasing."""
    if images.shape[-1] <= size:
        return upsample(images, size)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _digits(split: str, seed: int) -> tuple[Tensor, Tensor]:
    images, labels = load_digits_arrays()
    indices = getattr(split_indices(labels, val_fraction=0.15, test_fraction=0.15, seed=seed), split)
    return torch.from_numpy(images[indices].copy())[:, None], torch.from_numpy(labels[indices].copy())


@functools.lru_cache(maxsize=1)
def _dsprites_permutation(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(NUM_COMBINATIONS)


def _color_dsprites(split: str, image_size: int, n: int, seed: int) -> tuple[Tensor, Tensor]:
    if image_size not in (16, 32, 64):
        raise ValueError(f"color_dsprites renders at 16, 32 or 64, not image_size={image_size}")
    start = {"test": 0, "val": DSPRITES_PART, "train": 2 * DSPRITES_PART}[split]
    stop = NUM_COMBINATIONS if split == "train" else start + DSPRITES_PART
    if n > stop - start:
        raise ValueError(f"color_dsprites' {split} part holds {stop - start} images, not {n}")
    latents = dsprites_latents(_dsprites_permutation(seed)[start : start + n])  # [n, 6]
    images = ColorDSpritesRenderer(ColorDSpritesConfig(resolution=image_size)).render_batch(latents)
    return images, torch.from_numpy(latents[:, 1].copy())  # label: the shape


def _missing(folder: Path, files: tuple[str, ...] | list[str], name: str) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: {folder} lacks {missing}; put the data set there in torchvision's layout "
            f"or pass download=True (needs internet)"
        )


def _mnist(split: str, root: Path, download: bool) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import MNIST  # only this data set needs torchvision's reader

    if not download:
        _missing(root / "MNIST" / "raw", MNIST_FILES, "mnist")
    data = MNIST(str(root), train=split == "train", download=download)
    return data.data[:, None].float() / 255, data.targets.long()  # [N, 1, 28, 28]


def _cifar10(split: str, root: Path, download: bool) -> tuple[Tensor, Tensor]:
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=split == "train", download=True)
    folder = root / CIFAR10_FOLDER
    _missing(folder, CIFAR10_BATCHES[split], "cifar10")
    data, labels = [], []
    for batch in CIFAR10_BATCHES[split]:
        with open(folder / batch, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # {"data": uint8 [n, 3072] (R, G, B planes), "labels": [n]}
        data.append(entry["data"])
        labels += entry["labels"]
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32)).float() / 255  # [N, 3, 32, 32]
    return images, torch.tensor(labels, dtype=torch.int64)
