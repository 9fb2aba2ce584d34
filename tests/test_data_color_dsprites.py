"""ColorDSprites: stored checksums, and each latent's effect checked against geometry computed here."""

from __future__ import annotations

import hashlib
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workloads.data.color_dsprites import (
    COLORS,
    LATENT_SIZES,
    LATENT_VALUES,
    NUM_COMBINATIONS,
    ColorDSpritesConfig,
    ColorDSpritesDataset,
    ColorDSpritesRenderer,
    flat_index,
    latents_from_flat,
    sample_latents,
)

RENDERER = ColorDSpritesRenderer()
SQUARE, ELLIPSE, HEART = 0, 1, 2
RED, GREEN, BLUE, WHITE = 0, 1, 2, 3
CENTER = 15  # position index nearest the middle of the range


def coverage(
    shape: int,
    scale: int = 5,
    orientation: int = 0,
    pos_x: int = CENTER,
    pos_y: int = CENTER,
    renderer: ColorDSpritesRenderer = RENDERER,
) -> np.ndarray:
    return renderer.coverage(np.array([WHITE, shape, scale, orientation, pos_x, pos_y]))


def moments(c: np.ndarray) -> tuple[float, float, float, float, float]:
    """Area (px), centroid x, y (px), variance along x and along y of a coverage image."""
    ys, xs = np.mgrid[0 : c.shape[0], 0 : c.shape[1]] + 0.5
    area = c.sum()
    cx, cy = (c * xs).sum() / area, (c * ys).sum() / area
    return area, cx, cy, (c * (xs - cx) ** 2).sum() / area, (c * (ys - cy) ** 2).sum() / area


def half_size_px(scale: int) -> float:
    """s at a scale index, from the documented rule (0.16 of the canvas at scale 1, dSprites' scale values)."""
    return 64 * 0.16 * (0.5 + 0.1 * scale)


def center_px(pos: int) -> float:
    return 64 * (0.25 + 0.5 * pos / 31)


def digest(image: torch.Tensor) -> str:
    return hashlib.sha256(image.numpy().astype("<f4").tobytes()).hexdigest()[:16]


def test_latent_conventions_match_dsprites():
    assert LATENT_SIZES == (4, 3, 6, 40, 32, 32) and NUM_COMBINATIONS == 2_949_120
    for name, (start, stop) in {
        "scale": (0.5, 1),
        "orientation": (0, 2 * np.pi),
        "pos_x": (0, 1),
        "pos_y": (0, 1),
    }.items():
        values = LATENT_VALUES[name]
        np.testing.assert_allclose(values, np.linspace(start, stop, len(values)), rtol=0, atol=1e-14)


def test_flat_index_is_dsprites_order_and_round_trips():
    assert flat_index(np.array([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]])).tolist() == [
        1,
        32,
        NUM_COMBINATIONS // 4,
    ]
    latents = sample_latents(500, seed=3)
    assert len(np.unique(flat_index(latents))) == 500
    np.testing.assert_array_equal(latents_from_flat(flat_index(latents)), latents)
    np.testing.assert_array_equal(sample_latents(500, seed=3), latents)
    with pytest.raises(ValueError, match="orientation"):
        flat_index(np.array([[0, 0, 0, 40, 0, 0]]))


# Computed by this renderer on 2026-11-30 and stored; a change of any pixel changes the digest.
STORED_DIGESTS = [
    (64, [WHITE, HEART, 5, 7, 10, 20], "769e4bcee01838d4"),
    (64, [RED, SQUARE, 2, 13, 0, 31], "99b4db48e2aeb3ea"),
    (64, [BLUE, ELLIPSE, 0, 25, 31, 5], "75d426ae6007b61a"),
    (16, [GREEN, HEART, 3, 33, 17, 9], "323763a9bb5caa71"),
]


@pytest.mark.parametrize("resolution,latent,expected", STORED_DIGESTS)
def test_renders_match_stored_checksums(resolution, latent, expected):
    image = ColorDSpritesRenderer(ColorDSpritesConfig(resolution=resolution)).render(np.array(latent))
    assert image.shape == (3, resolution, resolution) and image.dtype == torch.float32
    assert digest(image) == expected


def test_renders_are_deterministic_cached_and_survive_pickling():
    latents = sample_latents(20, seed=0)
    renderer = ColorDSpritesRenderer()
    first = renderer.render_batch(latents)
    again = renderer.render_batch(latents)
    assert renderer.mask_counts.cache_info().hits == 20
    fresh = ColorDSpritesRenderer().render_batch(latents)
    copied = pickle.loads(pickle.dumps(renderer)).render_batch(latents)
    assert torch.equal(first, again) and torch.equal(first, fresh) and torch.equal(first, copied)


@pytest.mark.parametrize("orientation", [0, 3, 5, 17])
def test_area_matches_the_shape_rule(orientation):
    # Areas of the documented shapes: square (2 s)^2, ellipse pi s (s / 2); heart: its implicit curve's area,
    # measured here on a fine grid in (X, Y) and divided by 1.14^2.
    grid = np.linspace(-1.5, 1.5, 1501)
    x, y = np.meshgrid(grid, grid)
    heart_unit_area = ((x * x + y * y - 1) ** 3 - x * x * y**3 <= 0).mean() * 9 / 1.14**2
    for scale in (0, 5):
        s = half_size_px(scale)
        for shape, expected in ((SQUARE, 4 * s * s), (ELLIPSE, math.pi * s * s / 2), (HEART, heart_unit_area * s * s)):
            area = coverage(shape, scale, orientation).sum()
            assert area == pytest.approx(expected, rel=0.015), (shape, scale)


