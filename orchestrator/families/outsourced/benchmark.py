"""Outsourced sampler speed: noise-space sampler iterations per second, reward evaluations per second (r(f(z)) with
and without its gradient) and MCMC steps per second, in process and through Ray actors, for one generator.

    python -m orchestrator.families.outsourced.benchmark [--generator vae_digits] [--iters 20] [--chains 300]
                                                         [--actors 2] [--load-generator FILE] [--smoke]

    in process (one torch thread):
    sampler     OutsourcedLearner.train(1) (forward iterations at the config's batch and T): the median seconds over
                `--iters` after 2 untimed, as iterations and reward evaluations per second
    reward      NoiseSpaceTarget.log_reward on a batch of the sampler's size: log N(z) + beta log r(f(z)), without
                gradient (what the sampler pays) and with grad log R (what MALA and HMC pay), as evaluations per s
    MCMC        `--chains` MALA chains in one batch (one chain actor's work) for `--mcmc-steps` steps: steps per
                second of the batch, and chain-steps (evaluations) per second
    through actors (a local Ray of `--actors` CPUs, one per actor, a thread each; --actors 0 skips them):
    pool        the same batch's r(f(z)) through `--actors` reward actors (actors/reward.py, PooledReward), and the
                sampler's iterations with its values taken from them
    chains      the `--chains` chains split over `--actors` chain actors (actors/mcmc_chains.py), `--mcmc-steps`
                steps: steps per second, and chain-steps per second per actor

How to read it: `reward share` is the part of a sampler iteration spent in r(f(z)) (batch / reward rate over the
iteration's seconds); the rest is the policy's T steps and the backward pass. A DDIM generator makes r(f(z)) cost K
UNet calls, so there the share is high and the pool pays off once it has the cores; with the VAE it is small and
shipping z to the actors costs more than it saves. On this machine's 2 cores the driver's process shares them with
the actors, so 2 actors cannot reach twice one. The generator is fitted first unless loaded
(`run_local --save-generator`); fitting is not timed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import get_args

import torch

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.learner import OutsourcedLearner, generator_state, noise_space_problem
from workloads.outsourced.noise_target import NoiseSpaceTarget
from workloads.samplers.local_search import mala


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The median wall time of `repeats` calls of run() after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(learner: OutsourcedLearner, iters: int, chains: int, mcmc_steps: int) -> dict[str, float]:
    target, batch = learner.target, learner.sampler.config.batch_size
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(batch, target.dim, generator=generator)
    iteration_s = median_seconds(lambda: learner.train(1), iters, warmup=2)
    with torch.no_grad():
        reward_s = median_seconds(lambda: target.log_reward(z), iters)
    grad_s = median_seconds(lambda: torch.autograd.grad(target.log_reward(z.requires_grad_()).sum(), z), iters)
    z_chains = torch.randn(chains, target.dim, generator=generator)
    mcmc_s = median_seconds(lambda: mala(target, z_chains, mcmc_steps, 0, 0.05, 0.574, generator), 3)
    return {
        "sampler_iterations_per_s": 1 / iteration_s,
        "sampler_reward_evaluations_per_s": batch / iteration_s,
        "reward_evaluations_per_s": batch / reward_s,
        "reward_share_of_an_iteration": reward_s / iteration_s,
        "reward_evaluations_with_grad_per_s": batch / grad_s,
        "mcmc_steps_per_s": mcmc_steps / mcmc_s,
        "mcmc_chain_steps_per_s": chains * mcmc_steps / mcmc_s,
    }


def measure_actors(
    learner: OutsourcedLearner, state: dict, iters: int, chains: int, mcmc_steps: int, actors: int
) -> dict[str, float]:
    """The pool and chain-actor figures on a local Ray of `actors` CPUs (started and shut down here)."""
    import ray

    from actors.mcmc_chains import ChainsRole, PooledChains, chain_shares
    from actors.reward import PooledReward, RewardWorker
    from workloads.outsourced.learner import NoiseReward

    config, target, batch = learner.config, learner.target, learner.sampler.config.batch_size
    ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        build_reward = functools.partial(NoiseReward, config, state)
        workers = [ray.remote(RewardWorker).options(num_cpus=1).remote(build_reward) for _ in range(actors)]
        pool = PooledReward(workers)
        z = torch.randn(batch, target.dim, generator=torch.Generator().manual_seed(0))
        labels = torch.zeros(batch, dtype=torch.long)
        pool_s = median_seconds(lambda: pool.log_r(z, labels), iters)
        pooled = OutsourcedLearner(config, seed=0, generator_state=state, reward_pool=pool)
        pooled_iteration_s = median_seconds(lambda: pooled.train(1), iters, warmup=2)
        for worker in workers:  # their CPUs go to the chain actors
            ray.kill(worker)
        build_target = functools.partial(noise_target_of, config, state)
        chain_actors = [
            ray.remote(ChainsRole)
            .options(num_cpus=1)
            .remote(build_target, config.mcmc.model_copy(update={"num_chains": n}), i)
            for i, n in enumerate(chain_shares(chains, actors))
        ]
        pooled_chains = PooledChains(chain_actors)
        chains_s = median_seconds(lambda: pooled_chains.advance(mcmc_steps), 3)
    finally:
        ray.shutdown()
    return {
        "pool_reward_evaluations_per_s": batch / pool_s,
        "pool_sampler_iterations_per_s": 1 / pooled_iteration_s,
        "chain_actors_mcmc_steps_per_s": mcmc_steps / chains_s,
        "chain_actors_chain_steps_per_s_per_actor": chains * mcmc_steps / chains_s / actors,
    }


def noise_target_of(config: OutsourcedConfig, state: dict) -> NoiseSpaceTarget:
    """A chain actor's target (a picklable builder)."""
    return noise_space_problem(config, state)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    generators = get_args(OutsourcedConfig.model_fields["generator"].annotation)
    ap.add_argument("--generator", choices=generators, default="vae_digits")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--chains", type=int, default=300)
    ap.add_argument("--mcmc-steps", type=int, default=10)
    ap.add_argument("--actors", type=int, default=2, help="reward / chain actors (0: in process only)")
    ap.add_argument("--load-generator", help="a generator saved by run_local --save-generator (skips the fit)")
    ap.add_argument("--smoke", action="store_true", help="the smoke config: tiny generator, T = 10, batch 64")
    a = ap.parse_args()
    torch.set_num_threads(1)
    config = OutsourcedConfig(generator=a.generator, reference_samples=2)
    if a.smoke:
        config = config.smoke().model_copy(update={"reference_samples": 2})
    state = torch.load(a.load_generator, weights_only=True) if a.load_generator else generator_state(config)
    learner = OutsourcedLearner(config, seed=0, generator_state=state)
    figures = measure(learner, a.iters, a.chains, a.mcmc_steps)
    if a.actors > 0:
        figures |= measure_actors(learner, state, a.iters, a.chains, a.mcmc_steps, a.actors)
        figures["pool_speed_up_of_a_sampler_iteration"] = (
            figures["pool_sampler_iterations_per_s"] / figures["sampler_iterations_per_s"]
        )
    sampler = learner.sampler.config
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{a.generator}: batch {sampler.batch_size}, T = {sampler.num_steps}, z {learner.target.dim}-d, "
          f"{a.chains} MALA chains, {a.actors} actors; load average {load}")  # fmt: skip
    for name, value in figures.items():
        print(f"  {name:42s} {value:12.3f}")
    print(json.dumps({"generator": a.generator} | {k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
