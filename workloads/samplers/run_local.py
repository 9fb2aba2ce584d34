"""In-process training loop with replay and local search (arXiv:2402.05098, "+ LS"), no Ray.

    every chunk of `local_search_every` iterations:
        metrics, terminals = learner.train(chunk, replay)        # odd steps: backward from replay
        forward_buffer.add(terminals)
        x <- MALA(forward_buffer.sample(local_search_batch))       # if replay.enabled
        local_search_buffer.add(x)
        replay <- local_search_buffer.sample(#odd steps of next chunk * batch_size)

A debugger-friendly reference for what the orchestrator distributes. Threads: set OMP_NUM_THREADS.
    OMP_NUM_THREADS=1 python -m workloads.samplers.run_local --total-iters 5000 --replay
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from workloads.samplers.config import ReplayConfig, SamplerConfig
from workloads.samplers.learner import SamplerLearner
from workloads.samplers.local_search import mala
from workloads.samplers.replay import ReplayBuffer, TerminalBatch


def run(config: SamplerConfig, seed: int, log=print) -> list[dict[str, float]]:
    learner = SamplerLearner(config, seed)
    r = config.replay
    forward_buffer = ReplayBuffer(r.capacity, r.prioritization, r.rank_k, seed)
    ls_buffer = ReplayBuffer(r.capacity, r.prioritization, r.rank_k, seed + 1)
    generator = torch.Generator().manual_seed(seed + 2)
    step_size = r.mala_step_size
    replay: TerminalBatch | None = None
    history, t0 = [], time.time()
    while learner.step < config.total_iters:
        until_eval = config.eval_every - learner.step % config.eval_every
        until_ls = r.local_search_every - learner.step % r.local_search_every
        n = min(until_eval, until_ls, config.total_iters - learner.step)
        metrics, terminals = learner.train(n, replay)
        forward_buffer.add(terminals)
        if r.enabled and learner.step % r.local_search_every == 0:
            x0 = torch.from_numpy(forward_buffer.sample(r.local_search_batch).x)
            res = mala(
                learner.target, x0, r.mala_steps, r.mala_burn_in, step_size, r.mala_target_acceptance, generator
            )
            step_size = res.step_size
            ls_buffer.add(TerminalBatch(res.x.numpy(), res.log_reward.numpy()))
            metrics |= {"ls/acceptance_rate": res.acceptance_rate, "ls/step_size": res.step_size}
        if r.enabled and len(ls_buffer) > 0:
            s = learner.step
            chunk = min(r.local_search_every, config.eval_every, config.total_iters - s)
            num_odd = sum(1 for i in range(s, s + chunk) if i % 2 == 1)
            replay = ls_buffer.sample(max(num_odd, 1) * config.batch_size)
        if learner.step % config.eval_every == 0 or learner.step == config.total_iters:
            ev = learner.evaluate()
            row = {"step": learner.step, "time_s": round(time.time() - t0, 1)} | metrics | ev.metrics
            history.append(row)
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    return history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--total-iters", type=int, default=SamplerConfig().total_iters)
    ap.add_argument("--eval-every", type=int, default=SamplerConfig().eval_every)
    ap.add_argument("--loss", choices=["tb", "vargrad"], default="tb")
    ap.add_argument("--batch-size", type=int, default=SamplerConfig().batch_size)
    ap.add_argument("--num-steps", type=int, default=SamplerConfig().num_steps)
    ap.add_argument("--exploration-factor", type=float, default=SamplerConfig().exploration_factor)
    ap.add_argument("--replay", action="store_true", help="replay + local search")
    ap.add_argument("--smoke-test", action="store_true")
    ap.add_argument("--out", default=None, help="write the eval history as JSON here")
    a = ap.parse_args()
    config = SamplerConfig(
        total_iters=a.total_iters,
        eval_every=a.eval_every,
        loss=a.loss,
        batch_size=a.batch_size,
        num_steps=a.num_steps,
        exploration_factor=a.exploration_factor,
        replay=ReplayConfig(enabled=a.replay),
    )
    if a.smoke_test:
        config = config.smoke()
    history = run(config, a.seed)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(history, f, indent=1)


if __name__ == "__main__":
    main()
