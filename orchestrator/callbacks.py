"""Tune callbacks on the driver: every trial's MLflow child run, and a progress line."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from orchestrator.registry import get_family
from orchestrator.spec import SweepSpec
from orchestrator.tracking import (
    IMAGES_KEY,
    LOGGED_IMAGES_TAG,
    NODE_TAG,
    PLACEMENT_KEY,
    STEP_METRIC,
    TRAIN_HISTORY_KEY,
    SweepOutcome,
    SweepTracker,
    TrialOutcome,
    dataset_input,
    flatten,
    provenance_tags,
)

log = logging.getLogger(__name__)

# Bookkeeping keys of a Tune result that are not the workload's metrics.
_TUNE_KEYS = {
    "timestamp",
    "done",
    "training_iteration",
    "trial_id",
    "date",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "config",
    "step",
    "device",
    "should_checkpoint",
    PLACEMENT_KEY,
    IMAGES_KEY,
    TRAIN_HISTORY_KEY,
}


def trial_error_text(trial: Any) -> str:
    """The last lines of the trial's error file: what a user needs to see in MLflow."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    return text.strip()[-4000:] or "the trial failed (no error file)"


class MlflowCallback(Callback):
    """One child run per trial under the sweep's parent run; metrics by workload step. Its writes wait in the
    driver's outbox (`outbox`, a folder) while the store is away."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        parent_run_id: str,
        spec: SweepSpec,
        outbox: str | None = None,
        experiment_id: str | None = None,
    ):
        """With `experiment_id` given, the driver's writes never wait for the store (it is not asked for it)."""
        self.tracking_uri, self.experiment, self.parent_run_id, self.spec = (
            tracking_uri,
            experiment,
            parent_run_id,
            spec,
        )
        self.outbox, self.experiment_id = outbox, experiment_id
        self._tracker: SweepTracker | None = None
        self._placement: dict[str, dict[str, str]] = {}  # trial id -> the placement last tagged
        self._outcome: dict[str, TrialOutcome] = {}  # trial id -> its row of the sweep's table

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; an MLflow client is rebuilt on restore.
        return {**self.__dict__, "_tracker": None}

    @property
    def tracker(self) -> SweepTracker:
        if self._tracker is None:
            self._tracker = SweepTracker(  # (outbox and experiment_id: absent from a callback pickled before them)
                self.tracking_uri, self.experiment, self.__dict__.get("outbox"), self.__dict__.get("experiment_id")
            )
        return self._tracker

    def run_name(self, trial_id: str) -> str | None:
        """The trial's MLflow run name, once its run is opened."""
        row = self.__dict__.get("_outcome", {}).get(trial_id)
        return None if row is None else row.name

    def _run(self, trial: Any) -> str:
        known = self.tracker.run_of_trial(trial.trial_id)
        if known is not None:
            return known
        point = trial.config  # {dotted key: value}
        resolved = self.spec.resolved_config(point)
        params = {  # the searched values first
            "sampled": point,
            "config": resolved.model_dump(mode="json"),
            "seed": self.spec.seed,
            "workload": self.spec.workload,
            "resources": self.spec.resources.model_dump(mode="json"),
        }
        names = {row.name for row in self.__dict__.setdefault("_outcome", {}).values()}
        name = trial_name(point, trial.trial_id, self.spec.tune.num_samples > 1, names)
        tags = provenance_tags(self.spec.source)
        inputs = _inputs(self.spec.workload, resolved)
        run = self.tracker.trial_run(self.parent_run_id, trial.trial_id, name, flatten(params), tags, inputs)
        self._outcome.setdefault(trial.trial_id, TrialOutcome(name, run, "RUNNING", dict(point), {}))
        return run

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self._run(trial)
        self._tag_placement(run_id, trial.trial_id, result)
        tagged_images = self.__dict__.setdefault("_images_tagged", set())  # trial ids whose run has the tag
        if result.get(IMAGES_KEY) and trial.trial_id not in tagged_images:
            self.tracker.set_tags(run_id, {LOGGED_IMAGES_TAG: "true"})
            tagged_images.add(trial.trial_id)
        metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS and not k.startswith(PLACEMENT_KEY + "/")}
        history = result.get(TRAIN_HISTORY_KEY) or []
        if history:  # the training metrics at their own steps; the report keeps only what the history lacks
            history = thinned(history, self.spec.train_every(self.spec.resolved_config(trial.config)))
            self.tracker.log_metric_history(run_id, history)
            metrics = {k: v for k, v in metrics.items() if not any(k in point for _, point in history)}
        metrics[STEP_METRIC] = result.get("time_total_s", 0.0)
        self.tracker.log_metrics(run_id, metrics, step=int(result.get("step", result.get("training_iteration", 0))))
        row = self._outcome.get(trial.trial_id)
        if row is not None:
            row.finals.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def _tag_placement(self, run_id: str, trial_id: str, result: dict) -> None:
        """Tags `orchestrator.node.<role>.<i>` with the node of each actor, when it changed."""
        placement = result.get(PLACEMENT_KEY)
        if not isinstance(placement, dict):  # flattened by Tune: 'placement/learner.0'
            prefix = PLACEMENT_KEY + "/"
            placement = {k[len(prefix) :]: v for k, v in result.items() if k.startswith(prefix)}
        tagged = self.__dict__.setdefault("_placement", {})  # (absent from a callback pickled before it existed)
        if placement and placement != tagged.get(trial_id):
            self.tracker.set_tags(run_id, {NODE_TAG + where: node for where, node in placement.items()})
            tagged[trial_id] = dict(placement)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.end_run(self._run(trial), "FINISHED")
        self._trial_ended(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.end_run(self._run(trial), "FAILED", error=trial_error_text(trial))
        self._trial_ended(trial, "FAILED")

    def _trial_ended(self, trial: Any, status: str) -> None:
        """The parent run's outcome (best trial, its metrics, the trials' table), updated as each trial ends."""
        self._outcome[trial.trial_id].status = status
        outcome = SweepOutcome(self.spec.tune.metric, self.spec.tune.mode, list(self._outcome.values()))
        self.tracker.log_sweep_outcome(self.parent_run_id, outcome)


def _inputs(workload: str, config: Any) -> list[dict[str, Any]]:
    """The trial's data sets as MLflow dataset inputs (`Family.datasets`); a failure is a warning, not a failed
    sweep: they describe the run, the run does not need them."""
    try:
        return [dataset_input(d.name, d.context, d.frame, d.source) for d in get_family(workload).input_data(config)]
    except Exception as error:
        log.warning("the data sets of workload %s were not logged: %s", workload, error)
        return []


def thinned(history: list, every: int) -> list[tuple[int, dict[str, float]]]:
    """The last point of each `every` iterations (and the last point), from [[step, metrics], ...] in step order."""
    points = [(int(step), metrics) for step, metrics in history]
    return [p for i, p in enumerate(points) if i == len(points) - 1 or p[0] // every != points[i + 1][0] // every]


def _short(key: str) -> str:
    """A search-space key as a short tag: its last part's initials ('noise_prob' -> 'np', 'enabled' -> 'e'), or
    the part itself when it is a word of up to 3 letters ('lr')."""
    words = key.rsplit(".", 1)[-1].split("_")
    return words[0] if len(words) == 1 and len(words[0]) <= 3 else "".join(w[:1] for w in words)


def _value(value: Any) -> str:
    """A searched value as a short tag: 3e-4, 0.25, 1 / 0 for flags, a string lowercased with '-' for the rest."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        if value == 0 or 0.01 <= abs(value) < 1e4:
            return f"{value:.3g}"
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")


def trial_name(point: dict[str, Any], trial_id: str, repeats: bool, taken: set[str]) -> str:
    """A run name that tells trials apart by their searched values, e.g. 'tb-lr3e-4-np0': a variant or a string
    value as itself, a number or a flag after its key's initials. With repeated samples (tune.num_samples > 1),
    or when the name is taken, the trial's number follows ('tb-lr3e-4-np0-2')."""
    parts = [_value(v) if k.startswith("variants.") or isinstance(v, str) else _short(k) + _value(v)
             for k, v in point.items()]  # fmt: skip
    name = "-".join(p for p in parts if p) or "trial"
    index = trial_id.rsplit("_", 1)[-1].lstrip("0") or "0"
    return f"{name}-{index}" if repeats or name in taken else name


def trial_done(metrics: dict[str, Any] | None, config: dict[str, Any] | None, spec: SweepSpec | None = None) -> bool:
    """Whether a trial ran to its end, from its last result (`metrics`) and its search-space point (`config`): Tune's
    `done` (its own end, a stop criterion or the scheduler's stop), or, for a trial restored from a snapshot taken
    before its `done` result (a sweep resumed after the trial had finished), its last step at the config's
    `total_iters` (every family's config has it: the step budget) or the sweep's stop. A trial that Tune terminated
    when the sweep was interrupted has neither."""
    metrics = metrics or {}
    if metrics.get("done"):
        return True
    if spec is None or not metrics:
        return False
    most = spec.tune.stop.training_iteration
    if most is not None and metrics.get("training_iteration", 0) >= most:
        return True
    return metrics.get("step", -1) >= spec.resolved_config(config or {}).total_iters


class ProgressCallback(Callback):
    """Trials done / running / waiting / stopped / failed and the best metric so far, at most every `every_s`.
    A trial Tune terminated without its end (the sweep was interrupted) counts as stopped, not done."""

    def __init__(
        self,
        metric: str,
        mode: str,
        every_s: float = 10.0,
        spec: SweepSpec | None = None,
        run_name: Callable[[str], str | None] | None = None,
    ):
        """`run_name(trial_id)`: the name a trial has in MLflow (`MlflowCallback.run_name`), shown for the best."""
        self.metric, self.mode, self.every_s, self.spec, self.run_name = metric, mode, every_s, spec, run_name
        self.started = time.monotonic()
        self.last_print = 0.0
        self.best: tuple[float, str, int] | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
            if better:
                run_name = self.__dict__.get("run_name")  # (absent from a callback pickled before it existed)
                name = (run_name(trial.trial_id) if run_name else None) or str(trial)
                self.best = (float(value), name, int(result.get("step", 0)))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self.last_print >= self.every_s:
            self.last_print = now
            self.print_line(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print_line(trials)

    def print_line(self, trials: list) -> None:
        count = dict.fromkeys(("TERMINATED", "RUNNING", "ERROR", "PENDING", "PAUSED", "STOPPED"), 0)
        spec = self.__dict__.get("spec")  # (absent from a callback pickled before it existed)
        for trial in trials:
            status = trial.status
            if status == "TERMINATED" and not trial_done(trial.last_result, trial.config, spec):
                status = "STOPPED"
            count[status] = count.get(status, 0) + 1
        stopped = f"{count['STOPPED']} stopped, " if count["STOPPED"] else ""
        best = "none yet" if self.best is None else f"{self.best[0]:.4g} ({self.best[1]}, step {self.best[2]})"
        print(
            f"[{time.monotonic() - self.started:6.0f}s] trials: {count['TERMINATED']} done, {count['RUNNING']} "
            f"running, {count['PENDING'] + count['PAUSED']} waiting, {stopped}{count['ERROR']} failed | best "
            f"{self.metric}: {best}",
            file=sys.stderr,
            flush=True,
        )
