"""ColorDSprites: dSprites (Matthey et al. 2017) in 4 colors, rendered on demand from its latent indices.

Latents, in dSprites' order (the last varies fastest in a flat index), with dSprites' value conventions:

    index  name         size  values
    0      color          4   red (1, 0, 0), green (0, 1, 0), blue (0, 0, 1), white (1, 1, 1)
    1      shape          3   square, ellipse, heart
    2      scale          6   linspace(0.5, 1, 6)
    3      orientation   40   linspace(0, 2 pi, 40) radians; the first and last are the same angle (as in dSprites)
    4      pos_x         32   linspace(0, 1, 32)
    5      pos_y         32   linspace(0, 1, 32)

4 * 3 * 6 * 40 * 32 * 32 = 2,949,120 combinations; none is ever materialized as a whole.

Geometry, in pixels of the 64 x 64 canvas (x = column, to the right; y = row, downward; pixel (i, j) covers
[j, j + 1] x [i, i + 1]):

    center     c = 64 (MARGIN + pos (1 - 2 MARGIN)),  MARGIN = 0.25   -> centers in [16, 48], 32/31 px a step
    half-size  s = 64 BASE_HALF_SIZE scale,            BASE_HALF_SIZE = 0.16 -> s in [5.12, 10.24] px
    local      (u, v) = (x - c_x, c_y - y)             (v points up on screen)
               (a, b) = R(-theta) (u, v) / s           (orientation theta turns the shape counterclockwise)

and a point is inside when, in local coordinates (a, b):

    square   max(|a|, |b|) <= 1                                  side 2 s, area 4 s^2
    ellipse  a^2 + (2 b)^2 <= 1                                  semi-axes s and s / 2, area pi s^2 / 2
    heart    (X^2 + Y^2 - 1)^3 - X^2 Y^3 <= 0,  X = 1.14 a,  Y = 1.14 b + 0.12
             (the classic implicit heart, lobes up, point down; 1.14 makes its width 2 s like the square's,
             0.12 centers its bounding box; it reaches at most 1.18 s from the center)

Each shape stays inside the canvas at every position (the rotated square reaches sqrt(2) s <= 14.5 px).
A pixel's coverage is the fraction of its S x S sub-pixel centers ((k + 1/2) / S) inside the shape; the image is
coverage times the color on a black background, values in [0, 1]. A lower resolution R (32, 16) is the mean of
(64 / R)^2 blocks of the 64 x 64 coverage, i.e. S (64 / R) sub-samples a pixel.

Same image on every machine: the rendering uses only IEEE-754 +, -, *, / and comparisons in float64 (cubes
written as products, no vectorized transcendental functions, whose SIMD implementations differ between CPUs);
cos and sin of the 40 angles come from Python's libm and are rounded to 12 decimals, so a last-bit difference
between libms cannot move a sub-pixel across the boundary. Coverage is a count, stored exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import Dataset

from workloads.typed_config import StrictConfig

CANVAS = 64
MARGIN = 0.25
"""Fraction of the canvas kept free on each side of the range of shape centers."""
BASE_HALF_SIZE = 0.16
"""Half-size (fraction of the canvas) of a shape at scale 1."""
HEART_WIDTH_FACTOR = 1.14
"""The implicit heart spans |X| <= 1.138: X = 1.14 a gives it the square's width."""
HEART_Y_SHIFT = 0.12
"""The implicit heart spans Y in [-1, 1.236]: shifting by 0.12 centers its bounding box."""

LATENT_NAMES = ("color", "shape", "scale", "orientation", "pos_x", "pos_y")
LATENT_SIZES = (4, 3, 6, 40, 32, 32)
NUM_COMBINATIONS = math.prod(LATENT_SIZES)
COLOR_NAMES = ("red", "green", "blue", "white")
SHAPE_NAMES = ("square", "ellipse", "heart")
COLORS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=np.float32)  # [4, 3]


def _linspace(start: float, stop: float, num: int) -> np.ndarray:
    """start + (stop - start) i / (num - 1): np.linspace's values (to the last bit or so), by a fixed formula."""
    return start + (stop - start) * np.arange(num) / (num - 1)


LATENT_VALUES: dict[str, np.ndarray] = {
    "color": np.arange(4),
    "shape": np.arange(3),
    "scale": _linspace(0.5, 1.0, 6),
    "orientation": _linspace(0.0, 2 * math.pi, 40),
    "pos_x": _linspace(0.0, 1.0, 32),
    "pos_y": _linspace(0.0, 1.0, 32),
}
"""Physical value of each latent index (colors and shapes: the index itself)."""

