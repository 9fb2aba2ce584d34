"""`report --table`: the results table of a sweep, read from a real SQLite MLflow store that the project's
own tracking code filled as the Tune driver does (a parent run, one child run per trial, metrics by step)."""

from __future__ import annotations

import time

import pytest

from orchestrator.cli import EXIT_USER_ERROR, main
from orchestrator.families.samplers.report import results_table
from orchestrator.spec import load_sweep
from orchestrator.tracking import SweepTracker, flatten, trial_table
from tests.conftest import ROOT

BENCHMARK = ROOT / "sweeps" / "samplers_benchmark.yaml"
METRICS = ("eval/delta_log_z", "eval/delta_log_z_rw", "eval/w2")

# (method, target, final Delta log Z / Delta log Z_RW / W2, run status)
TRIALS = [
    ("TB + Expl. + LS", "25GMM", (0.1, 0.01, 1.0), "FINISHED"),
    ("TB + Expl. + LS", "25GMM", (0.2, 0.02, 1.2), "FINISHED"),
    ("TB + Expl. + LS", "25GMM", (0.3, 0.03, 1.4), "FINISHED"),
    ("TB + Expl. + LS", "Manywell", (4.0, 0.2, 5.0), "FINISHED"),
    ("TB + Expl. + LS", "Manywell", (5.0, 0.4, 7.0), "FINISHED"),
    ("TB + Expl. + LS", "Manywell", (99.0, 99.0, 99.0), "FAILED"),
    ("PIS", "25GMM", (1.5, 1.2, 2.5), "FINISHED"),
    ("PIS", "Funnel", (99.0, 99.0, 99.0), "RUNNING"),
]


def _log_sweep(uri: str, trials: list, trial_prefix: str) -> None:
    """A sweep of the benchmark file as the Tune driver logs it: each trial's resolved config and sampled
    variants as params, an early evaluation and a final one (the table must take the final)."""
    spec = load_sweep(BENCHMARK)
    tracker = SweepTracker(uri, spec.mlflow.experiment)
    parent = tracker.start_parent(spec.name, spec.to_dict())
    for i, (method, target, finals, status) in enumerate(trials):
        point = {"variants.method": method, "variants.target": target}
        params = {"config": spec.resolved_config(point).model_dump(mode="json"), "sampled": point}
        run = tracker.trial_run(parent, f"{trial_prefix}_{i:05d}", f"run_trial_{trial_prefix}_{i:05d}", flatten(params))
        tracker.log_metrics(run, dict.fromkeys(METRICS, 50.0), step=1000)
        tracker.log_metrics(run, dict(zip(METRICS, finals)), step=2000)
        if status != "RUNNING":
            tracker.end_run(run, status)
    tracker.end_run(parent, "FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('report') / 'mlflow.db'}"
    _log_sweep(uri, [("TB", "Funnel", (7.0, 7.0, 7.0), "FINISHED")], "old")  # an older sweep: not reported
    time.sleep(0.01)  # the newest parent run is found by start time (ms)
    _log_sweep(uri, TRIALS, "new")
    return uri


def test_cells_are_mean_and_std_over_seeds_of_the_final_values(store):
    sweep = trial_table(store, "samplers-benchmark")
    trials = sweep.rows
    finished = [t for t in trials if t.status == "FINISHED"]
    assert sweep.workload == "samplers" and len(trials) == len(TRIALS) and len(finished) == 6
    table, _ = results_table(finished, "method")
    assert table == [
        ["method", "seeds", "25GMM", "Manywell"],  # only targets with finished trials, in the paper's order
        ["PIS", "1", "1.5 / 1.2 / 2.5", "- / - / -"],  # the paper's row order; one seed: no spread
        ["  paper", "5", "1.769 / 1.274 / 6.37", "3.85 / 2.69 / 6.15"],
        ["TB + Expl. + LS", "2-3", "0.2 ± 0.1 / 0.02 ± 0.01 / 1.2 ± 0.2", "4.5 ± 0.71 / 0.3 ± 0.14 / 6 ± 1.4"],
        ["  paper", "5", "0.171 / 0.004 / 1.25", "4.57 / 0.19 / 5.66"],
    ]


def test_rows_without_paper_figures_follow_the_papers():
    """A method the paper does not have gets no paper row and comes after the paper's methods."""

    class Trial:
        def __init__(self, method: str, target: str, value: float):
            self.params = {"sampled.variants.method": method, "config.target": target}
            self.finals = dict.fromkeys(METRICS, value)

    table, _ = results_table([Trial("Ours", "gmm40", 0.5), Trial("TB", "gmm40", 0.25)], "method")
    assert table == [
        ["method", "seeds", "40GMM"],
        ["TB", "1", "0.25 / 0.25 / 0.25"],
        ["  paper", "5", "-"],
        ["Ours", "1", "0.5 / 0.5 / 0.5"],
    ]


def test_report_table_command(store, tmp_path, capsys):
    markdown = tmp_path / "table.md"
    assert main(["report", "samplers-benchmark", "--tracking-uri", store, "--table", "--markdown", str(markdown)]) == 0
    out = capsys.readouterr().out
    assert "0.2 ± 0.1 / 0.02 ± 0.01 / 1.2 ± 0.2" in out and "1.769 / 1.274 / 6.37" in out
    assert "99" not in out and "7 / 7 / 7" not in out  # failed, running and older-sweep trials are left out
    assert "2 trials left out" in out and "returns W2, not its square" in out
    text = markdown.read_text()
    assert text.startswith("| method | seeds | 25GMM | Manywell |\n| --- | --- | --- | --- |\n| PIS | 1 |")
    assert "| paper | 5 | 0.171 / 0.004 / 1.25 | 4.57 / 0.19 / 5.66 |" in text


@pytest.mark.parametrize(
    "args,words",
    [
        (
            ["--table", "--rows", "seed"],
            "no finished trial of experiment 'samplers-benchmark' has a variant of the axis",
        ),
        (["--markdown", "t.md"], "add --table"),
    ],
)
def test_report_table_mistakes(store, capsys, args, words):
    assert main(["report", "samplers-benchmark", "--tracking-uri", store, *args]) == EXIT_USER_ERROR
    assert words in capsys.readouterr().err


def test_report_table_of_a_family_without_one(tmp_path, capsys):
    """`--table` is the sweep's family's table: a family that declares none is named in the error."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_sweep(ROOT / "sweeps" / "wcst.yaml")
    tracker = SweepTracker(uri, spec.mlflow.experiment)
    tracker.end_run(tracker.start_parent(spec.name, spec.to_dict()), "FINISHED")
    assert main(["report", spec.mlflow.experiment, "--tracking-uri", uri, "--table"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "workload 'wcst', which has no results table (workloads with one: samplers, rtb)" in err
