"""In-process SED training (no Ray): what the orchestrator distributes, for debugging, tuning and measuring.

    every step: coordinator.draw() -> host.forward(batch, active) -> coordinator.updates(...) -> host.backward(...)
    every eval_every steps: evaluator.evaluate([host.weights()]) -> a JSON line of metrics

One host holds every member (the Ray driver spreads them over member actors; the arithmetic is the same).
Threads: set OMP_NUM_THREADS.
    OMP_NUM_THREADS=1 python -m workloads.ensembles.run_local --set dataset=digits --set pair_selection=none
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import yaml

from workloads.ensembles.config import SEDConfig
from workloads.ensembles.coordinator import Coordinator, member_metrics
from workloads.ensembles.data import train_set
from workloads.ensembles.evaluation import Evaluation, Evaluator
from workloads.ensembles.members import make_host

LOGGED = (
    "eval/id_accuracy",
    "eval/id_accuracy_min_member",
    "eval/ood_auroc_pds",
    "eval/ood_auroc_max_prob",
    "eval/ood_auroc_entropy",
    "eval/ood_auroc_mutual_info",
    "eval/ood_disagreement",
    "eval/id_disagreement",
    "eval/shift_mean_s1/ensemble",
    "eval/shift_mean_s5/ensemble",
)


def run(config: SEDConfig, seed: int, log=print) -> tuple[list[dict[str, float]], Evaluation]:
    """Trains; returns one row of metrics per evaluation and the last evaluation."""
    train = train_set(config)
    coordinator = Coordinator(config, train, seed)
    host = make_host(config, list(range(config.num_members)), seed, train=train)
    evaluator = Evaluator(config, seed)
    history, train_rows, t0 = [], [], time.time()
    evaluation = None
    while coordinator.step < config.total_iters:
        metrics, results = coordinator.run_step(
            lambda draw: dict(zip(draw.active, host.forward(draw.batch, draw.active))),
            lambda updates: host.backward(list(updates.values())),
        )
        train_rows.append(metrics | member_metrics(results))
        if coordinator.step % config.eval_every and coordinator.step < config.total_iters:
            continue
        evaluation = evaluator.evaluate([host.weights()])
        row = {"step": coordinator.step, "time_s": round(time.time() - t0, 1)}
        row |= {
            k: float(np.mean([r[k] for r in train_rows if k in r])) for k in sorted({k for r in train_rows for k in r})
        }
        row |= evaluation.metrics
        train_rows = []
        history.append(row)
        shown = {k: v for k, v in row.items() if k in LOGGED or k.startswith("train/") or k in ("step", "time_s")}
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in shown.items()}), flush=True)
    return history, evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an SEDConfig field (YAML value), e.g. --set lam=0.3",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    run(SEDConfig(**overrides), args.seed)


if __name__ == "__main__":
    main()