# Rounded so that a last-bit difference between libms cannot change a rendered pixel (see the module docstring).
_COS = tuple(round(math.cos(float(t)), 12) for t in LATENT_VALUES["orientation"])
_SIN = tuple(round(math.sin(float(t)), 12) for t in LATENT_VALUES["orientation"])


def latent_index(name: str) -> int:
    """Column of latent `name` in a latent array [N, 6]."""
    if name not in LATENT_NAMES:
        raise ValueError(f"unknown latent {name!r}; known: {LATENT_NAMES}")
    return LATENT_NAMES.index(name)


def flat_index(latents: np.ndarray) -> np.ndarray:
    """Mixed-radix index in [0, NUM_COMBINATIONS) of latent rows [N, 6] (pos_y fastest, as in dSprites)."""
    latents = check_latents(latents)
    return np.ravel_multi_index(tuple(latents.T), LATENT_SIZES).astype(np.int64)


def latents_from_flat(flat: np.ndarray) -> np.ndarray:
    """Inverse of `flat_index`: [N] -> [N, 6] int64."""
    return np.stack(np.unravel_index(np.asarray(flat, dtype=np.int64), LATENT_SIZES), axis=1).astype(np.int64)


def check_latents(latents: np.ndarray) -> np.ndarray:
    """Latent rows as int64 [N, 6]; a value outside its latent's range is an error naming the latent."""
    latents = np.asarray(latents)
    if latents.ndim != 2 or latents.shape[1] != len(LATENT_NAMES):
        raise ValueError(f"latents must have shape [N, {len(LATENT_NAMES)}] ({LATENT_NAMES}), got {latents.shape}")
    latents = latents.astype(np.int64)
    for column, (name, size) in enumerate(zip(LATENT_NAMES, LATENT_SIZES)):
        bad = (latents[:, column] < 0) | (latents[:, column] >= size)
        if bad.any():
            raise ValueError(f"latent {name} must lie in [0, {size}), got {latents[bad, column][:5].tolist()}")
    return latents


def sample_latents(n: int, seed: int) -> np.ndarray:
    """n distinct latent rows [n, 6], uniform over all combinations, without replacement."""
    if not 0 <= n <= NUM_COMBINATIONS:
        raise ValueError(f"cannot draw {n} distinct latents out of {NUM_COMBINATIONS}")
    return latents_from_flat(np.random.default_rng(seed).choice(NUM_COMBINATIONS, size=n, replace=False))


