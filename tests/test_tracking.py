"""The MLflow side of a sweep, against a real SQLite store (no Ray)."""

from __future__ import annotations

import json

from orchestrator.tracking import STEP_METRIC, SweepTracker, flatten


def test_a_reopened_trial_run_logs_each_step_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = SweepTracker(uri, "dedupe", tmp_path / "outbox")  # a resumed sweep keeps its outbox folder
    parent = first.start_parent("dedupe", {"name": "dedupe"})
    run = first.trial_run(parent, "trial_a", "trial_a", {"lr": 0.1})
    for step in (20, 40, 60):
        first.log_metrics(run, {"loss": float(step), STEP_METRIC: step / 10}, step=step)
    run_id = first.run_id(run)

    # The sweep is resumed from a checkpoint at step 40: the trial repeats step 60, then goes on.
    resumed = SweepTracker(uri, "dedupe", tmp_path / "outbox")
    run = resumed.trial_run(parent, "trial_a", "trial_a", {"lr": 0.1})
    assert resumed.run_id(run) == run_id
    for step in (60, 80):
        resumed.log_metrics(run, {"loss": float(step) + 0.5, STEP_METRIC: step / 10}, step=step)

    history = resumed.client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (20, 20.0),
        (40, 40.0),
        (60, 60.0),
        (80, 80.5),
    ]
    # A new trial in the same sweep is not affected by another run's mark.
    other = resumed.trial_run(parent, "trial_b", "trial_b", {"lr": 0.2})
    resumed.log_metrics(other, {"loss": 1.0, STEP_METRIC: 0.1}, step=20)
    assert len(resumed.client.get_metric_history(resumed.run_id(other), "loss")) == 1


def test_a_mapping_keyed_by_free_text_is_one_json_param(tmp_path):
    """Variant names such as 'TB + Expl.' are not valid MLflow param names: their mapping is logged whole."""
    sweep = {"name": "s", "variants": {"method": {"TB + Expl.": {"loss": "tb"}}}, "tune": {"num_samples": 3}}
    flat = flatten(sweep)
    assert flat == {"name": "s", "variants.method": {"TB + Expl.": {"loss": "tb"}}, "tune.num_samples": 3}
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "variants")
    parent = tracker.start_parent("s", sweep)
    params = tracker.client.get_run(parent).data.params
    assert json.loads(params["variants.method"]) == {"TB + Expl.": {"loss": "tb"}}
