"""Outsourced sampler trial: one learner actor, its generator loaded from the sweep's MLflow store (generators.py;
fitted inside it when the sweep's generators could not be listed before the trials).

Between two reports the learner trains `eval_every` iterations, in sub-chunks of the trial's `train_every` when the
sweep sets one (points of the training curves), then evaluates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from orchestrator.driver import LearnerDriver, evaluation_artifacts, mean_metrics
from orchestrator.families.outsourced.generators import cached_generator, cached_generator_learner
from orchestrator.placement import TrialContext
from orchestrator.tracking import TRAIN_HISTORY_KEY


class OutsourcedDriver(LearnerDriver):
    def __init__(self, ctx: TrialContext):
        generator = cached_generator(ctx.tracking_uri, ctx.config)
        model_id = None if generator is None else generator.model_id
        super().__init__(ctx, cached_generator_learner, tracking_uri=ctx.tracking_uri, generator_model_id=model_id)

    def advance(self) -> tuple[dict[str, Any], dict[str, Callable[[Path], None]]]:
        """Train up to the next evaluation, evaluate; return metrics and artifact writers."""
        chunk = min(self.config.eval_every, self.config.total_iters - self.step)
        sub_chunk = self.ctx.train_every or chunk
        sizes = [min(sub_chunk, chunk - start) for start in range(0, chunk, sub_chunk)]
        chunk_metrics = ray.get([self.learner.train.options(num_returns=2).remote(n)[0] for n in sizes])
        evaluation = ray.get(self.learner.evaluate.remote())
        ends = [self.step + sum(sizes[: k + 1]) for k in range(len(sizes))]
        self.step = ray.get(self.learner.step.remote())
        metrics = mean_metrics(chunk_metrics) | evaluation.metrics
        metrics[TRAIN_HISTORY_KEY] = [[end, m] for end, m in zip(ends, chunk_metrics)]
        return metrics, evaluation_artifacts(evaluation)
