"""Faults and bad input in the core: stores that cannot be written fail in seconds before Ray starts (exit 2, one
paragraph), local SQLite errors are not retried, failed trials give exit 1 and statuses that say so, checkpoints are
read weights-only, and a clean finish prints no traceback.

The stores here fail for root too (these machines run tests as root, which ignores file modes): a path under /proc,
a file where a folder is expected, a file that is not a database, a database made immutable with `chattr +i` (or,
for another user, read-only with chmod)."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from orchestrator import tuner as tuner_module
from orchestrator.callbacks import ProgressCallback
from orchestrator.cli import main
from orchestrator.errors import OrchestratorError, SweepFailed
from orchestrator.spec import load_sweep
from orchestrator.tracking import RETRY_BUDGET_ENV, SweepTracker, _retry, _transient
from orchestrator.trial import (
    _quiet_exit_at_sigterm,
    from_checkpoint,
    load_state,
    save_state,
    stop_actors,
    to_checkpoint,
)
from orchestrator.tuner import SweepHandle, run_sweep
from tests.conftest import ROOT, orchestrator_cli, smoke_run, write_tiny_sweep
from tests.test_behaviour_unchanged import build_driver

# ---------------------------------------------------------------- stores that cannot be written


def _read_only(path: Path) -> None:
    """`path` read-only even for root: immutable (chattr +i); for another user, chmod suffices."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("chattr +i is not available here (root ignores file modes)")


