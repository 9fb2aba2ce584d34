"""Semantic OOD: labels held out of training split a data set's indices cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.data.color_dsprites import sample_latents
from workloads.data.semantic_ood import split_by_label

LABELS = np.array([3, 0, 9, 8, 1, 9, 2, 8, 0, 5, 4, 6, 7, 3])


def test_held_out_labels_split_the_indices():
    split = split_by_label(LABELS, [8, 9])
    assert sorted(np.concatenate([split.in_distribution, split.held_out]).tolist()) == list(range(len(LABELS)))
    assert set(LABELS[split.held_out]) == {8, 9} and not set(LABELS[split.in_distribution]) & {8, 9}
    assert split.kept_labels.tolist() == list(range(8))


def test_remap_ranks_the_kept_labels():
    split = split_by_label(LABELS, [2])
    remapped = split.remap(LABELS[split.in_distribution])
    assert remapped.tolist() == [2, 0, 8, 7, 1, 8, 7, 0, 4, 3, 5, 6, 2]
    with pytest.raises(ValueError, match=r"\[2\] are not among the kept labels"):
        split.remap(np.array([1, 2]))


def test_hold_out_a_shape_of_color_dsprites():
    latents = sample_latents(300, seed=0)
    split = split_by_label(latents[:, 1], [2])  # no hearts in training
    assert (latents[split.held_out, 1] == 2).all() and (latents[split.in_distribution, 1] != 2).all()
    assert len(split.held_out) + len(split.in_distribution) == 300


def test_impossible_holdouts_are_errors():
    with pytest.raises(ValueError, match=r"\[11\] do not occur"):
        split_by_label(LABELS, [11])
    with pytest.raises(ValueError, match="not all"):
        split_by_label(np.array([0, 1, 1]), [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        split_by_label(LABELS, [])
