"""RTB trial: a learner (the posterior, its prior loaded from the sweep's MLflow store) and a replay-buffer actor of
the posterior's own samples, batches passed as ObjectRefs.

Between two reports the learner trains `eval_every` iterations in sub-chunks (`replay.draw_every` with replay on).
Each sub-chunk's forward samples, with their log r, go to the buffer through a bounded channel; with replay on,
each sub-chunk trains its odd iterations on Brownian bridges to one prioritized draw from the buffer (none while
the buffer is empty). The last evaluation also writes the posterior (`posterior.pt`: the learner's state, prior
included).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import ray
import torch

from actors.channel import BoundedInFlight
from actors.sample_buffer import SampleBufferRole
from orchestrator.driver import LearnerBufferDriver, mean_metrics, start_learner
from orchestrator.families.rtb.priors import CachedPriorLearner, cached_prior
from orchestrator.placement import TrialContext

MAX_IN_FLIGHT = 2


class RTBDriver(LearnerBufferDriver):
    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.config = ctx.config
        self.step = 0
        prior = cached_prior(ctx.tracking_uri, self.config)
        self.learner = start_learner(
            ctx,
            CachedPriorLearner,
            tracking_uri=ctx.tracking_uri,
            prior_model_id=None if prior is None else prior.model_id,
        )
        self.device = ray.get(self.learner.device.remote())
        replay = self.config.replay
        self.buffer = (
            ray.remote(SampleBufferRole)
            .options(**ctx.actor_options("replay_buffer"))
            .remote(replay.capacity, replay.prioritization, replay.rank_k, ctx.seed + 1)
        )
        self.to_buffer = BoundedInFlight(MAX_IN_FLIGHT)

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        """Train up to the next evaluation, evaluate; return metrics and artifact writers."""
        cfg = self.config
        metric_refs, ends = [], []
        for n in self.next_chunks(
            cfg.replay.draw_every if cfg.replay.enabled else self.ctx.train_every or cfg.eval_every
        ):
            replay = self.buffer.sample.remote(math.ceil(n / 2) * cfg.batch_size) if cfg.replay.enabled else None
            metrics_ref, samples_ref = self.learner.train.options(num_returns=2).remote(n, replay)
            metric_refs.append(metrics_ref)
            if cfg.replay.enabled:
                self.to_buffer.submit(self.buffer.add.remote, samples_ref)
            ends.append((ends[-1] if ends else self.step) + n)
        train_metrics = ray.get(metric_refs)
        metrics, artifacts = self.evaluate_into(mean_metrics(train_metrics), train_metrics, ends)
        if self.finished:
            posterior = ray.get(self.learner.get_state.remote())
            artifacts["posterior.pt"] = lambda path: torch.save(posterior, path)
        return metrics, artifacts

    def actors(self) -> list:
        return [self.learner, self.buffer]
