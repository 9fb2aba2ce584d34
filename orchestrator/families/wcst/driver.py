"""WCST-ML trial: one Learner actor trains one model (architecture, cue set, seed) on the diagonal set, or forced
onto one cue, one epoch per report.

    every report:  train one epoch -> accuracies on the diagonal and on each cue's off-diagonal test set
    last report:   + the flatness curve, flatness/loss_increase/r_<r> (workloads/wcst/flatness.py)

Nothing else runs beside the learner: the data are rendered once inside it, and a trial is small enough for one
CPU (or a GPU's fraction); a sweep gets its parallelism from many trials.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ray

from orchestrator.driver import LearnerDriver
from orchestrator.placement import TrialContext
from workloads.wcst.learner import WcstLearner


class WcstDriver(LearnerDriver):
    def __init__(self, ctx: TrialContext):
        super().__init__(ctx, WcstLearner)

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        train_ref, _ = self.learner.train.options(num_returns=2).remote(1)
        evaluation_ref = self.learner.evaluate.remote()  # queued behind the epoch on the same actor
        metrics = {**ray.get(train_ref), **ray.get(evaluation_ref).metrics}  # the last one has the flatness curve
        self.step = ray.get(self.learner.step.remote())
        return metrics, {}
