"""The SED task's images: an in-distribution training set, its test set, covariate shifts of that test set, and
a semantic-OOD set of the held-out labels (all built from `workloads/data`, deterministic in config.data_seed).

    colordsprites  label = shape among the kept shapes; color, scale, orientation and position uniform.
                   Latent rows are drawn without replacement, so train, test and OOD share no image.
    digits         scikit-learn's digits, stratified split (val 0, test 0.3); the kept classes' train / test
                   parts are ID, every image of a held-out class (train and test parts) is OOD.
    shifts         corrupt(test images, name, severity, data_seed) for each corruption and severity.

Labels of the kept classes are remapped to 0..K-1 (`LabelHoldout.remap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from workloads.data import (
    ColorDSpritesConfig,
    ColorDSpritesRenderer,
    DigitsConfig,
    LabelHoldout,
    corrupt,
    digits_splits,
    sample_latents,
    split_by_label,
)
from workloads.data.color_dsprites import NUM_COMBINATIONS, latent_index
from workloads.ensembles.config import NUM_LABELS, SEDConfig

DIGITS_TEST_FRACTION = 0.3


@dataclass
class Batch:
    """Images and labels of one training step (or a whole labelled set)."""

    images: Tensor  # [B, C, H, W] in [0, 1]
    labels: Tensor  # [B] int64 in 0..K-1

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EvalSets:
    id_test: Batch
    ood_images: Tensor
    """[N_ood, C, H, W]: images of the held-out labels."""
    shifts: dict[str, Batch]
    """'<corruption>_s<severity>' -> the corrupted in-distribution test set (same labels)."""


def train_set(config: SEDConfig) -> Batch:
    if config.dataset == "colordsprites":
        train_latents = _dsprites_parts(config)[0]
        return Batch(_render(config, train_latents), _shape_labels(config, train_latents))
    return _digits_parts(config)[0]


def eval_sets(config: SEDConfig) -> EvalSets:
    if config.dataset == "colordsprites":
        _, test_latents, ood_latents = _dsprites_parts(config)
        id_test = Batch(_render(config, test_latents), _shape_labels(config, test_latents))
        ood_images = _render(config, ood_latents)
    else:
        _, id_test, ood_images = _digits_parts(config)
    shifts = {
        f"{name}_s{severity}": Batch(corrupt(id_test.images, name, severity, seed=config.data_seed), id_test.labels)
        for name in config.corruptions
        for severity in config.severities
    }
    return EvalSets(id_test, ood_images, shifts)


def _dsprites_parts(config: SEDConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, test, OOD) latent rows [n, 6], all distinct; train and test rows carry a kept shape."""
    num_shapes = 3
    kept_fraction = (num_shapes - len(config.held_out)) / num_shapes
    need_id, need_ood = config.num_train + config.num_test, config.num_ood
    # Shapes are uniform: draw enough rows for both parts with a margin of 10 % plus 100 rows.
    n = math.ceil(1.1 * max(need_id / kept_fraction, need_ood / (1 - kept_fraction))) + 100
    latents = sample_latents(min(n, NUM_COMBINATIONS), config.data_seed)
    holdout = split_by_label(latents[:, latent_index("shape")], config.held_out)
    ids, ood = holdout.in_distribution, holdout.held_out
    if len(ids) < need_id or len(ood) < need_ood:
        raise ValueError(f"drew {len(ids)} in-distribution / {len(ood)} held-out rows, need {need_id} / {need_ood}")
    train_rows, test_rows = latents[ids[: config.num_train]], latents[ids[config.num_train : need_id]]
    return train_rows, test_rows, latents[ood[:need_ood]]


def _render(config: SEDConfig, latents: np.ndarray) -> Tensor:
    """Images [n, 3, R, R]; no mask cache: every row is rendered once."""
    return ColorDSpritesRenderer(ColorDSpritesConfig(resolution=config.image_size, cache_size=0)).render_batch(latents)


def _shape_labels(config: SEDConfig, latents: np.ndarray) -> Tensor:
    return torch.as_tensor(_kept_labels(config).remap(latents[:, latent_index("shape")]), dtype=torch.int64)


def _kept_labels(config: SEDConfig) -> LabelHoldout:
    """The hold-out over the dataset's label values (only its `remap` to 0..K-1 is used)."""
    return split_by_label(np.arange(NUM_LABELS[config.dataset]), config.held_out)


def _digits_parts(config: SEDConfig) -> tuple[Batch, Batch, Tensor]:
    """(ID train, ID test, OOD images)."""
    splits = digits_splits(
        DigitsConfig(
            resolution=config.image_size, val_fraction=0.0, test_fraction=DIGITS_TEST_FRACTION, seed=config.data_seed
        )
    )
    kept = _kept_labels(config)
    id_parts, ood_images = [], []
    for part in (splits.train, splits.test):
        labels = part.labels.numpy()
        is_id = ~np.isin(labels, config.held_out)
        id_parts.append(Batch(part.images[is_id], torch.as_tensor(kept.remap(labels[is_id]), dtype=torch.int64)))
        ood_images.append(part.images[~is_id])
    return id_parts[0], id_parts[1], torch.cat(ood_images)
