"""The RTB family in the orchestrator: models cached in a real MLflow store by content hash, the prior fitted once
before a sweep's trials and reused by a second sweep (not refitted), `prior_missing: fail` stopping before the
sweep starts, and the driver's report on a real local Ray (replay through the buffer actor)."""

from __future__ import annotations

import io
import math

import mlflow
import pandas as pd
import pytest
import torch

from orchestrator import model_cache
from tests.conftest import family_driver, one_report, smoke_run
from workloads.rtb.config import SMOKE_MODEL, SMOKE_RUN


def test_model_cache_finds_what_it_stored_by_content_hash(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    key = {"num_steps": 20, "prior_seed": 0}
    assert model_cache.find(uri, "toy-prior", key) is None  # no cache experiment yet
    stored = model_cache.store(uri, "toy-prior", key, {"prior.pt": b"weights", "fit.json": b"{}"}, {"nll": 4.9})
    found = model_cache.find(uri, "toy-prior", dict(reversed(key.items())))  # the key's order does not matter
    assert found == stored
    assert model_cache.load_files(uri, found.model_id) == {"prior.pt": b"weights", "fit.json": b"{}"}
    assert model_cache.find(uri, "toy-prior", key | {"prior_seed": 1}) is None
    assert model_cache.find(uri, "other-kind", key) is None
    run = mlflow.MlflowClient(uri).get_run(found.source_run_id)
    assert run.data.params == {"num_steps": "20", "prior_seed": "0"} and run.data.metrics == {"nll": 4.9}
    assert run.info.status == "FINISHED"
    # a second fit of the same key (two sweeps at once) is found instead of the first
    again = model_cache.store(uri, "toy-prior", key, {"prior.pt": b"weights 2"}, {})
    assert model_cache.find(uri, "toy-prior", key) == again


def _trial_runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    return [run for run in runs if "mlflow.parentRunId" in run.data.tags]


def test_smoke_sweep_fits_the_prior_once_and_a_second_sweep_reuses_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    first = smoke_run("rtb.yaml", tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "not cached, fitting it" in first.stdout
    client = mlflow.MlflowClient(uri)
    cache = client.get_experiment_by_name(model_cache.CACHE_EXPERIMENT)
    assert len(client.search_runs([cache.experiment_id])) == 1
    trials = _trial_runs(client, "rtb")
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)
    for run in trials:
        assert math.isfinite(run.data.metrics["eval/tv_to_prior_posterior"])
        files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "eval/step_0000020")}
        assert {"samples.parquet", "samples.png", "mode_masses.png", "mode_masses.json", "posterior.pt"} <= files
    samples = pd.read_parquet(client.download_artifacts(trials[0].info.run_id, "eval/step_0000020/samples.parquet"))
    assert list(samples.columns) == ["x0", "x1"] and len(samples) == 500

    second = smoke_run("rtb.yaml", tmp_path, "name=rtb-again", "mlflow.experiment=rtb-again")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "cached (MLflow model" in second.stdout and "fitting" not in second.stdout
    assert len(client.search_runs([cache.experiment_id])) == 1  # reused, not refitted
    # the trials of both sweeps started from the same prior
    posteriors = [
        torch.load(io.BytesIO(open(client.download_artifacts(run.info.run_id, path), "rb").read()), weights_only=False)
        for run, path in [
            (_trial_runs(client, name)[0], "eval/step_0000020/posterior.pt") for name in ("rtb", "rtb-again")
        ]
    ]
    for name, tensor in posteriors[0]["prior"].items():
        torch.testing.assert_close(posteriors[1]["prior"][name], tensor, rtol=0, atol=0)


def test_a_missing_prior_with_prior_missing_fail_stops_before_the_sweep(tmp_path):
    result = smoke_run("rtb.yaml", tmp_path, "config.prior_missing=fail")
    assert result.returncode != 0
    assert "config.prior_missing" in result.stderr and "no fitted prior" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("rtb")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # no parent run was made


@pytest.mark.slow
def test_driver_report_with_replay_through_the_buffer_actor(ray_cluster):
    """Sub-chunks of 5 iterations: the first trains forward only (the buffer is empty), the later ones train their
    odd iterations on bridges to buffer states; the buffer holds every forward sample."""
    config = SMOKE_MODEL | SMOKE_RUN | {"total_iters": 20, "eval_every": 20, "batch_size": 32}
    config["replay"] = {"enabled": True, "draw_every": 5}
    driver = family_driver("rtb-replay", "rtb", config, "eval/tv_to_prior_posterior")
    metrics, artifacts = one_report(driver)
    assert driver.step == 20 and driver.finished
    # sub-chunk 0 (steps 0-4): forward only; then steps 5-9, 10-14, 15-19 replay their odd steps: 3, 2, 3 of 5
    assert metrics["train/buffer_size"] == 32 * (5 + 2 + 3 + 2)
    assert metrics["train/replay_fraction"] == pytest.approx((0 + 3 + 2 + 3) / 20)
    assert math.isfinite(metrics["eval/tv_to_prior_posterior"]) and metrics["eval/prior_nll_bound"] > 0
    assert {"samples.parquet", "samples.png", "mode_masses.png", "mode_masses.json", "posterior.pt"} <= set(artifacts)
