"""The WCST-ML sweep summary: trials logged to a real SQLite MLflow store the way the sweep's callback logs them,
then the summary's figures and preference table land on the sweep's parent run; failed trials are left out,
and a summary that breaks leaves a tag, not a failed sweep."""

import dataclasses

import pytest
from mlflow.tracking import MlflowClient

import orchestrator.families.wcst as wcst_family
from orchestrator.callbacks import MlflowCallback
from orchestrator.families.wcst.summary import preference, trial_group
from orchestrator.spec import SweepSpec
from orchestrator.summary import ERROR_TAG, log_sweep_summary
from orchestrator.tracking import SweepTracker

SWEEP = {
    "name": "wcst-summary",
    "workload": "wcst",
    "config": {"architecture": "mlp", "cues": ["color", "shape", "scale"], "total_iters": 3},
    "variants": {"training": {"diagonal": {"forced_cue": None}, "forced_shape": {"forced_cue": "shape"}}},
    "tune": {"metric": "eval/diagonal_acc", "mode": "max"},
}
# Final off-diagonal accuracies (color, shape, scale) per trial; two of three diagonal seeds adopt color.
DIAGONAL = [(0.95, 0.30, 0.25), (0.97, 0.28, 0.26), (0.30, 0.90, 0.25)]
FORCED_SHAPE = [(0.40, 0.99, 0.25), (0.35, 0.98, 0.26)]
FAILED = (0.0, 1.0, 0.25)  # would put shape first if a failed trial counted


class FakeTrial:
    """What MlflowCallback reads of a Tune trial."""

    def __init__(self, trial_id: str, point: dict):
        self.trial_id, self.config, self.error_file = trial_id, point, None

    def __str__(self) -> str:
        return f"wcst_{self.trial_id}"


def log_trial(callback: MlflowCallback, index: int, training: str, finals: tuple, fail: bool = False) -> None:
    trial = FakeTrial(f"abc_{index:05d}", {"variants.training": training})
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 2, 3):
        share = epoch / 3  # accuracies climb from chance to their final values
        result = {
            "step": epoch,
            "eval/diagonal_acc": 1.0,
            "eval/chance_other_cue": 0.25,
            **{
                f"eval/offdiag_acc/{cue}": 0.25 + share * (acc - 0.25)
                for cue, acc in zip(("color", "shape", "scale"), finals)
            },
        }
        if epoch == 3:
            base = 0.01 if training == "diagonal" else 0.05
            result |= {f"flatness/loss_increase/r_{r:g}": base * r * r for r in (0.0, 4.0, 16.0)}
        callback.on_trial_result(0, [], trial, result)
    (callback.on_trial_error if fail else callback.on_trial_complete)(0, [], trial)


@pytest.fixture(scope="module")
def logged_sweep(tmp_path_factory):
    """(tracker, parent run id) of one sweep in a fresh SQLite store (creating a store costs seconds: once)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    spec = SweepSpec.from_dict(SWEEP)
    tracker = SweepTracker(uri, spec.name)
    parent = tracker.start_parent(spec.name, spec.to_dict())
    callback = MlflowCallback(uri, spec.name, parent, spec)
    index = 0
    for training, rows in (("diagonal", DIAGONAL), ("forced_shape", FORCED_SHAPE)):
        for finals in rows:
            log_trial(callback, index, training, finals)
            index += 1
    log_trial(callback, index, "diagonal", FAILED, fail=True)
    return tracker, parent


def test_summary_figures_and_preference_table_land_on_the_parent_run(logged_sweep, tmp_path):
    tracker, parent = logged_sweep
    trials = tracker.trial_histories(parent)
    assert len(trials) == 5  # the failed trial is left out
    groups = [trial_group(t) for t in trials]
    assert {mode for _, mode in groups} == {"diagonal", "forced_shape"}
    assert trials[0].metrics["eval/offdiag_acc/color"][0][0] == 1  # histories by epoch

    diagonal = [t for t, (_, mode) in zip(trials, groups) if mode == "diagonal"]
    row = preference(groups[0][0], diagonal)
    assert row.order == ("color", "shape", "scale") and row.seeds == 3
    assert (row.top_agree, row.order_agree) == (2, 2)

    logged = log_sweep_summary(tracker, "wcst", parent)
    assert sorted(logged) == ["summary/cue_preference.md", "summary/cue_preference.png", "summary/flatness.png"]
    client = MlflowClient(tracker.tracking_uri)
    files = {f.path: f.file_size for f in client.list_artifacts(parent, "summary")}
    assert set(files) == set(logged) and all(size > 1_000 for path, size in files.items() if path.endswith(".png"))
    text = open(client.download_artifacts(parent, "summary/cue_preference.md", str(tmp_path))).read()
    assert "| mlp | color, shape, scale | 3 |" in text and "color > shape > scale | 2/3 | 2/3 |" in text
    # Forced onto shape: 0.25 + (e / 3)(acc - 0.25) first reaches 0.9 at epoch 3 on both seeds.
    assert "| mlp | color, shape, scale | shape | 2 | 0.495 ± 0.002 | 0.985 ± 0.007 | 3, 3 |" in text


def test_a_broken_summary_tags_the_parent_run_instead_of_failing(logged_sweep, monkeypatch):
    tracker, parent = logged_sweep
    # json.loads of a list of trials raises TypeError: a real, importable function that breaks.
    monkeypatch.setattr(wcst_family, "FAMILY", dataclasses.replace(wcst_family.FAMILY, summary="json:loads"))
    assert log_sweep_summary(tracker, "wcst", parent) == []
    tags = MlflowClient(tracker.tracking_uri).get_run(parent).data.tags
    assert "TypeError" in tags[ERROR_TAG]
