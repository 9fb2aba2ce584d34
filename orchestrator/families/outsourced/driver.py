"""Outsourced sampler trial: the diffusion samplers' trial (a learner and a replay-buffer actor running local
search; orchestrator/driver.py: LocalSearchReplayDriver) on the noise-space target. The learner's generator and the
buffer's copy of the target (for local search in z) load the generator cached in the sweep's MLflow store
(generators.py; each fits its own when the sweep's generators could not be listed before the trials).

eval/reward_evaluations counts the learner's evaluations of r(f(z)) and the buffer's local search's
(eval/local_search_reward_evaluations of them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import ray

from orchestrator.driver import LocalSearchReplayDriver
from orchestrator.families.outsourced.generators import (
    cached_generator,
    cached_generator_learner,
    cached_noise_target,
)
from orchestrator.placement import TrialContext


class OutsourcedDriver(LocalSearchReplayDriver):
    def __init__(self, ctx: TrialContext):
        generator = cached_generator(ctx.tracking_uri, ctx.config)
        model_id = None if generator is None else generator.model_id
        sampler = ctx.config.sampler
        super().__init__(
            ctx,
            cached_generator_learner,
            sampler.replay,
            sampler.batch_size,
            functools.partial(cached_noise_target, ctx.config, ctx.tracking_uri, model_id),
            tracking_uri=ctx.tracking_uri,
            generator_model_id=model_id,
        )

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        metrics, artifacts = super().advance()
        searched = float(ray.get(self.buffer.local_search_evaluations.remote()))
        metrics["eval/local_search_reward_evaluations"] = searched
        metrics["eval/reward_evaluations"] += searched
        return metrics, artifacts
