"""What a sweep's parent run shows in the MLflow UI: its description params, trial names from the searched
values, and the outcome table with the best trial, on a real SQLite store."""

from __future__ import annotations

from functools import partial

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from orchestrator.callbacks import trial_name
from orchestrator.spec import load_sweep
from orchestrator.tracking import SweepOutcome, SweepTracker, TrialOutcome, flatten, provenance_tags
from tests.conftest import ROOT


def test_parent_params_keep_fixed_config_and_the_search_space():
    spec = load_sweep(ROOT / "sweeps" / "samplers_benchmark.yaml")
    params = flatten(spec.description())
    searched = spec.searched_paths()
    assert "loss" in searched and "target" in searched  # set by the method and target variants
    assert not any(key.removeprefix("config.") in searched for key in params if key.startswith("config."))
    assert params["config.batch_size"] == spec.config.batch_size and params["workload"] == "samplers"
    assert params["search_space.variants.method"].startswith('{"grid": ["PIS"')
    assert params["tune.metric"] == "eval/delta_log_z_rw"


def test_trial_names_tell_trials_apart():
    point = {"variants.method": "TB + Expl. + LS", "lr": 0.0003, "noise_prob": 0.0, "replay.enabled": True}
    assert trial_name(point, "ab12c_00003", False, set()) == "tb-expl-ls-lr3e-4-np0-e1"
    assert trial_name({"mu": 0.25, "num_members": 20, "gamma": 1e5}, "x_0", False, set()) == "mu0.25-nm20-g1e5"
    assert trial_name({"lr": 3e-5}, "ab12c_00003", False, set()) == "lr3e-5"
    assert trial_name({"loss": "tb"}, "ab12c_00003", True, set()) == "tb-3"  # repeated samples: the trial number
    assert trial_name({"loss": "tb"}, "ab12c_00004", False, {"tb"}) == "tb-4"  # a name taken: the trial number
    assert trial_name({}, "ab12c_00000", False, set()) == "trial"


def _outcome() -> SweepOutcome:
    rows = [
        TrialOutcome("tb", "r1", "FINISHED", {"variants.method": "TB"}, {"eval/jsd": 0.3, "train/loss": 2.0}),
        TrialOutcome("vg", "r2", "FINISHED", {"variants.method": "VG"}, {"eval/jsd": 0.1, "train/loss": 3.0}),
        TrialOutcome("db", "r3", "FAILED", {"variants.method": "DB"}, {"eval/jsd": 0.01}),
        TrialOutcome("pis", "r4", "RUNNING", {"variants.method": "PIS"}, {}),
    ]
    return SweepOutcome("eval/jsd", "min", rows)


def test_the_best_is_the_finished_trial_with_the_best_final_metric():
    outcome = _outcome()
    assert outcome.best().name == "vg"  # the failed trial's lower figure does not count
    assert SweepOutcome("eval/jsd", "max", outcome.rows).best().name == "tb"
    assert SweepOutcome("eval/missing", "min", outcome.rows).best() is None


def test_the_outcome_lands_on_the_parent_run(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "outcome")
    parent = tracker.start_parent("outcome", {"name": "outcome"}, tags=provenance_tags(ROOT / "sweeps"))
    tracker.log_sweep_outcome(parent, _outcome())
    client = MlflowClient(tracker.tracking_uri)
    run = client.get_run(parent)
    assert run.data.tags["orchestrator.best_trial"] == "vg" and run.data.tags["orchestrator.best_run_id"] == "r2"
    assert run.data.metrics == {"eval/jsd": 0.1, "train/loss": 3.0}
    note = run.data.tags["mlflow.note.content"]
    assert f"#/experiments/{tracker.experiment_id}/runs/r2" in note and "| db | FAILED | DB | 0.01 |" in note
    table = pq.read_table(client.download_artifacts(parent, "trials.parquet", str(tmp_path))).to_pydict()
    assert table["trial"] == ["tb", "vg", "db", "pis"] and table["eval/jsd"] == [0.3, 0.1, 0.01, None]
    assert table["variants.method"] == ["TB", "VG", "DB", "PIS"] and table["status"][2] == "FAILED"
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40


def test_figures_are_logged_as_step_keyed_images_and_tables_with_a_preview(tmp_path):
    """A trial's PNGs land in its evaluation folder and, named as MLflow's log_image(key, step) names them, under
    images/, so the UI shows them with a step slider; the trial writes files only."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from orchestrator.tracking import TrialArtifacts

    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "images")
    run_id = tracker.run_id(tracker.trial_run(tracker.start_parent("images", {"name": "images"}), "t_00000", "t", {}))
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    artifacts = TrialArtifacts(tracker.tracking_uri, tracker.experiment_id, "t_00000")
    for step in (10, 20):
        samples = pa.table({"x": list(range(150)), "log_pf": [float(-i) for i in range(150)]})
        files = {"samples.png": figure.savefig, "samples.parquet": partial(pq.write_table, samples)}
        assert artifacts.log_files(files, f"eval/step_{step:07d}", step=step) == 1
    names = [
        f.path.removeprefix("images/") for f in MlflowClient(tracker.tracking_uri).list_artifacts(run_id, "images")
    ]
    pngs = sorted(n for n in names if n.endswith(".png"))
    assert [n.split("+")[:3] for n in pngs] == [["samples", "step", "10"], ["samples", "step", "20"]]
    assert sum(n.endswith("+compressed.webp") for n in names) == 2
    # The UI has no Parquet viewer: its first rows beside it as CSV, which the UI shows as a table.
    head = MlflowClient(tracker.tracking_uri).download_artifacts(
        run_id, "eval/step_0000020/samples.head.csv", str(tmp_path)
    )
    assert pd.read_csv(head).equals(samples.slice(0, 100).to_pandas())


def test_history_thinning_keeps_the_last_point_of_each_interval():
    from orchestrator.callbacks import thinned

    history = [[s, {"train/loss": float(s)}] for s in range(10, 101, 10)]
    assert [s for s, _ in thinned(history, 25)] == [20, 40, 70, 90, 100]
    assert [s for s, _ in thinned(history, 1)] == list(range(10, 101, 10))
    assert thinned([], 5) == []


def test_training_curves_have_train_points_per_run(ray_cluster, tmp_path):
    """40 iterations, an evaluation every 20, train_points 10: train/* at every 4th iteration, eval/* twice."""
    from orchestrator.spec import load_sweep
    from orchestrator.tuner import run_sweep
    from tests.conftest import write_tiny_sweep

    sweep = write_tiny_sweep(tmp_path, name="curves", total_iters=40, eval_every=20)
    spec = load_sweep(sweep, ["mlflow.train_points=10", "config.num_steps=5"])
    handle, status = run_sweep(spec, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == "FINISHED"
    client = MlflowClient(handle.tracking_uri)
    (trial,) = client.search_runs([handle.experiment_id], f"tags.`mlflow.parentRunId` = '{handle.parent_run_id}'")
    loss = sorted(m.step for m in client.get_metric_history(trial.info.run_id, "train/loss"))
    assert loss == list(range(4, 41, 4))  # one point each, none twice at the evaluations' steps
    assert sorted(m.step for m in client.get_metric_history(trial.info.run_id, "eval/delta_log_z")) == [20, 40]
    assert [m.step for m in client.get_metric_history(trial.info.run_id, "train/buffer_size")] == [20, 40]
