"""The RTB family in the orchestrator: models cached in a real MLflow store by content hash, the prior trained once
before a sweep's trials and reused by a second sweep (not retrained), `prior_missing: fail` stopping before the
sweep starts, bad targets refused at validation, and the driver's report on a real local Ray (replay through the
buffer actor)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow.entities import LoggedModelStatus

from orchestrator import model_cache
from orchestrator.families.rtb.report import results_table
from tests.conftest import ROOT, family_driver, one_report, orchestrator_cli
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


def _one_variant_sweep(folder: Path, name: str, block: str, choices: dict[str, str], **settings) -> Path:
    """sweeps/<name>.yaml with one variant of each axis in `choices` (its --smoke would pick them at random), and
    `settings` on top of its config block `block`."""
    sweep = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())
    for axis, variant in choices.items():
        sweep["variants"][axis] = {variant: sweep["variants"][axis][variant]}
    sweep["config"][block] |= settings
    path = folder / f"{name}-{len(list(folder.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def _rtb_sweep(folder: Path, task: str, method: str, **digits) -> Path:
    """sweeps/rtb.yaml with one task and one method, `digits` on top of its digits block."""
    return _one_variant_sweep(folder, "rtb", "digits", {"task": task, "method": method}, **digits)


def _smoke(sweep: Path, folder: Path, *overrides: str):
    sets = [arg for override in overrides for arg in ("--set", override)]
    return orchestrator_cli("run", str(sweep), "--smoke", "--tracking-uri", f"sqlite:///{folder / 'm.db'}",
                            "--set", f"storage_path={folder / 'ray_results'}", *sets, cwd=folder)  # fmt: skip


def test_smoke_sweep_trains_the_digits_prior_once_and_a_second_sweep_reuses_it(tmp_path):
    """Digits, RTB with backtracking from the replay-buffer actor: the DDPM prior is trained before the trials and
    cached; a second sweep loads it (not retrained), and both sweeps' posteriors start from the same prior."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    sweep = _rtb_sweep(tmp_path, "digit 3", "RTB", replay={"enabled": True, "draw_every": 2})
    first = _smoke(sweep, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "not cached, fitting the ddpm-prior" in first.stdout
    client = mlflow.MlflowClient(uri)
    cache = client.get_experiment_by_name(model_cache.CACHE_EXPERIMENT)
    assert len(client.search_runs([cache.experiment_id])) == 1
    trials = _trial_runs(client, "rtb")
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)
    last = "eval/step_0000006"
    for run in trials:
        m = run.data.metrics
        assert all(math.isfinite(m[k]) for k in ("eval/mean_log_r", "eval/fd", "eval/diversity_ratio", "eval/log_z"))
        assert m["train/buffer_size"] > 0 and m["train/replay_fraction"] > 0  # backtracking from buffer samples
        files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, last)}
        assert {"samples.parquet", "samples.npz", "samples_c3.png", "per_target.json", "posterior.pt"} <= files
    samples = pd.read_parquet(client.download_artifacts(trials[0].info.run_id, f"{last}/samples.parquet"))
    assert samples.shape == (4, 64)  # the smoke's 4 samples of target 3, 8 x 8 pixels each
    # the posterior is also each trial run's LoggedModel, with the same state as the posterior.pt file
    models = client.search_logged_models([trials[0].info.experiment_id])
    posteriors = {m.source_run_id: m for m in models if m.name == "posterior"}
    assert set(posteriors) == {run.info.run_id for run in trials}
    model = posteriors[trials[0].info.run_id]
    assert model.status == LoggedModelStatus.READY and model.tags["step"] == "6"
    state = torch.load(io.BytesIO(model_cache.load_files(uri, model.model_id)["posterior.pt"]), weights_only=False)
    path = client.download_artifacts(trials[0].info.run_id, f"{last}/posterior.pt")
    file_state = torch.load(path, weights_only=False)
    assert state["step"] == file_state["step"] == 6
    assert all(torch.equal(tensor, file_state["prior"][name]) for name, tensor in state["prior"].items())

    second = _smoke(sweep, tmp_path, "name=rtb-again", "mlflow.experiment=rtb-again", "tune.num_samples=1")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "cached (MLflow model" in second.stdout and "not cached" not in second.stdout
    assert len(client.search_runs([cache.experiment_id])) == 1  # reused, not retrained
    posteriors = [
        torch.load(io.BytesIO(open(client.download_artifacts(_trial_runs(client, name)[0].info.run_id,
                                                             f"{last}/posterior.pt"), "rb").read()), weights_only=False)
        for name in ("rtb", "rtb-again")
    ]  # fmt: skip
    for name, tensor in posteriors[0]["prior"].items():
        torch.testing.assert_close(posteriors[1]["prior"][name], tensor, rtol=0, atol=0)


def test_a_missing_prior_with_prior_missing_fail_stops_before_the_sweep(tmp_path):
    result = _smoke(_rtb_sweep(tmp_path, "2-D toy", "RTB"), tmp_path, "config.prior_missing=fail")
    assert result.returncode != 0
    assert "config.prior_missing" in result.stderr and "no fitted rtb-toy-prior" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("rtb")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # no parent run was made


