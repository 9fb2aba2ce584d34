"""In-process training loop with replay and local search (arXiv:2402.05098, "+ LS"), no Ray.

    every chunk of `local_search_every` iterations:
        metrics, terminals = learner.train(chunk, replay)        # odd steps: backward from replay
        buffers.add(terminals)                                    # forward buffer
        buffers.local_search(learner.step)                        # if replay.enabled: MALA into the searched buffer
        replay <- buffers.sample(#odd steps of next chunk * batch_size)

A debugger-friendly reference for what the orchestrator distributes (the same `LocalSearchReplay`,
run serially here). Threads: set OMP_NUM_THREADS.
    OMP_NUM_THREADS=1 python -m workloads.samplers.run_local --total-iters 5000 --replay
    OMP_NUM_THREADS=1 python -m workloads.samplers.run_local --target manywell --loss vargrad --langevin --replay
"""

from __future__ import annotations

import argparse
import json
import time
from typing import get_args

from pydantic import ValidationError

from workloads.samplers.config import ReplayConfig, SamplerConfig
from workloads.samplers.learner import SamplerLearner
from workloads.samplers.local_search import LocalSearchReplay
from workloads.samplers.replay import TerminalBatch
from workloads.samplers.targets import TARGETS


def run(config: SamplerConfig, seed: int, log=print) -> list[dict[str, float]]:
    learner = SamplerLearner(config, seed)
    r = config.replay
    buffers = LocalSearchReplay(r, learner.target, seed)
    replay: TerminalBatch | None = None
    history, t0 = [], time.time()
    while learner.step < config.total_iters:
        until_eval = config.eval_every - learner.step % config.eval_every
        until_ls = r.local_search_every - learner.step % r.local_search_every
        n = min(until_eval, until_ls, config.total_iters - learner.step)
        metrics, terminals = learner.train(n, replay)
        buffers.add(terminals)
        if r.enabled and learner.step % r.local_search_every == 0:
            metrics |= buffers.local_search(learner.step)
        if r.enabled:
            s = learner.step
            chunk = min(r.local_search_every, config.eval_every, config.total_iters - s)
            num_odd = sum(1 for i in range(s, s + chunk) if i % 2 == 1)
            replay = buffers.sample(max(num_odd, 1) * config.batch_size)
        if learner.step % config.eval_every == 0 or learner.step == config.total_iters:
            ev = learner.evaluate()
            row = {"step": learner.step, "time_s": round(time.time() - t0, 1)} | metrics | ev.metrics
            history.append(row)
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    return history


def main() -> None:
    defaults = SamplerConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", choices=sorted(TARGETS), default=defaults.target)
    ap.add_argument("--total-iters", type=int, default=defaults.total_iters)
    ap.add_argument("--eval-every", type=int, default=defaults.eval_every)
    ap.add_argument("--loss", choices=get_args(SamplerConfig.model_fields["loss"].annotation), default=defaults.loss)
    ap.add_argument("--langevin", action="store_true", help="Langevin-parameterized drift (LP)")
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--num-steps", type=int, default=defaults.num_steps)
    ap.add_argument(
        "--exploration-factor",
        type=float,
        default=defaults.exploration_factor,
        help="default: the target's (config.EXPLORATION_BY_TARGET); 0 for --loss pis (on-policy)",
    )
    ap.add_argument("--replay", action="store_true", help="replay + local search")
    ap.add_argument("--smoke-test", action="store_true")
    ap.add_argument("--out", default=None, help="write the eval history as JSON here")
    a = ap.parse_args()
    try:
        config = SamplerConfig(
            target=a.target,
            total_iters=a.total_iters,
            eval_every=a.eval_every,
            loss=a.loss,
            langevin=a.langevin,
            batch_size=a.batch_size,
            num_steps=a.num_steps,
            exploration_factor=a.exploration_factor,
            replay=ReplayConfig(enabled=a.replay),
        )
    except ValidationError as error:
        ap.error(str(error))
    if a.smoke_test:
        config = config.smoke()
    history = run(config, a.seed)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(history, f, indent=1)


if __name__ == "__main__":
    main()
