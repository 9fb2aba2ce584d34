"""Outsourced trials, by the config's method.

sampler: the diffusion samplers' trial (a learner and a replay-buffer actor running local search;
orchestrator/driver.py: LocalSearchReplayDriver) on the noise-space target. The learner's generator and the buffer's
copy of the target (for local search in z) load the generator cached in the sweep's MLflow store (generators.py;
each fits its own when the sweep's generators could not be listed before the trials). When the sweep's resources
name `reward` workers, r(f(z)) is evaluated on them wherever no gradient is needed (actors/reward.py).
eval/reward_evaluations counts the learner's evaluations of r(f(z)) and the buffer's local search's
(eval/local_search_reward_evaluations of them).

mcmc: MALA or HMC chains in z (workloads/outsourced/mcmc_learner.py), on the sweep's `chains` worker actors when
its resources name them (actors/mcmc_chains.py; the learner then only evaluates), else in the learner. Between two
reports the chains take `eval_every` steps, in sub-chunks of the sweep's train_every for training curves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from actors.mcmc_chains import ChainsRole, PooledChains, chain_shares
from actors.reward import PooledReward, RewardWorker
from orchestrator.driver import (
    LearnerDriver,
    LocalSearchReplayDriver,
    evaluation_artifacts,
    mean_metrics,
    start_workers,
)
from orchestrator.errors import OrchestratorError
from orchestrator.families.outsourced import CHAINS_ROLE, REWARD_ROLE, generators
from orchestrator.families.outsourced.generators import (
    cached_generator,
    cached_generator_learner,
    cached_noise_reward,
    cached_noise_target,
)
from orchestrator.placement import ACTOR_NAMESPACE, TrialContext
from orchestrator.spec import SweepSpec
from orchestrator.tracking import TRAIN_HISTORY_KEY

CHAIN_SEED_OFFSET = 1_000
"""Chain actor i draws its chains from seed + CHAIN_SEED_OFFSET + i (the replay buffer has seed + 1)."""


def prepare(spec: SweepSpec, tracking_uri: str) -> None:
    """Before the trials: every MCMC trial has at least one chain per chain actor; then the generators
    (generators.prepare). A sweep may mix methods: each trial reserves its own method's worker roles only
    (`trial_roles`)."""
    if CHAINS_ROLE in spec.resources.workers:
        actors = spec.resources.workers[CHAINS_ROLE].count
        for config in spec.discrete_configs():
            if config.method == "mcmc" and config.mcmc.num_chains < actors:
                raise OrchestratorError(
                    f"resources.workers.chains: sweep {spec.name} spreads the chains over {actors} actors, but a "
                    f"trial has mcmc.num_chains = {config.mcmc.num_chains}: set mcmc.num_chains >= {actors} or "
                    "fewer chain actors."
                )
    generators.prepare(spec, tracking_uri)


def trial_driver(ctx: TrialContext) -> SamplerDriver | MCMCDriver:
    return (MCMCDriver if ctx.config.method == "mcmc" else SamplerDriver)(ctx)


def generator_model_id(ctx: TrialContext) -> str | None:
    generator = cached_generator(ctx.tracking_uri, ctx.config)
    return None if generator is None else generator.model_id


class SamplerDriver(LocalSearchReplayDriver):
    def __init__(self, ctx: TrialContext):
        model_id = generator_model_id(ctx)
        self.reward_workers, pools = [], {}
        if REWARD_ROLE in ctx.spec.resources.workers:
            build = functools.partial(cached_noise_reward, ctx.config, ctx.tracking_uri, model_id)
            count = ctx.spec.resources.workers[REWARD_ROLE].count
            self.reward_workers, names = start_workers(ctx, REWARD_ROLE, RewardWorker, [(build,)] * count)
            pools["reward_pool"] = PooledReward(names, namespace=ACTOR_NAMESPACE)
        sampler = ctx.config.sampler
        super().__init__(
            ctx,
            cached_generator_learner,
            sampler.replay,
            sampler.batch_size,
            functools.partial(cached_noise_target, ctx.config, ctx.tracking_uri, model_id),
            tracking_uri=ctx.tracking_uri,
            generator_model_id=model_id,
            **pools,
        )

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        metrics, artifacts = super().advance()
        searched = float(ray.get(self.buffer.local_search_evaluations.remote()))
        metrics["eval/local_search_reward_evaluations"] = searched
        metrics["eval/reward_evaluations"] += searched
        if self.reward_workers:  # rows since each worker (re)started: training's, evaluation's, the reference draws'
            metrics["eval/reward_pool_rows"] = float(
                sum(ray.get([w.rows_evaluated.remote() for w in self.reward_workers]))
            )
        return metrics, artifacts

    def actors(self) -> list[Any]:
        return super().actors() + self.reward_workers


class MCMCDriver(LearnerDriver):
    def __init__(self, ctx: TrialContext):
        model_id = generator_model_id(ctx)
        mcmc = ctx.config.mcmc
        self.chain_actors, pools = [], {}
        if CHAINS_ROLE in ctx.spec.resources.workers:
            build = functools.partial(cached_noise_target, ctx.config, ctx.tracking_uri, model_id)
            shares = chain_shares(mcmc.num_chains, ctx.spec.resources.workers[CHAINS_ROLE].count)
            arguments = [
                (build, mcmc.model_copy(update={"num_chains": n}), ctx.seed + CHAIN_SEED_OFFSET + i)
                for i, n in enumerate(shares)
            ]
            self.chain_actors, names = start_workers(ctx, CHAINS_ROLE, ChainsRole, arguments)
            pools["chains"] = PooledChains(names, namespace=ACTOR_NAMESPACE)
        super().__init__(
            ctx, cached_generator_learner, tracking_uri=ctx.tracking_uri, generator_model_id=model_id, **pools
        )

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        sizes = self.next_chunks(self.ctx.train_every or self.config.eval_every)
        train_metrics = ray.get([self.learner.train.options(num_returns=2).remote(n)[0] for n in sizes])
        evaluation = ray.get(self.learner.evaluate.remote())
        ends = [self.step + sum(sizes[: k + 1]) for k in range(len(sizes))]
        self.step = ray.get(self.learner.step.remote())
        metrics = mean_metrics(train_metrics) | evaluation.metrics
        metrics[TRAIN_HISTORY_KEY] = [[end, m] for end, m in zip(ends, train_metrics)]
        return metrics, evaluation_artifacts(evaluation)

    def actors(self) -> list[Any]:
        return super().actors() + self.chain_actors
