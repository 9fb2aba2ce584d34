"""Semantic OOD: classes (digits) or shapes (ColorDSprites) held out of training, seen only at test time.

    in-distribution  {i : labels[i] not in H}        held out  {i : labels[i] in H}

For ColorDSprites shapes pass labels = latents[:, 1] (e.g. H = {2}: no hearts in training). A classifier
trained on the kept labels needs them as 0..K-1: `LabelHoldout.remap`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelHoldout:
    """Index arrays into the labels split by H, and the kept label values (sorted)."""

    in_distribution: np.ndarray
    held_out: np.ndarray
    kept_labels: np.ndarray

    def remap(self, labels: np.ndarray) -> np.ndarray:
        """Kept label values -> their rank 0..K-1 among kept_labels; a held-out label is an error."""
        labels = np.asarray(labels)
        ranks = np.searchsorted(self.kept_labels, labels)
        found = self.kept_labels[np.minimum(ranks, len(self.kept_labels) - 1)]
        valid = (ranks < len(self.kept_labels)) & (found == labels)
        if not valid.all():
            raise ValueError(
                f"labels {np.unique(labels[~valid]).tolist()} are not among the kept labels {self.kept_labels.tolist()}"
            )
        return ranks.astype(np.int64)


def split_by_label(labels: np.ndarray, held_out_labels: Iterable[int]) -> LabelHoldout:
    """Split positions 0..N-1 of labels [N] into in-distribution and held-out by the label set H."""
    labels = np.asarray(labels)
    held = np.unique(np.asarray(list(held_out_labels), dtype=labels.dtype))
    present = np.unique(labels)
    missing = np.setdiff1d(held, present)
    if len(missing):
        raise ValueError(f"held-out labels {missing.tolist()} do not occur; labels present: {present.tolist()}")
    kept = np.setdiff1d(present, held)
    if len(held) == 0 or len(kept) == 0:
        raise ValueError(f"hold out at least one and not all of the labels {present.tolist()}, got {held.tolist()}")
    is_held = np.isin(labels, held)
    return LabelHoldout(np.flatnonzero(~is_held), np.flatnonzero(is_held), kept)
