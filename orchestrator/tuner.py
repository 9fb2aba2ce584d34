"""Every Ray Tune call of the project lives here: a sweep spec becomes a Tuner and runs.

    search_space {dotted.key: Domain} -> nested Tune param_space (grid / choice / ...)
    resources -> PlacementGroupFactory([{}, learner, workers...]) per trial
    scheduler none / ASHA / PBT, search random / Optuna, stop criteria, checkpoints
    callbacks: MLflow child runs + a progress line
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from orchestrator.callbacks import MlflowCallback, ProgressCallback
from orchestrator.errors import OrchestratorError, SpecError
from orchestrator.placement import cluster_fit_error, trial_bundles
from orchestrator.spec import Domain, SweepSpec
from orchestrator.tracking import SweepTracker
from orchestrator.trial import run_trial

SWEEP_FILE = "orchestrator.json"
"""Written into the experiment folder: what `resume` needs (spec, MLflow store, parent run)."""


def tune_domain(domain: Domain) -> Any:
    if domain.kind == "choice":
        return tune.choice(domain.values)
    if domain.kind == "grid":
        return tune.grid_search(domain.values)
    if domain.kind == "uniform":
        return tune.uniform(domain.low, domain.high)
    if domain.kind == "loguniform":
        return tune.loguniform(domain.low, domain.high)
    return tune.randint(domain.low, domain.high)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """{'replay.enabled': grid} -> {'replay': {'enabled': grid_search(...)}}."""
    space: dict[str, Any] = {}
    for key, domain in spec.search_space.items():
        *parents, leaf = key.split(".")
        node = space
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tune_domain(domain)
    return space


def _scheduler(spec: SweepSpec) -> Any:
    scheduler = spec.tune.scheduler
    if scheduler is None:
        return None
    if scheduler.type == "asha":
        return tune.schedulers.ASHAScheduler(
            time_attr="training_iteration", grace_period=scheduler.grace_period,
            reduction_factor=scheduler.reduction_factor, max_t=scheduler.max_t or 10**9)
    return tune.schedulers.PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=scheduler.perturbation_interval,
        hyperparam_mutations=param_space(spec), quantile_fraction=scheduler.quantile_fraction,
        resample_probability=scheduler.resample_probability)


def _search(spec: SweepSpec) -> Any:
    if spec.tune.search == "random":
        return None
    if any(domain.kind == "grid" for domain in spec.search_space.values()):
        raise SpecError(file=str(spec.source or spec.name), key="tune.search", found="optuna with a grid domain",
                        expected="random search when the search space has a grid (Optuna cannot enumerate grids)")
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=spec.seed)


def _stop(spec: SweepSpec) -> dict[str, Any]:
    stop = spec.tune.stop
    return {k: v for k, v in (("training_iteration", stop.training_iteration),
                              ("time_total_s", stop.time_total_s)) if v is not None}


def _trainable(spec: SweepSpec, tracking: dict[str, str]) -> Any:
    trainable = tune.with_parameters(run_trial, sweep=spec.to_dict(), tracking=tracking)
    return tune.with_resources(trainable, tune.PlacementGroupFactory(trial_bundles(spec)))


@dataclass
class SweepHandle:
    """A sweep on disk: its experiment folder and the metadata `resume` reads."""

    path: Path
    spec: SweepSpec
    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / SWEEP_FILE).write_text(json.dumps(dict(
            spec=self.spec.to_dict(), source=str(self.spec.source or ""), tracking_uri=self.tracking_uri,
            experiment_id=self.experiment_id, parent_run_id=self.parent_run_id), indent=2))

    @classmethod
    def load(cls, path: Path) -> "SweepHandle":
        data = json.loads((path / SWEEP_FILE).read_text())
        spec = SweepSpec.from_dict(data["spec"], source=data["source"] or None)
        return cls(path, spec, data["tracking_uri"], data["experiment_id"], data["parent_run_id"])


def storage_root(spec: SweepSpec) -> Path:
    return Path(spec.storage_path or "ray_results").resolve()


def find_sweep(name_or_path: str, storage_path: str | None = None) -> Path:
    """A sweep folder by path, or the newest `<storage>/<name>-<time>` folder."""
    path = Path(name_or_path)
    if (path / SWEEP_FILE).exists():
        return path.resolve()
    root = Path(storage_path or "ray_results").resolve()
    candidates = sorted(p for p in root.glob(f"{name_or_path}-*") if (p / SWEEP_FILE).exists())
    if not candidates:
        raise OrchestratorError(
            f"resume: no sweep named or found at {name_or_path!r} (looked for {path / SWEEP_FILE} and "
            f"{root}/{name_or_path}-*/{SWEEP_FILE}). Pass the folder that `run` printed.")
    return candidates[-1]


def _check_fits(spec: SweepSpec) -> None:
    problem = cluster_fit_error(spec)
    if problem is not None:
        raise OrchestratorError(problem)


def _tuner(handle: SweepHandle, tracker: SweepTracker, resume: bool) -> tune.Tuner:
    spec = handle.spec
    tracking = dict(tracking_uri=handle.tracking_uri, experiment_id=handle.experiment_id)
    trainable = _trainable(spec, tracking)
    if resume:
        # The callbacks were pickled with the experiment and come back with it.
        return tune.Tuner.restore(str(handle.path), trainable, resume_unfinished=True, resume_errored=True)
    callbacks = [MlflowCallback(handle.tracking_uri, tracker.experiment_name, handle.parent_run_id, spec),
                 ProgressCallback(spec.tune.metric, spec.tune.mode)]
    run_config = tune.RunConfig(
        name=handle.path.name, storage_path=str(handle.path.parent), stop=_stop(spec) or None,
        callbacks=callbacks, verbose=0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=spec.tune.max_failures),
    )
    tune_config = tune.TuneConfig(
        metric=spec.tune.metric, mode=spec.tune.mode, num_samples=spec.tune.num_samples,
        scheduler=_scheduler(spec), search_alg=_search(spec),
        max_concurrent_trials=spec.tune.max_concurrent_trials,
    )
    return tune.Tuner(trainable, param_space=param_space(spec), tune_config=tune_config, run_config=run_config)


def run_sweep(spec: SweepSpec, tracking_uri: str, resume_path: Path | None = None) -> tuple[SweepHandle, str]:
    """Run (or resume) a sweep to its end; returns it and the parent run's status. Ray must be up."""
    if resume_path is not None:
        handle = SweepHandle.load(resume_path)
        tracker = SweepTracker(handle.tracking_uri, handle.spec.mlflow.experiment or handle.spec.name)
        tracker.start_parent(handle.spec.name, handle.spec.to_dict(), parent_run_id=handle.parent_run_id)
    else:
        tracker = SweepTracker(tracking_uri, spec.mlflow.experiment or spec.name)
        path = storage_root(spec) / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        parent = tracker.start_parent(spec.name, spec.to_dict())
        handle = SweepHandle(path, spec, tracker.tracking_uri, tracker.experiment_id, parent)
        handle.save()
    _check_fits(handle.spec)
    print(f"sweep {handle.spec.name}: folder {handle.path}\n  MLflow {handle.tracking_uri}, experiment "
          f"{handle.spec.mlflow.experiment or handle.spec.name}, parent run {handle.parent_run_id}", flush=True)
    tuner = _tuner(handle, tracker, resume=resume_path is not None)
    status = "FINISHED"
    try:
        results = tuner.fit()
        if any(r.error is None and not _trial_done(r) for r in results):
            status = "KILLED"
        elif len(results) and all(r.error is not None for r in results):
            status = "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
    finally:
        tracker.end_run(handle.parent_run_id, status)
    if status == "KILLED":
        _mark_running_killed(tracker, handle)
        print(f"sweep interrupted; continue it with: python -m orchestrator resume {handle.path}", flush=True)
    return handle, status


def _trial_done(result: Any) -> bool:
    return bool(result.metrics.get("done")) if result.metrics else False


def _mark_running_killed(tracker: SweepTracker, handle: SweepHandle) -> None:
    for run in tracker.client.search_runs([handle.experiment_id],
                                          filter_string=f"tags.`mlflow.parentRunId` = '{handle.parent_run_id}'"):
        if run.info.status == "RUNNING":
            tracker.end_run(run.info.run_id, "KILLED")


def init_ray(address: str | None) -> None:
    """Join `address` / RAY_ADDRESS when given, else start a local Ray sized to this machine."""
    if ray.is_initialized():
        return
    # A local Ray's workers inherit this process's environment (MLFLOW_DISABLE_TELEMETRY included);
    # under `ray job submit` the job's own runtime_env (working_dir) must stay untouched.
    ray.init(address=address, configure_logging=False)
