"""Diffusion sampler trial: a Learner and a ReplayBuffer actor, batches passed as ObjectRefs.

Between two reports the learner trains `eval_every` iterations in sub-chunks of
`replay.local_search_every`. Each sub-chunk's terminal states go to the buffer through a
bounded channel; with replay on, each sub-chunk trains its odd iterations on a batch sampled
from the buffer, and a local-search round runs on the buffer actor while the learner trains.

Each round is told the learner step at its start (the end of the sub-chunk whose states it may
search); its results keep it, and the learner reports train/replay_staleness_iters, the iterations
between that step and the one that trains on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from actors.channel import BoundedInFlight
from actors.replay_buffer import ReplayBufferRole
from orchestrator.driver import LearnerBufferDriver, mean_metrics, start_learner
from orchestrator.placement import TrialContext
from workloads.samplers.config import SamplerConfig
from workloads.samplers.learner import SamplerLearner

MAX_IN_FLIGHT = 2


class SamplerDriver(LearnerBufferDriver):
    def __init__(
        self,
        ctx: TrialContext,
        learner_class: Callable[..., Any] = SamplerLearner,
        buffer_target: str | Callable[[], Any] | None = None,
        **learner_kwargs: Any,
    ):
        """`learner_class`, `learner_kwargs`: as `start_learner` takes them; `buffer_target`: the buffer's target
        (ReplayBufferRole), the config's named one by default. A family whose learner wraps a SamplerLearner
        (outsourced) passes its own and overrides `sampler`."""
        self.ctx = ctx
        self.config = ctx.config
        self.learner = start_learner(ctx, learner_class, **learner_kwargs)
        target = self.config.target if buffer_target is None else buffer_target
        self.buffer = (
            ray.remote(ReplayBufferRole)
            .options(**ctx.actor_options("replay_buffer"))
            .remote(self.sampler.replay, target, ctx.seed + 1, ctx.cpus("replay_buffer"))
        )
        self.to_buffer = BoundedInFlight(MAX_IN_FLIGHT)
        self.step = 0
        self.device = ray.get(self.learner.device.remote())

    @property
    def sampler(self) -> SamplerConfig:
        """The sampler's config (replay, batch size); its eval_every and total_iters are the trial config's."""
        return self.config

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        """Train up to the next evaluation, evaluate; return metrics and artifact writers."""
        cfg = self.sampler
        # With replay, local search runs between sub-chunks; without, sub-chunks only give training curves points.
        sizes = self.next_chunks(
            cfg.replay.local_search_every if cfg.replay.enabled else self.ctx.train_every or cfg.eval_every
        )
        metric_refs, search_refs = [], []
        replay = self._replay_batch(sizes[0])
        step = self.step
        for k, n in enumerate(sizes):
            metrics_ref, states_ref = self.learner.train.options(num_returns=2).remote(n, replay)
            metric_refs.append(metrics_ref)
            step += n
            self.to_buffer.submit(self.buffer.add.remote, states_ref)
            if cfg.replay.enabled:
                # The next replay batch is queued before this round's local search, so the learner
                # trains sub-chunk k+1 (from `step` on) while the search runs; its results serve
                # sub-chunk k+2 on.
                replay = self._replay_batch(sizes[k + 1]) if k + 1 < len(sizes) else None
                search_refs.append(self.buffer.local_search.remote(step))
        train_metrics = ray.get(metric_refs)
        metrics = mean_metrics(train_metrics + [m for m in ray.get(search_refs) if m])
        ends = [self.step + sum(sizes[: k + 1]) for k in range(len(sizes))]
        return self.evaluate_into(metrics, train_metrics, ends)

    def _replay_batch(self, num_iters: int) -> Any:
        """States for the odd (backward-trajectory) iterations of the next `num_iters`."""
        if not self.sampler.replay.enabled:
            return None
        return self.buffer.sample.remote(math.ceil(num_iters / 2) * self.sampler.batch_size)

    def actors(self) -> list[Any]:
        return [self.learner, self.buffer]
