"""WCST-ML cue-conflict sets: levels, labels, no duplicates anywhere, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.data.color_dsprites import LATENT_NAMES, flat_index
from workloads.data.cue_conflict import (
    CueConflictConfig,
    SplitSizes,
    cue_levels,
    make_cue_conflict_sets,
    other_cue_accuracy,
)

SMALL = SplitSizes(train=600, val=151, test=300)
CONFIG = CueConflictConfig(cues=("color", "shape", "scale"), diagonal=SMALL, off_diagonal=SMALL, seed=7)
SETS = make_cue_conflict_sets(CONFIG)


def column(cue: str) -> int:
    return LATENT_NAMES.index(cue)


def every_part(sets):
    yield "diagonal", sets.diagonal
    yield from sets.off_diagonal.items()


def test_levels_are_rounded_linspace():
    assert cue_levels("shape", 3).tolist() == [0, 1, 2]
    assert cue_levels("color", 3).tolist() == [0, 2, 3]  # round(1.5) = 2
    assert cue_levels("scale", 3).tolist() == [0, 2, 5]  # round(2.5) = 2, numpy rounds halves to even
    assert cue_levels("orientation", 3).tolist() == [0, 20, 39]
    assert cue_levels("position", 4).tolist() == [0, 10, 21, 31]
    assert SETS.num_levels == 3 and {c: v.tolist() for c, v in SETS.levels.items()} == {
        "color": [0, 2, 3],
        "shape": [0, 1, 2],
        "scale": [0, 2, 5],
    }


def test_every_row_is_distinct_across_all_splits_and_sets():
    flat = [flat_index(part.latents) for _, splits in every_part(SETS) for _, part in splits.items()]
    total = sum(len(f) for f in flat)
    assert total == 4 * (600 + 151 + 300)
    assert len(np.unique(np.concatenate(flat))) == total


def test_split_sizes_are_stratified_over_labels():
    for _, splits in every_part(SETS):
        for name, part in splits.items():
            counts = np.bincount(part.labels, minlength=3)
            assert counts.sum() == getattr(SMALL, name) and counts.max() - counts.min() <= 1


def test_diagonal_rows_have_every_cue_at_the_label_level():
    for _, part in SETS.diagonal.items():
        for cue, levels in SETS.levels.items():
            np.testing.assert_array_equal(part.latents[:, column(cue)], levels[part.labels])
    # Latents that are no cue's stay free: uniform over their values.
    orientation = SETS.diagonal.train.latents[:, column("orientation")]
    assert len(np.unique(orientation)) == 40


@pytest.mark.parametrize("excludes_diagonal", [True, False])
def test_off_diagonal_rows_carry_the_cue_level_as_label(excludes_diagonal):
    config = CONFIG.model_copy(update={"off_diagonal_excludes_diagonal": excludes_diagonal})
    sets = make_cue_conflict_sets(config)
    for cue, splits in sets.off_diagonal.items():
        for _, part in splits.items():
            level_of = {c: np.searchsorted(levels, part.latents[:, column(c)]) for c, levels in sets.levels.items()}
            for c, levels in sets.levels.items():  # every cue sits at one of its levels
                np.testing.assert_array_equal(levels[level_of[c]], part.latents[:, column(c)])
            np.testing.assert_array_equal(level_of[cue], part.labels)
            on_diagonal = (level_of["color"] == level_of["shape"]) & (level_of["shape"] == level_of["scale"])
            assert on_diagonal.any() != excludes_diagonal


@pytest.mark.parametrize("excludes_diagonal", [True, False])
def test_a_model_following_another_cue_scores_the_documented_chance(excludes_diagonal):
    sizes = SplitSizes(train=0, val=0, test=6000)
    sets = make_cue_conflict_sets(
        CueConflictConfig(
            diagonal=SplitSizes(train=0, val=0, test=0),
            off_diagonal=sizes,
            off_diagonal_excludes_diagonal=excludes_diagonal,
            seed=1,
        )
    )
    test = sets.off_diagonal["shape"].test
    follows_color = np.searchsorted(sets.levels["color"], test.latents[:, column("color")])
    accuracy = (follows_color == test.labels).mean()
    expected = other_cue_accuracy(3, 3, excludes_diagonal)
    assert expected == pytest.approx(0.25 if excludes_diagonal else 1 / 3)
    assert accuracy == pytest.approx(expected, abs=0.02)


def test_same_seed_same_sets_other_seed_other_sets():
    again = make_cue_conflict_sets(CONFIG)
    other = make_cue_conflict_sets(CONFIG.model_copy(update={"seed": 8}))
    for (_, a), (_, b), (_, c) in zip(every_part(SETS), every_part(again), every_part(other)):
        np.testing.assert_array_equal(a.train.latents, b.train.latents)
        np.testing.assert_array_equal(a.test.labels, b.test.labels)
        assert not np.array_equal(a.train.latents, c.train.latents)


def test_position_cue_moves_both_coordinates():
    sets = make_cue_conflict_sets(
        CueConflictConfig(cues=("color", "position"), num_levels=4, diagonal=SMALL, off_diagonal=SMALL)
    )
    part = sets.diagonal.train
    np.testing.assert_array_equal(part.latents[:, column("pos_x")], part.latents[:, column("pos_y")])
    np.testing.assert_array_equal(part.latents[:, column("pos_x")], cue_levels("position", 4)[part.labels])


def test_labelled_latents_become_a_dataset():
    image, label = SETS.diagonal.test.dataset()[0]
    assert image.shape == (3, 64, 64) and label.item() == SETS.diagonal.test.labels[0]


def test_impossible_requests_are_clear_errors():
    with pytest.raises(ValueError, match="unknown cue 'hue'"):
        CueConflictConfig(cues=("color", "hue"))
    with pytest.raises(ValueError, match="at least 2 cues"):
        CueConflictConfig(cues=("color",))
    with pytest.raises(ValueError, match="same latent twice"):
        CueConflictConfig(cues=("position", "pos_x"))
    with pytest.raises(ValueError, match=r"num_levels must lie in \[2, 3\]"):
        CueConflictConfig(cues=("shape", "scale"), num_levels=4)
    # Every latent a cue: one image per level on the diagonal.
    every_latent = CueConflictConfig(
        cues=("color", "shape", "scale", "orientation", "position"), diagonal=SplitSizes(train=3, val=3, test=0)
    )
    with pytest.raises(ValueError, match="diagonal set label 0 needs 2 distinct latent rows .* only 1 are left"):
        make_cue_conflict_sets(every_latent)
    # With color, shape, scale and orientation as cues each diagonal level has 32 x 32 rows (positions free).
    no_sizes = SplitSizes(train=0, val=0, test=0)
    crowded = CueConflictConfig(
        cues=("color", "shape", "scale", "orientation"),
        diagonal=SplitSizes(train=3 * 1024, val=0, test=0),
        off_diagonal=no_sizes,
    )
    assert len(make_cue_conflict_sets(crowded).diagonal.train) == 3 * 1024
    with pytest.raises(ValueError, match="needs 1025 .* only 1024 are left: it has 1024 in all, 0 already drawn"):
        make_cue_conflict_sets(crowded.model_copy(update={"diagonal": SplitSizes(train=3 * 1024, val=3, test=0)}))
    # Off-diagonal sets that may hold diagonal points lose the ones the diagonal set already took.
    overlapping = crowded.model_copy(
        update={"off_diagonal_excludes_diagonal": False, "off_diagonal": SplitSizes(train=3 * 27 * 1024, val=0, test=0)}
    )
    with pytest.raises(ValueError, match="off-diagonal set of 'color' label 0 .* 1024 already drawn"):
        make_cue_conflict_sets(overlapping)