def test_area_grows_with_scale_as_its_square():
    for shape in (SQUARE, ELLIPSE, HEART):
        areas = [coverage(shape, scale, orientation=11).sum() for scale in range(6)]
        assert all(a < b for a, b in zip(areas, areas[1:])), areas
        assert areas[-1] / areas[0] == pytest.approx(4.0, rel=0.03)


def test_centroid_follows_the_position_latents():
    for pos_x, pos_y in ((0, 0), (31, 0), (7, 22), (CENTER, 31)):
        for shape in (SQUARE, ELLIPSE):  # point-symmetric: the centroid is the center
            _, cx, cy, _, _ = moments(coverage(shape, 5, 9, pos_x, pos_y))
            assert cx == pytest.approx(center_px(pos_x), abs=0.05) and cy == pytest.approx(center_px(pos_y), abs=0.05)
    # One position step moves the heart by 32/31 px along that axis only.
    _, x0, y0, _, _ = moments(coverage(HEART, pos_x=10, pos_y=10))
    _, x1, y1, _, _ = moments(coverage(HEART, pos_x=11, pos_y=10))
    assert x1 - x0 == pytest.approx(32 / 31, abs=0.05) and y1 == pytest.approx(y0, abs=0.01)


def test_shapes_stay_inside_the_canvas_at_the_corners():
    for shape in (SQUARE, ELLIPSE, HEART):
        middle = coverage(shape, 5, 5).sum()  # orientation 5 (46 degrees): the square's widest reach
        for pos in ((0, 0), (31, 31), (0, 31)):
            c = coverage(shape, 5, 5, *pos)
            border = np.concatenate([c[0], c[-1], c[:, 0], c[:, -1]])
            assert border.max() == 0 and c.sum() == pytest.approx(middle, rel=0.01)


def test_color_channels_follow_the_color_latent():
    for color in (RED, GREEN, BLUE, WHITE):
        image = RENDERER.render(np.array([color, ELLIPSE, 4, 6, 12, 19])).numpy()
        shape_mask = image.max(axis=0)
        for channel in range(3):
            expected = shape_mask * COLORS[color][channel]
            np.testing.assert_array_equal(image[channel], expected)
        assert shape_mask.max() == 1.0 and shape_mask.min() == 0.0


def test_orientation_steps_turn_the_shapes_counterclockwise():
    square = [coverage(SQUARE, orientation=o) for o in range(40)]
    # One step (9.2 degrees) changes the square; its 90-degree symmetry brings it back near step 10 (92.3 degrees).
    assert np.abs(square[1] - square[0]).sum() > 20
    assert np.abs(square[10] - square[0]).sum() < 0.25 * np.abs(square[5] - square[0]).sum()
    # The first and the last step are both 0 = 2 pi (dSprites' convention).
    for shape in (SQUARE, ELLIPSE, HEART):
        assert np.abs(coverage(shape, orientation=39) - coverage(shape, orientation=0)).max() <= 1 / 16
    # The ellipse's long axis is horizontal at 0 and vertical after ~92 degrees.
    _, _, _, var_x0, var_y0 = moments(coverage(ELLIPSE, orientation=0))
    _, _, _, var_x10, var_y10 = moments(coverage(ELLIPSE, orientation=10))
    assert var_x0 > 3 * var_y0 and var_y10 > 3 * var_x10
    # The heart's lobes (its mass) sit above the center; turning counterclockwise by ~92 degrees moves them left.
    center = center_px(CENTER)
    _, cx0, cy0, _, _ = moments(coverage(HEART, orientation=0))
    _, cx10, cy10, _, _ = moments(coverage(HEART, orientation=10))
    assert cy0 < center - 1 and cx0 == pytest.approx(center, abs=0.05)
    assert cx10 < center - 1 and cy10 == pytest.approx(center, abs=0.3)


def test_heart_is_not_symmetric_top_to_bottom():
    def vertical_skew(c: np.ndarray) -> float:
        ys = np.arange(c.shape[0])[:, None] + 0.5
        area = c.sum()
        cy = (c * ys).sum() / area
        return float((c * (ys - cy) ** 3).sum() / area / ((c * (ys - cy) ** 2).sum() / area) ** 1.5)

    assert abs(vertical_skew(coverage(HEART))) > 0.2
    assert abs(vertical_skew(coverage(SQUARE))) < 0.02 and abs(vertical_skew(coverage(ELLIPSE))) < 0.02
    heart = coverage(HEART)
    assert np.abs(heart - heart[::-1]).sum() > 0.3 * heart.sum()


@pytest.mark.parametrize("resolution", [32, 16])
def test_lower_resolution_is_the_block_mean(resolution):
    latents = sample_latents(6, seed=1)
    full = RENDERER.render_batch(latents)
    low = ColorDSpritesRenderer(ColorDSpritesConfig(resolution=resolution)).render_batch(latents)
    torch.testing.assert_close(low, F.avg_pool2d(full, 64 // resolution), rtol=0, atol=1e-6)


def test_dataset_items_and_errors():
    latents = sample_latents(5, seed=2)
    labeled = ColorDSpritesDataset(latents, labels=np.arange(5) % 2, config=ColorDSpritesConfig(resolution=32))
    image, label = labeled[3]
    assert len(labeled) == 5 and image.shape == (3, 32, 32) and label.item() == 1
    image, latent = ColorDSpritesDataset(latents)[4]
    assert image.shape == (3, 64, 64) and latent.tolist() == latents[4].tolist()
    with pytest.raises(ValueError, match="labels"):
        ColorDSpritesDataset(latents, labels=np.arange(4))
    with pytest.raises(ValueError, match="shape"):
        ColorDSpritesDataset(np.zeros((3, 5), dtype=int))
