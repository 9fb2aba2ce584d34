"""A SED trial's image sets as MLflow dataset inputs, described without making a single image: one row per split
(the training set; the test set, the semantic-OOD set and each corrupted test set), with its size, image shape,
labels and generator settings. Rules of the splits: workloads/ensembles/data.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.registry import InputData
from workloads.data.color_dsprites import SHAPE_NAMES
from workloads.data.digits import split_indices
from workloads.ensembles.config import NUM_LABELS, SEDConfig
from workloads.ensembles.data import DIGITS_TEST_FRACTION

DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
"""Images of each digit in scikit-learn's digits (fixed data; tests/test_family_datasets.py checks it): the split
sizes follow from them, where loading scikit-learn would take seconds."""
SOURCES = {"colordsprites": "workloads.data.color_dsprites", "digits": "sklearn.datasets.load_digits"}


def _label_names(config: SEDConfig, labels: list[int]) -> str:
    names = SHAPE_NAMES if config.dataset == "colordsprites" else [str(d) for d in range(NUM_LABELS["digits"])]
    return ",".join(names[label] for label in labels)


def _sizes(config: SEDConfig) -> tuple[int, int, int]:
    """(training, test, OOD) images, as data.train_set / eval_sets make them."""
    if config.dataset == "colordsprites":
        return config.num_train, config.num_test, config.num_ood
    labels = np.repeat(np.arange(len(DIGITS_PER_CLASS)), DIGITS_PER_CLASS)
    parts = split_indices(labels, 0.0, DIGITS_TEST_FRACTION, config.data_seed)  # sizes only: the rule per class
    kept = ~np.isin(labels, config.held_out)
    return int(kept[parts.train].sum()), int(kept[parts.test].sum()), int((~kept).sum())


def image_sets(config: SEDConfig) -> list[InputData]:
    """The training set (context training) and every set the evaluation scores (context evaluation)."""
    train, test, ood = _sizes(config)
    kept = _label_names(config, [k for k in range(NUM_LABELS[config.dataset]) if k not in config.held_out])
    held_out = _label_names(config, config.held_out)
    shifts = [(f"{name}_s{severity}", name, severity) for name in config.corruptions for severity in config.severities]
    common = {
        "dataset": config.dataset,
        "channels": config.in_channels,
        "height": config.image_size,
        "width": config.image_size,
        "data_seed": config.data_seed,
    }

    def frame(rows: list[tuple[str, int, str, str, int]]) -> pd.DataFrame:
        keys = ("split", "images", "labels", "corruption", "severity")
        return pd.DataFrame([{**dict(zip(keys, row)), **common} for row in rows])

    source = SOURCES[config.dataset]
    return [
        InputData(f"{config.dataset}-train", "training", frame([("train", train, kept, "none", 0)]), source),
        InputData(
            f"{config.dataset}-eval",
            "evaluation",
            frame(
                [
                    ("test", test, kept, "none", 0),
                    ("ood", ood, held_out, "none", 0),
                    *[(split, test, kept, name, severity) for split, name, severity in shifts],
                ]
            ),
            source,
        ),
    ]