def test_inverse_smoke_sweep_on_a_latent_prior_trains_its_vae_and_prior_once_and_logs_reconstructions(tmp_path):
    """sweeps/inverse.yaml, box inpainting on the latent prior, RTB: the VAE and its latent DDPM are trained before
    the trials and cached; each trial reports PSNR / SSIM of its reconstructions and logs the posterior. With replay
    on, every other iteration backtracks, from the replay-buffer actor's rows once it holds any."""
    choices = {"operator": "box inpainting", "prior": "latent", "method": "RTB"}
    replay = {"backtrack_every": 2, "replay": {"enabled": True, "draw_every": 2}}
    result = _smoke(_one_variant_sweep(tmp_path, "inverse", "inverse", choices, **replay), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "not cached, fitting the latent-ddpm-prior" in result.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    trials = _trial_runs(client, "inverse")
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)
    for run in trials:
        m = run.data.metrics
        assert all(math.isfinite(m[k]) for k in ("eval/psnr_mean", "eval/ssim_mean", "eval/mean_log_r", "eval/log_z"))
        # the last report's steps 3 and 5 backtrack from the buffer's rows (forward samples of steps 0, 2 and 4)
        assert m["train/backtrack_fraction"] > 0 and m["train/replay_fraction"] == m["train/backtrack_fraction"]
        assert m["train/buffer_size"] > 0
        files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "eval/step_0000006")}
        assert {"reconstructions.png", "pairs.npz", "per_pair.json", "posterior.pt"} <= files
    models = client.search_logged_models([trials[0].info.experiment_id])
    assert {m.source_run_id for m in models if m.name == "posterior"} == {run.info.run_id for run in trials}


def test_inverse_operators_that_do_not_fit_the_images_or_have_no_noise_are_refused_at_validation(tmp_path):
    choices = {"operator": "box inpainting", "prior": "pixel", "method": "DPS"}
    for operator, expected in [
        ({"sigma_y": 0.0}, "config.inverse.operator.sigma_y"),
        ({"box_size": 12}, "larger than the 8 x 8 image"),
    ]:
        sweep = _one_variant_sweep(tmp_path, "inverse", "inverse", choices, operator=operator)
        result = orchestrator_cli("validate", str(sweep), cwd=tmp_path, timeout=60)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_target_class_out_of_range_and_a_method_of_no_task_are_refused_at_validation(tmp_path):
    bad_class = _rtb_sweep(tmp_path, "digit 3", "RTB", targets=[3, 12])
    result = orchestrator_cli("validate", str(bad_class), cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "config.digits.targets" in result.stderr and "0 .. 11" in result.stderr
    assert "Traceback" not in result.stderr
    sweep = yaml.safe_load(bad_class.read_text())
    sweep["config"]["digits"]["targets"] = [3]
    sweep["variants"]["task"]["digit 3"]["digits.targets"] = [-1]
    bad_class.write_text(yaml.safe_dump(sweep))
    result = orchestrator_cli("validate", str(bad_class), cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "variants.task.digit 3" in result.stderr, result.stderr


@pytest.mark.slow
def test_driver_report_with_replay_through_the_buffer_actor(ray_cluster):
    """Sub-chunks of 5 iterations: the first trains forward only (the buffer is empty), the later ones train their
    odd iterations on bridges to buffer states; the buffer holds every forward sample."""
    config = SMOKE_MODEL | SMOKE_RUN | {"total_iters": 20, "eval_every": 20, "batch_size": 32}
    config["replay"] = {"enabled": True, "draw_every": 5}
    driver = family_driver("rtb-replay", "rtb", {"toy2d": config}, "eval/tv_to_prior_posterior")
    metrics, artifacts = one_report(driver)
    assert driver.step == 20 and driver.finished
    # sub-chunk 0 (steps 0-4): forward only; then steps 5-9, 10-14, 15-19 replay their odd steps: 3, 2, 3 of 5
    assert metrics["train/buffer_size"] == 32 * (5 + 2 + 3 + 2)
    assert metrics["train/replay_fraction"] == pytest.approx((0 + 3 + 2 + 3) / 20)
    assert math.isfinite(metrics["eval/tv_to_prior_posterior"]) and metrics["eval/prior_nll_bound"] > 0
    assert {"samples.parquet", "samples.png", "mode_masses.png", "mode_masses.json", "posterior.pt"} <= set(artifacts)


def test_results_table_has_a_row_per_task_and_method_and_leaves_other_tasks_metrics_blank():
    def trial(task: str, method: str, **finals: float) -> SimpleNamespace:
        params = {"sampled.variants.task": task, "sampled.variants.method": method}
        return SimpleNamespace(params=params, finals={f"eval/{k}": v for k, v in finals.items()})

    trials = [
        trial("2-D toy", "RTB", tv_to_prior_posterior=0.01, mean_log_r=-1.0),
        trial("2-D toy", "RTB", tv_to_prior_posterior=0.03, mean_log_r=-1.2),
        trial("digit 3", "RTB", fd=4.0, mean_log_r=-0.5),
        trial("digit 3", "DPS", fd=6.0, mean_log_r=-0.2),
    ]
    table, _ = results_table(trials, "method")
    header, rows = table[0], {(row[0], row[1]): dict(zip(table[0], row)) for row in table[1:]}
    assert header[:3] == ["task", "method", "seeds"] and len(rows) == 3
    toy = rows[("2-D toy", "RTB")]
    assert toy["seeds"] == "2" and toy["TV to exact posterior"].startswith("0.02 ±") and toy["FD to class data"] == "-"
    assert rows[("digit 3", "DPS")]["FD to class data"] == "6" and rows[("digit 3", "DPS")]["TV to N9"] == "-"
