"""Trains the outsourced sampler in one process, no Ray, no MLflow: the generator (and the reward's classifier) is
fitted first (or loaded with --load-generator); each evaluation prints one JSON line.

    OMP_NUM_THREADS=1 python -m workloads.outsourced.run_local --iters 6000
    ... run_local --set 'generator="vae_digits"' --sampler 'replay={"enabled": true, "share": 0.3}'
    ... run_local --set 'generator="vae_digits"' --mcmc num_chains=2000 num_steps=400     # MCMC in z instead
    python -m workloads.outsourced.run_local --smoke-test
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from pydantic import ValidationError

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.learner import OutsourcedLearner, generator_state
from workloads.outsourced.mcmc import MCMCConfig, Snapshot, run_chains
from workloads.samplers.replay import ReplayBuffer

SHOWN = (
    "eval/reward_evaluations",
    "eval/tv_to_exact",
    "eval/tv_to_target",
    "eval/w2_data",
    "eval/mean_log_r",
    "eval/exact_mean_log_r",
    "eval/fd",
    "eval/exact_fd",
    "eval/target_accuracy",
    "eval/class_coverage",
    "eval/delta_log_z",
    "eval/delta_log_z_rw",
    "eval/elbo",
    "eval/log_z_mc",
    "eval/log_z_learned",
)
"""The metrics each evaluation line shows."""


REPLAY_REFRESH = 50
"""With sampler.replay.enabled: iterations between refills of the replay batch from the buffer of forward terminals
(prioritized as replay.prioritization says; no local search here). Replayed states cost no reward evaluation."""


def print_row(row: dict, metrics: dict[str, float]) -> None:
    shown = {k.removeprefix("eval/"): round(metrics[k], 4) for k in SHOWN if k in metrics}
    print(json.dumps(row | shown), flush=True)


def print_snapshot(learner: OutsourcedLearner, snapshot: Snapshot, t0: float) -> None:
    """A chain snapshot, evaluated in data space as the sampler's samples are (one sample per chain)."""
    metrics, _, _ = learner.evaluate_noise(snapshot.z, f"MCMC step {snapshot.step}")
    row = {"mcmc_step": snapshot.step, "time_s": round(time.time() - t0, 1)}
    row |= {"acceptance": round(snapshot.acceptance_rate, 3), "step_size": round(snapshot.step_size, 4)}
    print_row(row, metrics | {"eval/reward_evaluations": snapshot.reward_evaluations * len(snapshot.z)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, help="total_iters")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="a config field, e.g. beta=2")
    ap.add_argument("--sampler", nargs="*", default=[], metavar="KEY=JSON", help="a sampler field, e.g. num_steps=20")
    ap.add_argument("--load-generator", help="a generator saved by --save-generator (skips the fit)")
    ap.add_argument("--save-generator", help="save the fitted generator here (torch.save)")
    ap.add_argument(
        "--mcmc",
        nargs="*",
        metavar="KEY=JSON",
        help='run MCMC chains in z instead (the baseline), e.g. method="mala" num_chains=2000; see mcmc.MCMCConfig',
    )
    ap.add_argument("--smoke-test", action="store_true")
    a = ap.parse_args()
    fields = {key: json.loads(value) for key, value in (item.split("=", 1) for item in a.set)}
    sampler = {key: json.loads(value) for key, value in (item.split("=", 1) for item in a.sampler)}
    if a.iters is not None:
        fields["total_iters"] = a.iters
    try:
        config = OutsourcedConfig(**fields)
        config = config.model_copy(
            update={"sampler": config.sampler.model_validate(config.sampler.model_dump() | sampler)}
        )
    except ValidationError as error:
        ap.error(str(error))
    if a.smoke_test:
        config = config.smoke()
    t0 = time.time()
    state = torch.load(a.load_generator, weights_only=True) if a.load_generator else generator_state(config)
    if a.save_generator:
        torch.save(state, a.save_generator)
    learner = OutsourcedLearner(config, a.seed, generator_state=state)
    print(json.dumps({"generator_fit": learner.generator_fit}), flush=True)
    if a.mcmc is not None:
        mcmc = MCMCConfig(**{key: json.loads(value) for key, value in (item.split("=", 1) for item in a.mcmc)})
        run_chains(learner.target, mcmc, a.seed, lambda snapshot: print_snapshot(learner, snapshot, t0))
        return
    r = config.sampler.replay
    buffer = ReplayBuffer(r.capacity, r.prioritization, r.rank_k, a.seed) if r.enabled else None
    while True:
        metrics = learner.evaluate().metrics
        row = {"step": learner.step, "time_s": round(time.time() - t0, 1)}
        print_row(row, metrics | {"eval/reward_evaluations": learner.reward_evaluations})
        if learner.step >= config.total_iters:
            return
        until_eval = min(config.eval_every, config.total_iters - learner.step)
        for start in range(0, until_eval, REPLAY_REFRESH):
            n = min(REPLAY_REFRESH, until_eval - start)
            replay = buffer.sample(n * config.sampler.batch_size) if buffer is not None and len(buffer) else None
            _, terminals = learner.train(n, replay)
            if buffer is not None:
                buffer.add(terminals)


if __name__ == "__main__":
    main()
