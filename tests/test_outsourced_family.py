"""The outsourced family through the orchestrator: `sweeps/outsourced.yaml --smoke` on a local Ray with an MLflow
store, and bad input refused before the sweep starts."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest

from orchestrator import model_cache
from orchestrator.errors import OrchestratorError
from orchestrator.families.outsourced.driver import prepare
from orchestrator.placement import TrialContext, role_layout, trial_bundles
from orchestrator.spec import load_sweep
from tests.conftest import ROOT, orchestrator_cli, smoke_run


def test_smoke_sweep_logs_each_trials_data_space_metrics_and_artifacts(tmp_path):
    """The flow is fitted once before the trials and cached in the store; a second sweep loads it. With
    generator_missing: fail, a store without it stops the sweep before any trial, naming it.

    The second sweep runs with replay: the buffer actor holds z states, runs MALA in z on its own copy of the
    noise-space target (the cached flow) after each chunk of 5 iterations, and the learner replays the results;
    every log R that local search evaluated is counted: 4 rounds x 16 chains x (1 + 4 steps) = 320. Its r(f(z))
    values are evaluated on two reward actors: the 5,000 reference draws, 20 x 64 training states, evaluation's."""
    refused = smoke_run("outsourced.yaml", tmp_path, "config.generator_missing=fail")
    assert refused.returncode != 0 and "has no fitted outsourced-generator" in refused.stdout + refused.stderr
    result = smoke_run("outsourced.yaml", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "not cached, fitting the outsourced-generator before the trials" in result.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    cache = client.get_experiment_by_name(model_cache.CACHE_EXPERIMENT)
    assert len(client.search_runs([cache.experiment_id])) == 1  # two trials, one flow
    experiment = client.get_experiment_by_name("outsourced")
    trials = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)
    last = "eval/step_0000020"
    for run in trials:
        m = run.data.metrics
        for name in ("eval/tv_to_exact", "eval/w2_data", "eval/mean_log_r", "eval/log_z_mc", "eval/delta_log_z"):
            assert math.isfinite(m[name]), name
        assert 0 <= m["eval/tv_to_exact"] <= 1
        files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, last)}
        assert {"samples.parquet", "data_samples.png", "noise_samples.png", "mode_masses.json"} <= files, files
    samples = pd.read_parquet(client.download_artifacts(trials[0].info.run_id, f"{last}/samples.parquet"))
    assert samples.shape == (200, 2)  # the smoke's 200 noise-space samples
    replay = "{enabled: true, local_search_every: 5, local_search_batch: 16, mala_steps: 4, mala_burn_in: 2}"
    pool = "resources.workers.reward={count: 2, cpus: 0.25}"
    sets = ("name=outsourced-again", "mlflow.experiment=again", "tune.num_samples=1", f"config.sampler.replay={replay}")
    sets += (pool,)
    again = smoke_run("outsourced.yaml", tmp_path, *sets)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "cached (MLflow model" in again.stdout and "not cached" not in again.stdout
    assert len(client.search_runs([cache.experiment_id])) == 1  # reused, not fitted again
    experiment = client.get_experiment_by_name("again")
    (trial,) = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    m = trial.data.metrics
    assert trial.info.status == "FINISHED" and m["train/buffer_size"] > 0
    assert m["train/replay_staleness_iters"] > 0  # the learner trained on searched states
    assert m["eval/local_search_reward_evaluations"] == 4 * 16 * 5
    # the sweep anneals beta, so replayed states are scored again at the current beta: all 20 iterations count
    assert m["eval/reward_evaluations"] == 320 + 20 * 64
    assert m["eval/reward_pool_rows"] >= 5_000 + 20 * 64