def inside_shape(shape: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean mask of local coordinates (a, b) (units of the half-size s) inside shape `shape` (rules above)."""
    if shape == 0:  # square
        return np.maximum(np.abs(a), np.abs(b)) <= 1.0
    if shape == 1:  # ellipse
        return a * a + 4.0 * b * b <= 1.0
    if shape == 2:  # heart
        x = HEART_WIDTH_FACTOR * a
        y = HEART_WIDTH_FACTOR * b + HEART_Y_SHIFT
        r = x * x + y * y - 1.0
        return r * r * r - x * x * y * y * y <= 0.0
    raise ValueError(f"shape must be 0, 1 or 2 ({SHAPE_NAMES}), got {shape}")


def coverage_counts(shape: int, scale: int, orientation: int, pos_x: int, pos_y: int, supersample: int) -> np.ndarray:
    """Sub-pixel hit counts [64, 64] (uint16, in [0, S^2]) of one shape on the canvas; color plays no part.

    Only the window around the shape (radius 1.5 s + 1 px, beyond sqrt(2) s) is evaluated: the rest is empty.
    """
    s = CANVAS * BASE_HALF_SIZE * float(LATENT_VALUES["scale"][scale])
    c_x = CANVAS * (MARGIN + (1.0 - 2.0 * MARGIN) * float(LATENT_VALUES["pos_x"][pos_x]))
    c_y = CANVAS * (MARGIN + (1.0 - 2.0 * MARGIN) * float(LATENT_VALUES["pos_y"][pos_y]))
    reach = 1.5 * s + 1.0
    cols = np.arange(max(0, int(c_x - reach)), min(CANVAS, int(c_x + reach) + 1))
    rows = np.arange(max(0, int(c_y - reach)), min(CANVAS, int(c_y + reach) + 1))
    offsets = (np.arange(supersample) + 0.5) / supersample  # sub-pixel centers within a pixel
    x = (cols[:, None] + offsets[None, :]).reshape(-1)  # [W_win * S]
    y = (rows[:, None] + offsets[None, :]).reshape(-1)  # [H_win * S]
    u = x[None, :] - c_x  # [1, W_win * S]
    v = c_y - y[:, None]  # [H_win * S, 1]
    cos, sin = _COS[orientation], _SIN[orientation]
    a = (cos * u + sin * v) / s  # R(-theta) (u, v): [H_win * S, W_win * S]
    b = (cos * v - sin * u) / s
    hits = inside_shape(shape, a, b).reshape(len(rows), supersample, len(cols), supersample)
    counts = np.zeros((CANVAS, CANVAS), dtype=np.uint16)
    counts[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = hits.sum(axis=(1, 3))
    return counts


def downsample_counts(counts: np.ndarray, resolution: int) -> np.ndarray:
    """Block sums [R, R] of 64 x 64 counts: a pixel of resolution R covers (64 / R)^2 canvas pixels."""
    if CANVAS % resolution:
        raise ValueError(f"resolution must divide {CANVAS}, got {resolution}")
    block = CANVAS // resolution
    return counts.reshape(resolution, block, resolution, block).sum(axis=(1, 3), dtype=np.uint16)


class ColorDSpritesConfig(StrictConfig):
    """How ColorDSprites images are rendered."""

    resolution: Literal[64, 32, 16] = 64
    """Side of the returned images; below 64 each pixel is the mean coverage of its 64 x 64 block."""
    supersample: int = Field(4, ge=1, le=8)
    """S: S x S sub-pixel samples per canvas pixel (anti-aliasing); 1 gives dSprites-like binary images."""
    cache_size: int = Field(16_384, ge=0)
    """Shape masks (color-free) kept in an LRU cache; each takes 2 R^2 bytes."""


class ColorDSpritesRenderer:
    """Latent rows -> images [3, R, R] in [0, 1], masks cached per (shape, scale, orientation, pos_x, pos_y)."""

    def __init__(self, config: ColorDSpritesConfig | None = None):
        self.config = config or ColorDSpritesConfig()
        self._build_cache()

    def _build_cache(self) -> None:
        self.mask_counts = functools.lru_cache(maxsize=self.config.cache_size)(self._mask_counts)

    def _mask_counts(self, shape: int, scale: int, orientation: int, pos_x: int, pos_y: int) -> np.ndarray:
        counts = downsample_counts(
            coverage_counts(shape, scale, orientation, pos_x, pos_y, self.config.supersample), self.config.resolution
        )
        counts.flags.writeable = False  # shared through the cache
        return counts

    @property
    def samples_per_pixel(self) -> int:
        return (self.config.supersample * CANVAS // self.config.resolution) ** 2

    def coverage(self, latent: np.ndarray) -> np.ndarray:
        """Coverage [R, R] float32 in [0, 1] of one latent row (its color ignored)."""
        _, shape, scale, orientation, pos_x, pos_y = (int(v) for v in check_latents(np.asarray(latent)[None])[0])
        return self.mask_counts(shape, scale, orientation, pos_x, pos_y).astype(np.float32) / self.samples_per_pixel

    def render(self, latent: np.ndarray) -> Tensor:
        """Image [3, R, R] float32: coverage times the color of latent 0."""
        coverage = self.coverage(latent)  # validates the row
        color = COLORS[int(np.asarray(latent)[0])]
        return torch.from_numpy(color[:, None, None] * coverage[None])

    def render_batch(self, latents: np.ndarray) -> Tensor:
        """Images [N, 3, R, R] of latent rows [N, 6]."""
        latents = check_latents(latents)
        res = self.config.resolution
        return torch.stack([self.render(row) for row in latents]) if len(latents) else torch.zeros(0, 3, res, res)

    def __getstate__(self) -> dict:
        # An lru_cache around a bound method does not pickle; the copy (a DataLoader worker, a Ray actor) starts empty.
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.config = state["config"]
        self._build_cache()


class ColorDSpritesDataset(Dataset):
    """Images of given latent rows, rendered on first access: item i = (image [3, R, R], label).

    The label is labels[i] (int64) when labels are given, else the latent row itself (int64 [6]).
    """

    def __init__(
        self, latents: np.ndarray, labels: np.ndarray | None = None, config: ColorDSpritesConfig | None = None
    ):
        self.latents = check_latents(latents)
        if labels is not None and len(labels) != len(self.latents):
            raise ValueError(f"{len(labels)} labels for {len(self.latents)} latent rows")
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.renderer = ColorDSpritesRenderer(config)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = self.renderer.render(self.latents[i])
        label = torch.from_numpy(self.latents[i]) if self.labels is None else self.labels[i]
        return image, label
