"""One WCST-ML trial in process, no Ray or MLflow: a debugger-friendly reference for what a sweep trial runs.

    OMP_NUM_THREADS=1 python -m workloads.wcst.run_local --set architecture=mlp --set total_iters=5
    OMP_NUM_THREADS=1 python -m workloads.wcst.run_local --set forced_cue=shape --seed 3

Prints one JSON line per epoch (train/..., eval/offdiag_acc/<cue>) and, after the last, the flatness metrics.
"""

from __future__ import annotations

import argparse
import json
import time

import yaml

from workloads.wcst.config import WcstConfig
from workloads.wcst.learner import WcstLearner


def run(config: WcstConfig, seed: int, log=print) -> list[dict[str, float]]:
    start = time.perf_counter()
    learner = WcstLearner(config, seed)
    log(json.dumps({"data_s": round(time.perf_counter() - start, 1), "train_rows": len(learner.data.train)}))
    history = []
    while learner.step < config.total_iters:
        metrics, _ = learner.train(1)
        row = {"epoch": learner.step, **metrics, **learner.evaluate().metrics}
        if learner.step == config.total_iters:
            row |= learner.flatness()
        row["time_s"] = time.perf_counter() - start
        history.append(row)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a WcstConfig field, the value read as YAML (e.g. cues=[color,shape])",
    )
    args = parser.parse_args()
    fields = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        fields[key] = yaml.safe_load(value)
    run(WcstConfig(**fields), args.seed)


if __name__ == "__main__":
    main()
