"""A tiny WCST-ML sweep end to end on a real local Ray and a real SQLite MLflow store: one trial (forced onto
color) runs through Tune, reporting its per-epoch off-diagonal accuracies and, at the end, its flatness curve;
when the sweep ends the summary lands on the parent run. (One trial: a second would only double the start-up.)"""

from mlflow.tracking import MlflowClient

from orchestrator.spec import SweepSpec
from orchestrator.tracking import PARENT_TAG
from orchestrator.tuner import run_sweep

CUES = ("color", "shape", "scale")


def tiny_sweep(storage: str) -> SweepSpec:
    return SweepSpec.from_dict(
        {
            "name": "wcst-tiny",
            "workload": "wcst",
            "seed": 0,
            "config": {
                "architecture": "mlp",
                "cues": list(CUES),
                "total_iters": 2,
                "train_size": 256,
                "test_size": 96,
                "resolution": 16,
                "supersample": 1,
                "flatness_radii": [0, 8],
                "flatness_directions": 1,
                "flatness_samples": 96,
            },
            "variants": {"training": {"forced_color": {"forced_cue": "color"}}},
            "tune": {"num_samples": 1, "metric": "eval/diagonal_acc", "mode": "max", "max_concurrent_trials": 2},
            "resources": {"learner": {"cpus": 1}},
            "storage_path": storage,
        }
    )


def test_tiny_sweep_reports_every_epoch_and_summarizes_on_the_parent_run(ray_cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    handle, status = run_sweep(tiny_sweep(str(tmp_path / "ray_results")), uri)
    assert status == "FINISHED"
    client = MlflowClient(handle.tracking_uri)
    trials = client.search_runs([handle.experiment_id], f"tags.`{PARENT_TAG}` = '{handle.parent_run_id}'")
    assert [run.data.params["config.forced_cue"] for run in trials] == ["color"]
    for run in trials:
        assert run.info.status == "FINISHED"
        for cue in CUES:
            history = client.get_metric_history(run.info.run_id, f"eval/offdiag_acc/{cue}")
            assert sorted(m.step for m in history) == [1, 2]  # one report per epoch
            assert all(0.0 <= m.value <= 1.0 for m in history)
        assert run.data.metrics["flatness/loss_increase/r_0"] == 0.0
        assert "flatness/loss_increase/r_8" in run.data.metrics and "flatness/loss" in run.data.metrics
    summary = {f.path for f in client.list_artifacts(handle.parent_run_id, "summary")}
    assert summary == {"summary/cue_preference.md", "summary/flatness.png"}  # no diagonal trial: no preference curves
    parent = client.get_run(handle.parent_run_id)
    assert parent.info.status == "FINISHED" and "orchestrator.summary_error" not in parent.data.tags
    # The sweep's outcome on its parent: the best trial (tag, link in the description), its final metrics, the table.
    (trial,) = trials
    assert trial.info.run_name == "forced-color"  # the searched value names the run
    assert parent.data.tags["orchestrator.best_run_id"] == trial.info.run_id
    assert f"runs/{trial.info.run_id}" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["eval/diagonal_acc"] == trial.data.metrics["eval/diagonal_acc"]
    assert {f.path for f in client.list_artifacts(handle.parent_run_id)} >= {"trials.md", "trials.parquet"}
    # The parent's params describe the sweep: the fixed config, not the base value a variant replaced.
    assert parent.data.params["config.total_iters"] == "2" and "config.forced_cue" not in parent.data.params
    assert parent.data.params["variants.training"] == '["forced_color"]'
    assert len(parent.data.tags["mlflow.source.git.commit"]) == 40 and trial.data.tags["mlflow.user"]
