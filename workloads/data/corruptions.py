"""Covariate-shift OOD: ImageNet-C-like corruptions (Hendrycks & Dietterich, arXiv:1903.12261) of small images.

Images are float tensors in [0, 1], [C, H, W] or [N, C, H, W]; every corruption returns the same shape, clipped
to [0, 1]. Severity s in 1..5 picks column s of the table (ImageNet-C's values, except the blur, whose sigma is
CIFAR-10-C's for 32 x 32 images scaled by H / 32 so that a severity means the same at every resolution):

    name            rule                                        parameter at s = 1, 2, 3, 4, 5
    gaussian_noise  x + sigma eps, eps ~ N(0, 1)                sigma   0.08, 0.12, 0.18, 0.26, 0.38
    shot_noise      Poisson(lambda x) / lambda                  lambda  60, 25, 12, 5, 3
    gaussian_blur   separable Gaussian, sigma (H / 32) px,      sigma   0.4, 0.6, 0.7, 0.8, 1.0 (at H = 32)
                    kernel radius ceil(3 sigma), edges replicated
    contrast        (x - m) c + m, m = mean of the image        c       0.4, 0.3, 0.2, 0.1, 0.05
    pixelate        area-average to round(f H) px, nearest back f       0.6, 0.5, 0.4, 0.3, 0.25
    brightness      x + b, on every channel                     b       0.1, 0.2, 0.3, 0.4, 0.5

(ImageNet-C adds brightness to the HSV value instead; on our black backgrounds both lift the background.)
The noises draw from torch.Generator().manual_seed(seed) on the CPU: the same seed gives the same images;
the others ignore the seed. `CorruptedDataset` seeds item i from (seed, i), so an item's noise does not depend
on the order it is read in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

GAUSSIAN_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_NOISE_LAMBDA = (60.0, 25.0, 12.0, 5.0, 3.0)
GAUSSIAN_BLUR_SIGMA_AT_32 = (0.4, 0.6, 0.7, 0.8, 1.0)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)


def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return (x + GAUSSIAN_NOISE_SIGMA[severity - 1] * eps).clamp(0, 1)


def shot_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    rate = SHOT_NOISE_LAMBDA[severity - 1]
    counts = torch.poisson(x.detach().cpu() * rate, generator=generator).to(x.device, x.dtype)
    return (counts / rate).clamp(0, 1)


def gaussian_blur(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    sigma = GAUSSIAN_BLUR_SIGMA_AT_32[severity - 1] * x.shape[-1] / 32
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # [2r + 1]
    channels = x.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)  # [C, 1, 2r + 1, 1]
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)  # [C, 1, 1, 2r + 1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels).clamp(0, 1)


def contrast(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    return ((x - mean) * CONTRAST_FACTOR[severity - 1] + mean).clamp(0, 1)


def pixelate(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    height, width = x.shape[-2:]
    factor = PIXELATE_FACTOR[severity - 1]
    small = (max(1, round(factor * height)), max(1, round(factor * width)))
    return F.interpolate(F.interpolate(x, size=small, mode="area"), size=(height, width), mode="nearest")


def brightness(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    return (x + BRIGHTNESS_SHIFT[severity - 1]).clamp(0, 1)


CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "pixelate": pixelate,
    "brightness": brightness,
}
"""Name -> f(images [N, C, H, W], severity, generator) -> corrupted images [N, C, H, W]."""


def check_corruption(name: str, severity: int) -> None:
    """A clear error for an unknown corruption or a severity outside 1..5."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1, 2, 3, 4 or 5, got {severity}")


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """Corruption `name` at severity 1..5 of images [C, H, W] or [N, C, H, W] in [0, 1]."""
    check_corruption(name, severity)
    if images.dim() not in (3, 4):
        raise ValueError(f"images must be [C, H, W] or [N, C, H, W], got shape {tuple(images.shape)}")
    batch = images if images.dim() == 4 else images[None]
    out = CORRUPTIONS[name](batch, severity, torch.Generator().manual_seed(seed))
    return out if images.dim() == 4 else out[0]


def item_seed(seed: int, index: int) -> int:
    """A seed for item `index` of a data set corrupted with `seed`, independent of the order of reading."""
    return int(np.random.SeedSequence((seed, index)).generate_state(1, dtype=np.uint64)[0] >> 1)


class CorruptedDataset(Dataset):
    """base[i] = (image, label) -> (corrupt(image, name, severity, item_seed(seed, i)), label)."""

    def __init__(self, base: Dataset, name: str, severity: int, seed: int = 0):
        check_corruption(name, severity)
        self.base, self.name, self.severity, self.seed = base, name, severity, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, label = self.base[i]
        return corrupt(image, self.name, self.severity, item_seed(self.seed, i)), label
