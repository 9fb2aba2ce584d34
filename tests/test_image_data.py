"""Image data of diffusion priors (workloads/data/images.py): tiny MNIST and CIFAR-10 folders written here in
torchvision's on-disk formats read back pixel for pixel; digits and ColorDSprites shapes, ranges and splits."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from workloads.data.digits import load_digits_arrays
from workloads.data.images import CIFAR10_BATCHES, CIFAR10_FOLDER, load_images


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx-ubyte format: magic 0x0000 08 (uint8) ndim, the sizes as big-endian int32, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    parts = {}
    for split, prefix, n in (("train", "train", 5), ("test", "t10k", 3)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        parts[split] = images, labels
    return parts


def write_cifar10(root: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pickled dicts {"data": uint8 [n, 3072] (R, G, B planes of 32 x 32), "labels": [n]}, as in the archive."""
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    parts = {}
    for split, batches in CIFAR10_BATCHES.items():
        data, labels = [], []
        for batch in batches:
            batch_data, batch_labels = rng.integers(0, 256, (2, 3072)).astype(np.uint8), rng.integers(0, 10, 2)
            with open(folder / batch, "wb") as f:
                pickle.dump({"data": batch_data, "labels": batch_labels.tolist()}, f)
            data.append(batch_data)
            labels.append(batch_labels)
        parts[split] = np.concatenate(data).reshape(-1, 3, 32, 32), np.concatenate(labels)
    return parts


def test_mnist_files_are_read_pixel_for_pixel(tmp_path):
    parts = write_mnist(tmp_path, np.random.default_rng(0))
    for split, (pixels, labels) in parts.items():
        images, got_labels = load_images("mnist", 28, split, root=tmp_path)
        assert images.shape == (len(pixels), 1, 28, 28) and images.dtype == torch.float32
        np.testing.assert_allclose(images[:, 0].numpy(), 2 * pixels / 255 - 1, atol=1e-6)
        np.testing.assert_array_equal(got_labels.numpy(), labels)
    small, _ = load_images("mnist", 16, "train", root=tmp_path, num_images=2)
    assert small.shape == (2, 1, 16, 16) and -1 <= small.min() and small.max() <= 1


def test_cifar10_batches_are_read_pixel_for_pixel(tmp_path):
    parts = write_cifar10(tmp_path, np.random.default_rng(1))
    for split, (pixels, labels) in parts.items():
        images, got_labels = load_images("cifar10", 32, split, root=tmp_path)
        assert images.shape == (len(pixels), 3, 32, 32)
        np.testing.assert_allclose(images.numpy(), pixels / 127.5 - 1, atol=1e-6)  # not 2 * uint8
        np.testing.assert_array_equal(got_labels.numpy(), labels)
    assert load_images("cifar10", 16, "train", root=tmp_path)[0].shape == (10, 3, 16, 16)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", CIFAR10_FOLDER)])
def test_a_missing_folder_is_named_and_nothing_is_downloaded(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / folder)):
        load_images(name, 32, "train", root=tmp_path)
    with pytest.raises(ValueError, match="no val split"):
        load_images(name, 32, "val", root=tmp_path)


def test_digits_splits_shapes_and_range():
    sizes = {}
    for split in ("train", "val", "test"):
        images, labels = load_images("digits", 8, split)
        assert images.shape == (len(labels), 1, 8, 8) and labels.dtype == torch.int64
        assert images.min() == -1 and images.max() == 1
        sizes[split] = len(labels)
    assert sum(sizes.values()) == 1797 and sizes["test"] == pytest.approx(0.15 * 1797, abs=10)
    # 8 x 8 is sklearn's pixels / 16 mapped to [-1, 1]: every value a multiple of 1/8 - 1.
    images, _ = load_images("digits", 8, "train")
    all_pixels, _ = load_digits_arrays()
    assert torch.equal(torch.round((images + 1) * 8), (images + 1) * 8)
    assert images.mean().item() == pytest.approx(2 * all_pixels.mean() - 1, abs=0.02)
    big, _ = load_images("digits", 16, "train", num_images=10)
    assert big.shape == (10, 1, 16, 16) and -1 <= big.min() and big.max() <= 1
    torch.testing.assert_close(big.mean((2, 3)), images[:10].mean((2, 3)), atol=0.03, rtol=0)


def test_color_dsprites_splits_are_rendered_deterministically():
    train, train_labels = load_images("color_dsprites", 16, "train", num_images=8)
    again, _ = load_images("color_dsprites", 16, "train", num_images=8)
    test, _ = load_images("color_dsprites", 16, "test", num_images=8)
    assert train.shape == (8, 3, 16, 16) and torch.equal(train, again) and not torch.equal(train, test)
    assert train.min() == -1 and train.max() <= 1 and set(train_labels.tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match="image_size=8"):
        load_images("color_dsprites", 8, "train", num_images=8)