@pytest.mark.slow
def test_mcmc_smoke_sweep_runs_its_chains_on_chain_actors(tmp_path):
    """The MCMC baseline on two chain actors (16 chains each): its evaluations are the chains' (1 + 20 MALA steps)
    x 32. (In `make test`, tests/test_actor_arguments.py runs the same trial's driver on chain actors.)"""
    chains = "resources.workers.chains={count: 2, cpus: 0.25}"
    sets = ("name=outsourced-mcmc", "mlflow.experiment=mcmc", "tune.num_samples=1", "config.method=mcmc", chains)
    mcmc = smoke_run("outsourced.yaml", tmp_path, *sets)
    assert mcmc.returncode == 0, mcmc.stdout[-3000:] + mcmc.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("mcmc")
    (trial,) = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    m = trial.data.metrics
    assert trial.info.status == "FINISHED" and 0 < m["eval/acceptance_rate"] <= 1
    assert m["eval/reward_evaluations"] == 32 * (1 + 20)
    for name in ("eval/tv_to_exact", "eval/w2_data", "eval/mean_log_r", "eval/log_z_mc"):
        assert math.isfinite(m[name]), name
    samples = pd.read_parquet(client.download_artifacts(trial.info.run_id, "eval/step_0000020/samples.parquet"))
    assert samples.shape == (64, 2)  # the states kept at steps 20 and 10 (thin 10) of the 32 chains of both actors


def test_digits_smoke_sweep_logs_image_metrics_grids_and_images(tmp_path):
    result = smoke_run("outsourced_digits.yaml", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("outsourced-digits")
    trials = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"  # --smoke: one point of the 2 x 2 x 2 variants
    for run in trials:
        m, params = run.data.metrics, run.data.params
        for name in ("eval/mean_log_r", "eval/exact_mean_log_r", "eval/fd", "eval/exact_fd"):
            assert math.isfinite(m[name]), name
        if params["config.method"] == "sampler":  # the smoke's 20 iterations of batch 64, none replayed
            assert math.isfinite(m["eval/delta_log_z"]) and m["eval/reward_evaluations"] == 20 * 64
        else:  # MALA: 1 + 20 evaluations of each of the generator's chains
            assert m["eval/reward_evaluations"] == int(params["config.mcmc.num_chains"]) * (1 + 20)
        files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "eval/step_0000020")}
        expected = {"samples.png", "exact_samples.png", "images.npz"}
        assert expected | ({"noise_marginals.png"} if params["config.method"] == "sampler" else set()) <= files, files


def test_bad_beta_and_unknown_keys_are_refused_at_validation(tmp_path):
    sweep = ROOT / "sweeps" / "outsourced.yaml"
    for override, key in (("config.beta=0", "config.beta"), ("config.sampler.num_stepz=5", "num_stepz")):
        result = orchestrator_cli("validate", str(sweep), "--set", override, cwd=tmp_path, timeout=60)
        assert result.returncode == 2 and key in result.stderr, result.stderr


def test_each_trial_reserves_its_own_methods_actors():
    """The digits sweep mixes the sampler (learner + replay buffer) and MALA in z (learner + 2 chain actors): each
    trial's placement group holds its method's bundles only, and its actors find their bundle."""
    spec = load_sweep(ROOT / "sweeps" / "outsourced_digits.yaml")
    layouts = {config.method: [role for role, _, _ in role_layout(spec, config)] for config in spec.discrete_configs()}
    assert layouts == {"sampler": ["learner", "replay_buffer"], "mcmc": ["learner", "chains", "chains"]}
    mcmc = next(config for config in spec.discrete_configs() if config.method == "mcmc")
    assert trial_bundles(spec, mcmc)[1:] == [{"CPU": 0.75}, {"CPU": 0.5}, {"CPU": 0.5}]
    context = TrialContext(spec, mcmc, seed=0, trial_id="t_00000")
    assert context.cpus("chains") == 0.5 and context._bundle_index[("chains", 1)] == 3


def test_more_chain_actors_than_chains_are_refused_before_the_trials():
    spec = load_sweep(ROOT / "sweeps" / "outsourced_digits.yaml", ["resources.workers.chains.count=100"])
    with pytest.raises(OrchestratorError, match=r"mcmc.num_chains = 64: set mcmc.num_chains >= 100"):
        prepare(spec, "sqlite:///unused.db")
