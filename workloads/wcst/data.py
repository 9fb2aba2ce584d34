"""A WCST-ML trial's images, rendered once: the training set and the sets its accuracies are measured on.

    training set   diagonal train split                          (config.forced_cue None)
                   diagonal train + cue k's off-diagonal train   (forced onto cue k), shuffled together
    diagonal test  every cue at level l, label l
    off-diagonal   per cue k: cue k at level l = the label, the other cues elsewhere (test splits)

The rows come from `workloads.data.cue_conflict.make_cue_conflict_sets` (distinct across every split and set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from workloads.data.color_dsprites import ColorDSpritesRenderer
from workloads.data.cue_conflict import LabelledLatents, make_cue_conflict_sets, other_cue_accuracy
from workloads.wcst.config import WcstConfig


@dataclass(frozen=True)
class LabelledImages:
    images: Tensor  # [N, 3, R, R] in [0, 1]
    labels: Tensor  # [N] int64, a level index in [0, L)
    latents: np.ndarray  # [N, 6] int64, the ColorDSprites latents each image was rendered from

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: str | torch.device) -> LabelledImages:
        return LabelledImages(self.images.to(device), self.labels.to(device), self.latents)


@dataclass(frozen=True)
class WcstData:
    train: LabelledImages
    diagonal_test: LabelledImages
    off_diagonal_test: dict[str, LabelledImages]
    """Cue -> its off-diagonal test split, in config.cues order."""
    num_levels: int
    chance_other_cue: float
    """Expected accuracy on a cue's off-diagonal set of a model that follows another cue."""

    def to(self, device: str | torch.device) -> WcstData:
        return WcstData(
            self.train.to(device),
            self.diagonal_test.to(device),
            {cue: s.to(device) for cue, s in self.off_diagonal_test.items()},
            self.num_levels,
            self.chance_other_cue,
        )


def render(rows: LabelledLatents, renderer: ColorDSpritesRenderer) -> LabelledImages:
    return LabelledImages(
        renderer.render_batch(rows.latents), torch.as_tensor(rows.labels, dtype=torch.int64), rows.latents
    )


def wcst_data(config: WcstConfig, seed: int) -> WcstData:
    """Draw the cue-conflict sets (data seed: config.data_seed, else `seed`) and render the ones this trial uses."""
    conflict = config.cue_conflict(seed)
    sets = make_cue_conflict_sets(conflict)
    train_rows = sets.diagonal.train
    if config.forced_cue is not None:
        forced = sets.off_diagonal[config.forced_cue].train
        # Shuffled together, so that the first `flatness_samples` rows mix both parts in proportion.
        order = np.random.default_rng(conflict.seed).permutation(len(train_rows) + len(forced))
        train_rows = LabelledLatents(
            np.concatenate([train_rows.latents, forced.latents])[order],
            np.concatenate([train_rows.labels, forced.labels])[order],
        )
    renderer = ColorDSpritesRenderer(config.images())
    return WcstData(
        train=render(train_rows, renderer),
        diagonal_test=render(sets.diagonal.test, renderer),
        off_diagonal_test={cue: render(sets.off_diagonal[cue].test, renderer) for cue in config.cues},
        num_levels=sets.num_levels,
        chance_other_cue=other_cue_accuracy(sets.num_levels, len(config.cues), config.off_diagonal_excludes_diagonal),
    )
