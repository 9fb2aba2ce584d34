"""In-process Torsional-GFN training (no Ray): what the orchestrator distributes, for debugging and tuning.

    every replay.draw_every iterations: learner.train(chunk, replay); buffer.add(terminals); replay <- buffer.sample
    every eval_every iterations: learner.evaluate() -> a JSON line of metrics, a JSON line of JSD per split and molecule
Energies come from RDKit in process. Threads: set OMP_NUM_THREADS.
    OMP_NUM_THREADS=1 python -m workloads.torsional.run_local --set total_iters=3000 --set replay.enabled=true
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import yaml

from workloads.torsional.config import TorsionalConfig
from workloads.torsional.learner import TorsionalLearner
from workloads.torsional.replay import StructureReplayBuffer, replay_rows


def run(config: TorsionalConfig, seed: int, log=print) -> list[dict[str, float]]:
    learner = TorsionalLearner(config, seed)
    buffer = StructureReplayBuffer(config.replay.capacity_per_structure, seed + 1, config.replay.seed_share)
    if config.replay.enabled and config.replay.seed_with_md:
        buffer.add_seeds(learner.replay_seeds())
    history, t0 = [], time.time()
    while learner.step < config.total_iters:
        until_eval = config.eval_every - learner.step % config.eval_every
        n = min(until_eval, config.replay.draw_every, config.total_iters - learner.step)
        replay = buffer.sample(replay_rows(config, n)) if config.replay.enabled else None
        metrics, terminals = learner.train(n, replay)
        buffer.add(terminals)
        if learner.step % config.eval_every and learner.step < config.total_iters:
            continue
        t_train = time.time() - t0
        evaluation = learner.evaluate()
        row = {"step": learner.step, "train_s": round(t_train, 1), "time_s": round(time.time() - t0, 1)}
        row |= metrics | {k: v for k, v in evaluation.metrics.items() if k.split("/")[-1] in ("jsd", "log_z_error")}
        history.append(row)
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        per_molecule: dict[str, list[float]] = {}
        for s in evaluation.structures:
            per_molecule.setdefault(f"{s['split']}/{s['smiles']}", []).append(s["jsd"])
        log(
            json.dumps(
                {"step": learner.step, "jsd": {k: round(float(np.mean(v)), 3) for k, v in per_molecule.items()}}
            ),
            flush=True,
        )
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TorsionalConfig field (YAML value), e.g. --set lr=3e-4",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")  # replay.enabled=true -> {"replay": {"enabled": True}}
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    run(TorsionalConfig(**overrides), args.seed)


if __name__ == "__main__":
    main()
