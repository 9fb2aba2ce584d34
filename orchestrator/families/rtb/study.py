"""The convergence studies of docs/rtb.md, without Ray or MLflow: one learner of a sweep's trial (digits or an
inverse problem) trained on one prior, its evaluation printed every `--eval-every` iterations.

    python -m orchestrator.families.rtb.study digits --iters 400 [--set batch_size=32 ...] [--cosine]
    python -m orchestrator.families.rtb.study inverse --iters 600 --set prior_space=latent guided_share=0.5 lr=1e-3 \
        [--dps 0.5 1 2]

The config is the sweep's block (sweeps/rtb.yaml's digits block with targets (3,) and 128 evaluation samples;
sweeps/inverse.yaml's inverse block), then `--set` (dotted keys, values read as YAML). `--prior FILE` keeps the
trained prior in FILE and loads it from there when it exists (one prior for many runs). `--cosine` scales both
learning rates by (1 + cos(pi s / iters)) / 2 at iteration s. `--dps` first evaluates DPS at each zeta' (inverse).
`--replay`: the trial's replay-buffer actor in-process (the config's `replay`, turned on): every `draw_every`
iterations one draw of half as many batches from the buffer of the posterior's forward samples, which the learner
backtracks from. `--smoke`: the configs' smoke(). One torch thread.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.families.rtb.benchmark import parse_sets, with_overrides
from orchestrator.spec import load_sweep
from workloads.inverse.image_posterior import ImageInverseLearner
from workloads.rtb.image_learner import ImageRTBLearner, trained_prior_state
from workloads.samplers.replay import ReplayBuffer

ROOT = Path(__file__).resolve().parents[3]
TASKS = {"digits": ("rtb.yaml", ImageRTBLearner), "inverse": ("inverse.yaml", ImageInverseLearner)}
DIGITS_STUDY = {"targets": (3,), "eval_samples": 128, "prior_eval_samples": 2048}
"""The digits study's settings on top of the sweep's block: target 3, 128 evaluation samples, 2,048 prior samples
for the exact references."""


def study_config(task: str, overrides: dict[str, Any], smoke: bool) -> Any:
    """The sweep's block of `task` (with the digits study's settings), `overrides` set, smoke() if asked."""
    block = getattr(load_sweep(ROOT / "sweeps" / TASKS[task][0]).config, task)
    config = with_overrides(block, DIGITS_STUDY if task == "digits" else {})
    config = with_overrides(config.smoke() if smoke else config, overrides)
    return config


def trained_prior(task: str, config: Any, path: Path | None) -> dict:
    """The prior state of `path` when it exists; else trained from the config (and written to `path`)."""
    if path is not None and path.exists():
        return torch.load(path, weights_only=False)
    start = time.time()
    if task == "digits":
        state = trained_prior_state(config)
    else:
        state = ImageInverseLearner(config, seed=0).trained_prior_state()
    print(f"prior trained in {time.time() - start:.0f} s: {state['fit']}", flush=True)
    if path is not None:
        torch.save(state, path)
    return state


def show(name: str, metrics: dict[str, float]) -> None:
    print(name, " ".join(f"{k.removeprefix('eval/')}={v:.4g}" for k, v in sorted(metrics.items())), flush=True)


def chunk_mean(logs: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each training metric over `logs` (NaNs, e.g. of replay-only chunks, left out)."""
    keys = {key for log in logs for key in log}
    return {key: float(np.nanmean([log.get(key, math.nan) for log in logs])) for key in sorted(keys)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--prior", type=Path, help="file of the trained prior (written when missing)")
    parser.add_argument("--cosine", action="store_true", help="cosine decay of both learning rates over --iters")
    parser.add_argument("--dps", type=float, nargs="*", default=[], help="inverse: DPS's zeta' values to evaluate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", action="store_true", help="backtrack from a buffer of the posterior's samples")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    config = study_config(args.task, parse_sets(args.set), args.smoke)
    learner_class = TASKS[args.task][1]
    prior = trained_prior(args.task, config, args.prior)
    for zeta in args.dps:
        dps = with_overrides(config, {"method": "dps", "guidance_scale": zeta})
        show(f"dps zeta'={zeta}", learner_class(dps, seed=args.seed, prior_state=prior).evaluate().metrics)
    learner = learner_class(config, seed=args.seed, prior_state=prior)
    show("it=0", learner.evaluate().metrics)
    start, base_lrs = time.time(), [group["lr"] for group in learner.optimizer.param_groups]
    replay = config.replay
    buffer = ReplayBuffer(replay.capacity, replay.prioritization, replay.rank_k, args.seed + 1) if args.replay else None
    train_logs: list[dict[str, float]] = []
    while learner.step < args.iters:
        if args.cosine:
            factor = 0.5 * (1 + math.cos(math.pi * learner.step / args.iters))
            for group, lr in zip(learner.optimizer.param_groups, base_lrs):
                group["lr"] = lr * factor
        if buffer is None:
            train_logs.append(learner.train(1)[0])
        else:  # the driver's sub-chunk: one draw (none while the buffer is empty), its forward samples back in
            n = min(replay.draw_every, args.iters - learner.step, args.eval_every - learner.step % args.eval_every)
            drawn = buffer.sample(math.ceil(n / 2) * config.batch_size) if len(buffer) else None
            metrics, terminals = learner.train(n, drawn)
            train_logs.append(metrics)
            buffer.add(terminals)
        if learner.step % args.eval_every == 0 or learner.step == args.iters:
            held = "" if buffer is None else f" buffer={len(buffer)}"
            show(f"it={learner.step} ({time.time() - start:.0f} s){held}", learner.evaluate().metrics)
            show("  train (mean since the last evaluation)", chunk_mean(train_logs))
            train_logs.clear()


if __name__ == "__main__":
    main()
