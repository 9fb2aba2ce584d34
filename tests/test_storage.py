"""Tune storage given as a URI: the same code path as s3:// or gs:// (pyarrow's filesystems), run here with
file:// URIs (no network on these machines), and the local folders as before."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest
from mlflow.tracking import MlflowClient

from orchestrator import storage
from orchestrator.errors import OrchestratorError
from orchestrator.spec import load_sweep
from orchestrator.tracking import default_tracking_uri
from orchestrator.tuner import SWEEP_FILE, SweepHandle, find_sweep, run_sweep, storage_root
from tests.conftest import write_tiny_sweep


def test_locations_join_and_split_like_paths_with_the_query_kept_at_the_end(tmp_path, monkeypatch):
    uri = "s3://bucket/ray_results/?region=us-west-2"
    assert storage.normalize(uri) == "s3://bucket/ray_results?region=us-west-2"
    folder = storage.join(uri, "sweep-20260101-000000")
    assert folder == "s3://bucket/ray_results/sweep-20260101-000000?region=us-west-2"
    assert storage.name(folder) == "sweep-20260101-000000" and storage.parent(folder) == storage.normalize(uri)
    assert storage.join("gs://bucket", "a", SWEEP_FILE) == f"gs://bucket/a/{SWEEP_FILE}"
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("ray_results") == str(tmp_path / "ray_results")  # local paths: absolute, as before
    assert storage.parent(storage.join("ray_results", "x")) == str(tmp_path / "ray_results")


def test_the_default_storage_comes_from_the_environment(tmp_path, monkeypatch):
    spec = load_sweep(write_tiny_sweep(tmp_path), ["storage_path=null"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(storage.STORAGE_ENV, raising=False)
    assert storage_root(spec) == str(tmp_path / "ray_results")
    monkeypatch.setenv(storage.STORAGE_ENV, "gs://bucket/ray_results")  # what the cluster files set on the head
    assert storage_root(spec) == "gs://bucket/ray_results"
    explicit = load_sweep(write_tiny_sweep(tmp_path), ["storage_path=s3://mine/results"])
    assert storage_root(explicit) == "s3://mine/results"


def test_under_ray_job_submit_the_default_storage_is_not_the_jobs_temporary_copy(tmp_path, monkeypatch):
    # `ray job submit --working-dir .` runs the job in Ray's copy of the folder, which Ray deletes later.
    copy = tmp_path / "session_2026-12-05_10-00-00_1_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0a1b"
    copy.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(storage.STORAGE_ENV, raising=False)
    monkeypatch.chdir(copy)
    assert storage.root(None) == str(tmp_path / "home" / "ray_results")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"  # the MLflow store too
    (copy / "sweeps").mkdir()
    monkeypatch.chdir(copy / "sweeps")  # anywhere inside the copy
    assert storage.root(None) == str(tmp_path / "home" / "ray_results")
    assert storage.root("s3://mine/results") == "s3://mine/results"  # the sweep's storage_path still wins
    monkeypatch.setenv(storage.STORAGE_ENV, "gs://bucket/ray_results")  # and so does the cluster's
    assert storage.root(None) == "gs://bucket/ray_results"
    monkeypatch.delenv(storage.STORAGE_ENV)
    elsewhere = tmp_path / "working_dir_files" / "runtime_resources"  # the names alone, not Ray's layout
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert storage.root(None) == str(elsewhere / "ray_results")
    assert default_tracking_uri() == f"sqlite:///{elsewhere / 'mlflow.db'}"


def test_a_storage_pyarrow_cannot_open_fails_before_any_run_is_made(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec = load_sweep(write_tiny_sweep(tmp_path, name="nowhere"), ["storage_path=nosuchfs://bucket/results"])
    with pytest.raises(OrchestratorError, match="storage_path 'nosuchfs://bucket/results/nowhere-.*pyarrow cannot"):
        run_sweep(spec, uri)
    client = MlflowClient(uri)
    assert client.search_runs([client.get_experiment_by_name("nowhere").experiment_id]) == []


def test_a_sweep_runs_finds_and_resumes_through_a_storage_uri(ray_cluster, tmp_path):
    root = f"file://{tmp_path}/bucket/ray_results"
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec = load_sweep(
        write_tiny_sweep(tmp_path, name="remote", total_iters=40, eval_every=20), [f"storage_path={root}"]
    )
    handle, status = run_sweep(spec, uri)
    assert status == "FINISHED"
    assert handle.path.startswith(f"{root}/remote-")
    # Everything went through the URI: the sweep's own file, Tune's experiment state and the trial's checkpoints.
    fs, path = pafs.FileSystem.from_uri(handle.path)
    names = [info.path.removeprefix(path + "/") for info in fs.get_file_info(pafs.FileSelector(path, recursive=True))]
    assert SWEEP_FILE in names and any(n.startswith("experiment_state") for n in names)
    assert any("/checkpoint_" in n for n in names), names
    assert json.loads(storage.read_text(storage.join(handle.path, SWEEP_FILE)))["parent_run_id"] == handle.parent_run_id
    assert not (tmp_path / "ray_results").exists()  # nothing fell back to a local folder
    # `resume NAME --storage-path URI` finds the newest such folder; a finished sweep resumes to nothing new.
    found = find_sweep("remote", root)
    assert found == handle.path and find_sweep(handle.path) == handle.path
    assert SweepHandle.load(found).parent_run_id == handle.parent_run_id
    _, again = run_sweep(spec, uri, resume_path=found)
    assert again == "FINISHED"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("remote").experiment_id])
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "eval/delta_log_z")] == [20, 40]
    with pytest.raises(OrchestratorError, match="no sweep named or found at 'other'"):
        find_sweep("other", root)


@pytest.mark.parametrize("uri", [False, True], ids=["path", "file-uri"])
def test_the_sweep_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch, uri):
    """Written to a temporary name and renamed over the old file: a write that fails midway (here at the fsync, as a
    full disk would) leaves the old file as it was and no temporary file behind."""
    folder = tmp_path / "sweep"
    location = f"file://{folder}" if uri else str(folder)
    target = storage.join(location, SWEEP_FILE)
    storage.write_text(target, '{"old": true}')
    storage.write_text(target, '{"new": true}')
    assert json.loads((folder / SWEEP_FILE).read_text()) == {"new": True}

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        storage.write_text(target, '{"newer": true, "padding": "' + "x" * 100_000 + '"}')
    assert json.loads((folder / SWEEP_FILE).read_text()) == {"new": True}
    assert sorted(p.name for p in folder.iterdir()) == [SWEEP_FILE]


def test_an_unwritable_storage_is_named_with_its_reason(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OrchestratorError, match=r"afile/ray_results': cannot write there \(.*afile is a file, not a"):
        storage.check_writable(str(tmp_path / "afile" / "ray_results"))
    with pytest.raises(OrchestratorError, match="storage_path 'file:///proc/results': cannot write there"):
        storage.check_writable("file:///proc/results")
    storage.check_writable(str(tmp_path / "new" / "ray_results"))  # made if missing, the probe removed
    assert list((tmp_path / "new" / "ray_results").iterdir()) == []
