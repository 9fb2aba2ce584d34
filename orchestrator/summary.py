"""Sweep-end summaries: figures and tables over a sweep's finished trials, logged to its parent MLflow run.

A workload opts in with `Family.summary = "module:function"`; the function takes the finished trials
(`tracking.TrialHistory`: params and metric histories read back from MLflow, so a resumed sweep summarizes every
trial, old and new) and returns {file name: matplotlib Figure, or text}. A summary that fails is a warning and a
tag on the parent run, never a failed sweep: the trials' results are in MLflow either way. It is made when its
outbox write is sent (`SweepTracker.log_summary`): after the trials' writes, however long the store was away.
"""

from __future__ import annotations

import logging
import statistics
import traceback

from orchestrator.registry import get_family
from orchestrator.tracking import StoreUnreachable, SweepTracker, TrialHistory

log = logging.getLogger(__name__)


def final(trial: TrialHistory, metric: str) -> float | None:
    """The last logged value of a trial's metric, None if it never logged it."""
    history = trial.metrics.get(metric)
    return history[-1][1] if history else None


def mean_std(values: list[float], mean_format: str = ".3f", std_format: str = ".3f") -> str:
    """'mean ± sample standard deviation (n - 1)' over seeds; the mean alone for one seed, '-' for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], mean_format)
    return f"{format(statistics.fmean(values), mean_format)} ± {format(statistics.stdev(values), std_format)}"


SUMMARY_DIR = "summary"
"""Artifact folder of the parent run that the summary's files go to."""
ERROR_TAG = "orchestrator.summary_error"


def log_sweep_summary(tracker: SweepTracker, workload: str, parent_run_id: str) -> list[str]:
    """Run the workload's summary over the sweep's finished trials; returns the artifact paths logged."""
    summarize = get_family(workload).load_summary()
    if summarize is None:
        return []
    logged = []
    try:
        trials = tracker.trial_histories(parent_run_id)
        if not trials:
            return []
        for name, item in summarize(trials).items():
            path = f"{SUMMARY_DIR}/{name}"
            if isinstance(item, str):
                tracker.log_text(parent_run_id, item, path)
            else:
                tracker.log_figure(parent_run_id, item, path)
            logged.append(path)
    except StoreUnreachable:  # the summary's outbox write waits for the store and makes it later
        raise
    except Exception as error:  # a summary must not fail a finished sweep
        log.warning("sweep summary of workload %s failed: %s", workload, error)
        tracker.set_tags(parent_run_id, {ERROR_TAG: traceback.format_exc()[-5000:]})
    return logged
