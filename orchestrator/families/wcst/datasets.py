"""A WCST-ML trial's cue-conflict sets as MLflow dataset inputs, described without drawing or rendering them: one
row per split it trains on (the diagonal set, and the forced cue's off-diagonal set) or measures (the diagonal and
each cue's off-diagonal test sets), with its size, image shape and generator settings (workloads/wcst/data.py)."""

from __future__ import annotations

import pandas as pd

from orchestrator.registry import InputData
from workloads.wcst.config import WcstConfig

SOURCE = "workloads.data.cue_conflict (ColorDSprites)"


def cue_conflict_sets(config: WcstConfig) -> list[InputData]:
    """The training splits (context training) and the test splits (context evaluation)."""
    common = {
        "channels": 3,
        "height": config.resolution,
        "width": config.resolution,
        "cues": ",".join(config.cues),
        "levels": config.cue_conflict().levels,
        # A string: MLflow's digest of a frame skips boolean columns.
        "excludes_diagonal": str(config.off_diagonal_excludes_diagonal).lower(),
        "supersample": config.supersample,
        # None: each trial draws its own sets with its own seed, which the config does not hold.
        "data_seed": "trial seed" if config.data_seed is None else str(config.data_seed),
    }

    def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
        return pd.DataFrame([{"set": name, "split": split, "images": n, **common} for name, split, n in rows])

    train = [("diagonal", "train", config.train_size)]
    if config.forced_cue is not None:
        train.append((f"off_diagonal:{config.forced_cue}", "train", config.train_size))
    tests = [("diagonal", "test", config.test_size)]
    tests += [(f"off_diagonal:{cue}", "test", config.test_size) for cue in config.cues]
    return [
        InputData("cue_conflict-train", "training", frame(train), SOURCE),
        InputData("cue_conflict-eval", "evaluation", frame(tests), SOURCE),
    ]