def _writable_again(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


@pytest.fixture
def read_only_store(tmp_path):
    db = tmp_path / "ro.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # a real MLflow database, then made read-only
    _read_only(db)
    yield f"sqlite:///{db}"
    _writable_again(db)


def _bad_store(kind: str, tmp_path: Path, request) -> str:
    if kind == "under /proc":
        return "sqlite:////proc/orchestrator-test.db"
    if kind == "not a database":
        (tmp_path / "notes.db").write_text("these are my notes, not an MLflow store\n" * 100)
        return f"sqlite:///{tmp_path / 'notes.db'}"
    if kind == "a file for its folder":
        (tmp_path / "afile").write_text("x")
        return f"sqlite:///{tmp_path / 'afile' / 'm.db'}"
    return request.getfixturevalue("read_only_store")


@pytest.mark.parametrize("kind", ["under /proc", "not a database", "a file for its folder", "read-only"])
def test_an_unwritable_mlflow_store_fails_in_seconds_before_ray(kind, tmp_path, request, capsys):
    import ray

    uri = _bad_store(kind, tmp_path, request)
    sweep = write_tiny_sweep(tmp_path, name="unwritable")
    started = time.monotonic()
    code = main(["run", str(sweep), "--tracking-uri", uri])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert took < 15, f"{took:.0f} s to fail"
    last = err.rstrip().splitlines()[-1]  # (MLflow's own INFO lines may come first, from making the store)
    assert last.startswith(f"error: MLflow store {uri}:") and err.count("error:") == 1, err  # one paragraph
    assert "Traceback" not in err and "Nothing was started" in last
    assert not ray.is_initialized()
    assert not (tmp_path / "ray_results").exists()


def test_an_unwritable_store_fails_in_seconds_from_the_command_line(tmp_path):
    started = time.monotonic()
    result = orchestrator_cli(
        "run", str(write_tiny_sweep(tmp_path)), "--tracking-uri", "sqlite:////proc/x.db", cwd=tmp_path, timeout=120
    )
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert took < 30, f"{took:.0f} s to fail"
    assert "Traceback" not in result.stderr + result.stdout
    assert "error: MLflow store sqlite:////proc/x.db: SQLite cannot open or write /proc/x.db" in result.stderr


@pytest.mark.parametrize("where", ["/proc/orchestrator-results", "a file for its folder"])
def test_an_unwritable_storage_path_fails_in_seconds_and_makes_no_run(where, tmp_path, capsys):
    import ray

    if where == "a file for its folder":
        (tmp_path / "afile").write_text("x")
        where = str(tmp_path / "afile" / "ray_results")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    sweep = write_tiny_sweep(tmp_path, name="nowhere")
    started = time.monotonic()
    code = main(["run", str(sweep), "--tracking-uri", uri, "--set", f"storage_path={where}"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 15, err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith(f"error: storage_path '{where}': cannot write there (") and err.count("error:") == 1, err
    assert not ray.is_initialized()
    client = MlflowClient(uri)
    assert client.search_runs([client.get_experiment_by_name("nowhere").experiment_id]) == []  # no RUNNING parent


def test_resume_checks_its_stores_too(tmp_path, capsys):
    spec = load_sweep(write_tiny_sweep(tmp_path, name="gone"))
    folder = str(tmp_path / "ray_results" / "gone-20260101-000000")
    SweepHandle(folder, spec, "sqlite:////proc/x.db", "1", "0" * 32).save()
    assert main(["resume", folder]) == 2
    assert capsys.readouterr().err.startswith("error: MLflow store sqlite:////proc/x.db: SQLite cannot open")


def test_local_sqlite_errors_are_not_retried_and_an_http_store_that_does_not_answer_is(tmp_path, monkeypatch):
    db = tmp_path / "m.db"
    tracker = SweepTracker(f"sqlite:///{db}", "a")
    db.write_bytes(b"not a database any more " * 1000)  # under the open store's feet
    started = time.monotonic()
    with pytest.raises(OrchestratorError, match="creating b failed: file is not a database"):
        _retry(lambda: tracker.client.create_experiment("b"), "creating b")
    assert time.monotonic() - started < 5  # the default budget is 120 s

    assert _transient(MlflowException("server restarting", error_code=TEMPORARILY_UNAVAILABLE))
    with socket.socket() as s:  # a port nobody answers on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(RETRY_BUDGET_ENV, "2")
    client = MlflowClient(f"http://127.0.0.1:{port}")
    with pytest.raises(OrchestratorError, match=r"failed for 2 s \((\d+) attempts") as error:
        _retry(lambda: client.get_experiment_by_name("a"), "reading")
    assert int(error.value.args[0].split("(")[1].split()[0]) > 1


# ---------------------------------------------------------------- checkpoints: weights only


class _RunsCode:
    """What a checkpoint written by someone else may hold: unpickling it calls `Path.touch(marker)`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"learner": {"step": 3}, "extra": _RunsCode(marker)}, tmp_path / "state.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_state(tmp_path / "state.pt")
    assert not marker.exists()


def test_numpy_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    module = torch.nn.BatchNorm1d(3)
    rng = np.random.default_rng(0)
    state = {
        "module": module.state_dict(),
        "x": np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::-1],  # not contiguous
        "log_reward": np.array([1.0, np.nan]),
        "search_step": np.array([3, 4], dtype=np.int64),
        "flags": np.array([True, False]),
        "angles": {0: np.zeros((0, 2), dtype=np.float32), 7: np.ones((2, 2), dtype=np.float32)},
        "seeds": {1: (np.ones(2), np.zeros(2))},
        "step_size": np.float32(0.25),
        "rng": rng.bit_generator.state,  # 128-bit Python ints
        "mixed": [1, 2.5, "tb", None, (True,)],
    }
    save_state(state, tmp_path / "state.pt")
    back = load_state(tmp_path / "state.pt")
    _assert_same(back, state)
    assert back["module"]._metadata == state["module"]._metadata  # a module's state_dict keeps its versions
    with pytest.raises(TypeError, match=r"state\['bad'\]\[0\] is a builtins.object"):
        to_checkpoint({"bad": [object()]})
    assert from_checkpoint(to_checkpoint({"a": 1})) == {"a": 1}


def _assert_same(found, expected, where="state"):
    assert type(found) is type(expected), f"{where}: {type(found)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert found.dtype == expected.dtype, where
        torch.testing.assert_close(found, expected, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(expected, np.ndarray | np.generic):
        assert found.dtype == expected.dtype and np.shape(found) == np.shape(expected), where
        np.testing.assert_array_equal(found, expected, err_msg=where)
    elif isinstance(expected, dict):
        assert list(found) == list(expected), where
        for key in expected:
            _assert_same(found[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(found) == len(expected), where
        for i, (f, e) in enumerate(zip(found, expected)):
            _assert_same(f, e, f"{where}[{i}]")
    else:
        assert found == expected, where


# ---------------------------------------------------------------- exit codes, statuses, output


def test_a_sweep_whose_trial_fails_exits_1_with_a_failed_parent(tmp_path):
    """The trial's learner cannot make its cache folder (a file is in the way): the trial fails at its start."""
    (tmp_path / "afile").write_text("x")
    db = tmp_path / "m.db"
    result = smoke_run(
        "torsional.yaml", tmp_path, f"config.cache_dir={tmp_path / 'afile' / 'cache'}", "tune.num_samples=1",
        "search_space={}"
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 trial failed" in result.stderr
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("torsional").experiment_id])
    assert sorted((r.info.status, "mlflow.parentRunId" in r.data.tags) for r in runs) == [
        ("FAILED", False),
        ("FAILED", True),
    ]


def test_the_trial_process_drops_only_sigterm_exits_raised_in_finalizers(capsys, monkeypatch):
    """CI caught `Exception ignored in: WeakSet._remove ... SystemExit` from a trial that ended cleanly: Ray's SIGTERM
    landed in a weakref callback. Any other exception raised in a finalizer is still printed."""
    monkeypatch.setattr(sys, "unraisablehook", _quiet_exit_at_sigterm)

    class RaisesWhenCollected:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    RaisesWhenCollected(SystemExit(1))
    RaisesWhenCollected(ValueError("a real fault"))
    err = capsys.readouterr().err
    assert "SystemExit" not in err
    assert "ValueError: a real fault" in err


def test_the_progress_line_counts_interrupted_trials_as_stopped(capsys):
    spec = load_sweep(ROOT / "sweeps" / "samplers.yaml")
    point = {"lr_policy": 1e-3, "exploration_factor": 0.1}

    def trial(status, **last_result):
        return SimpleNamespace(status=status, last_result=last_result, config=point)

    progress = ProgressCallback(spec.tune.metric, spec.tune.mode, spec=spec)
    progress.print_line(
        [
            trial("TERMINATED", done=True, step=5000),
            trial("TERMINATED", step=1500, training_iteration=3),  # Tune's stop after an interrupt
            trial("RUNNING", step=500),
            trial("ERROR"),
        ]
    )
    line = capsys.readouterr().err
    assert "trials: 1 done, 1 running, 0 waiting, 1 stopped, 1 failed" in line, line


def test_tunes_own_restore_hint_is_not_printed(caplog):
    with caplog.at_level(logging.WARNING, logger="ray.tune.tune"):
        logging.getLogger("ray.tune.tune").warning(
            "Experiment has been interrupted, but the most recent state was saved.\n"
            'Resume experiment with: Tuner.restore(path="/x", trainable=...)'
        )
        logging.getLogger("ray.tune.tune").warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]


@pytest.mark.parametrize(
    "raised, status",
    [(RuntimeError("a bug"), "FAILED"), (OrchestratorError("MLflow: gone"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_the_parent_run_says_when_a_sweep_did_not_finish(ray_cluster, tmp_path, monkeypatch, raised, status):
    """`Tuner.fit` stops on an error or an interrupt, with a trial's run open: the parent run is FAILED or KILLED (it
    stayed FINISHED), the trial's run KILLED; an error is raised again (after the start: exit code 1)."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec = load_sweep(write_tiny_sweep(tmp_path, name="stops"))

    class Stops:
        def __init__(self, handle, tracker):
            self.handle, self.tracker = handle, tracker

        def fit(self):
            self.tracker.trial_run(self.handle.parent_run_id, "t_00000", "t", {})
            raise raised

    monkeypatch.setattr(tuner_module, "_tuner", lambda handle, tracker, resume: Stops(handle, tracker))
    if isinstance(raised, KeyboardInterrupt):
        _, found = run_sweep(spec, uri)
        assert found == status
    else:
        expected = SweepFailed if isinstance(raised, OrchestratorError) else type(raised)
        with pytest.raises(expected) as error:
            run_sweep(spec, uri)
        assert getattr(error.value, "exit_code", 1) == 1
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("stops").experiment_id])
    statuses = {("trial" if "mlflow.parentRunId" in r.data.tags else "sweep"): r.info.status for r in runs}
    assert statuses == {"sweep": status, "trial": RunStatus.to_string(RunStatus.KILLED)}


# ---------------------------------------------------------------- on the module's Ray (last: it holds 2 CPUs)


@pytest.mark.parametrize("name", ["samplers-tb-replay", "torsional-vargrad", "sed", "wcst"])
def test_every_familys_state_round_trips_through_a_weights_only_checkpoint(ray_cluster, tmp_path, name):
    """A driver's state after one report, saved and read back weights-only, loads into a new driver of the trial,
    whose state is then the same to the last bit (replay buffers' numpy arrays and RNG states included)."""
    first = build_driver(name, f"{name}_00000")
    try:
        first.advance()
        state = first.state()
    finally:
        stop_actors(first)
    save_state(state, tmp_path / "state.pt")
    torch.load(tmp_path / "state.pt", weights_only=True)  # what a weights-only reader sees loads as it is
    second = build_driver(name, f"{name}_00001")
    try:
        second.load_state(load_state(tmp_path / "state.pt"))
        assert second.step == first.step
        _assert_same(second.state(), state)
    finally:
        stop_actors(second)
