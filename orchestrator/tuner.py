"""Every Ray Tune call of the project lives here: a sweep spec becomes a Tuner and runs.

search_space {dotted.key: Domain} -> Tune param_space {dotted.key: grid / choice / ...}
resources -> PlacementGroupFactory([{}, learner, workers...]) per trial
scheduler none / ASHA / PBT, search random / Optuna, stop criteria, checkpoints
callbacks: MLflow child runs + a progress line
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from orchestrator import storage
from orchestrator.callbacks import MlflowCallback, ProgressCallback, trial_done
from orchestrator.errors import OrchestratorError, SpecError, SweepFailed
from orchestrator.placement import cluster_fit_error, trial_bundles
from orchestrator.registry import get_family
from orchestrator.spec import Domain, SweepSpec
from orchestrator.tracking import SweepTracker, check_store, flush_all, provenance_tags, retry_budget_s
from orchestrator.trial import run_trial

SWEEP_FILE = "orchestrator.json"
"""Written into the experiment folder: what `resume` needs (spec, MLflow store, parent run)."""
OUTBOX_FOLDER = "mlflow-outbox"


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
    """{'optim.lr': Domain} -> {'optim.lr': grid_search(...)}: a trial's config (its search-space
    point) keeps the sweep's dotted keys end to end, into `SweepSpec.resolved_config` and MLflow's params."""
    return {key: tune_domain(domain) for key, domain in spec.search_space.items()}


def _scheduler(spec: SweepSpec) -> Any:
    scheduler = spec.tune.scheduler
    if scheduler is None:
        return None
    if scheduler.type == "asha":
        return tune.schedulers.ASHAScheduler(
            time_attr="training_iteration",
            grace_period=scheduler.grace_period,
            reduction_factor=scheduler.reduction_factor,
            max_t=scheduler.max_t or 10**9,
        )
    return tune.schedulers.PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=scheduler.perturbation_interval,
        hyperparam_mutations=param_space(spec),
        quantile_fraction=scheduler.quantile_fraction,
        resample_probability=scheduler.resample_probability,
    )


def _search(spec: SweepSpec) -> Any:
    if spec.tune.search == "random":
        return None
    if any(domain.kind == "grid" for domain in spec.search_space.values()):
        raise SpecError(
            file=str(spec.source or spec.name),
            key="tune.search",
            found="optuna with a grid domain",
            expected="random search when the search space has a grid (Optuna cannot enumerate grids)",
        )
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=spec.seed)


def _stop(spec: SweepSpec) -> dict[str, Any]:
    stop = spec.tune.stop
    return {
        k: v
        for k, v in (("training_iteration", stop.training_iteration), ("time_total_s", stop.time_total_s))
        if v is not None
    }


def _trainable(spec: SweepSpec, tracking: dict[str, str]) -> Any:
    trainable = tune.with_parameters(run_trial, spec=spec, tracking=tracking)
    if get_family(spec.workload).trial_roles is None:
        return tune.with_resources(trainable, tune.PlacementGroupFactory(trial_bundles(spec)))
    # each trial reserves the roles of its own config (a sweep may mix methods that start different actors)
    return tune.with_resources(
        trainable, lambda point: tune.PlacementGroupFactory(trial_bundles(spec, spec.resolved_config(point)))
    )


@dataclass
class SweepHandle:
    """A sweep in its storage: its experiment folder (an absolute local path or a URI, see
    orchestrator/storage.py) and the metadata `resume` reads."""

    path: str
    spec: SweepSpec
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    failed_trials: int = 0
    """Trials that ended in an error in the last `run_sweep` (not saved)."""
    unsent: int = 0
    """MLflow writes still waiting in the outbox when the last `run_sweep` ended (not saved)."""

    def save(self) -> None:
        storage.write_text(
            storage.join(self.path, SWEEP_FILE),
            json.dumps(
                {
                    "spec": self.spec.to_dict(),
                    "source": str(self.spec.source or ""),
                    "tracking_uri": self.tracking_uri,
                    "experiment_id": self.experiment_id,
                    "parent_run_id": self.parent_run_id,
                },
                indent=2,
            ),
        )

    @property
    def outbox(self) -> Path:
        """Where the sweep's MLflow writes wait for the store (orchestrator/outbox.py): `mlflow-outbox` in the
        sweep's folder when that is a local folder (on a cluster, the shared one every node sees), else
        `~/.cache/orchestrator/mlflow-outbox/<sweep folder's name>` on each node."""
        if not storage.is_uri(self.path):
            return Path(self.path) / OUTBOX_FOLDER
        return Path.home() / ".cache" / "orchestrator" / OUTBOX_FOLDER / storage.name(self.path)

    def flush(self, budget_s: float | None = None) -> tuple[int, int]:
        """Send the MLflow writes that wait in the sweep's outboxes: (sent, left)."""
        return flush_all(self.tracking_uri, self.spec.mlflow.experiment, self.outbox, budget_s)

    @classmethod
    def load(cls, path: str | Path) -> SweepHandle:
        path = storage.normalize(path)
        data = json.loads(storage.read_text(storage.join(path, SWEEP_FILE)))
        spec = SweepSpec.from_dict(data["spec"], source=data["source"] or None)
        return cls(path, spec, data["tracking_uri"], data["experiment_id"], data["parent_run_id"])


def storage_root(spec: SweepSpec) -> str:
    """Where the sweep's folder goes: a local folder (absolute) or a URI (s3://, gs://, file://, ...)."""
    return storage.root(spec.storage_path)


def find_sweep(name_or_path: str, storage_path: str | None = None) -> str:
    """A sweep folder by path or URI, or the newest `<storage>/<name>-<time>` folder."""
    path = storage.normalize(name_or_path)
    if storage.exists(storage.join(path, SWEEP_FILE)):
        return path
    root = storage.root(storage_path)
    candidates = [
        storage.join(root, folder)
        for folder in storage.folders(root)
        if folder.startswith(f"{name_or_path}-") and storage.exists(storage.join(root, folder, SWEEP_FILE))
    ]
    if not candidates:
        raise OrchestratorError(
            f"resume: no sweep named or found at {name_or_path!r} (looked for {storage.join(path, SWEEP_FILE)} and "
            f"{storage.join(root, name_or_path + '-*', SWEEP_FILE)}). Pass the folder that `run` printed."
        )
    return candidates[-1]


def _check_fits(spec: SweepSpec) -> None:
    problem = cluster_fit_error(spec)
    if problem is not None:
        raise OrchestratorError(problem)


def _tuner(handle: SweepHandle, tracker: SweepTracker, resume: bool) -> tune.Tuner:
    spec = handle.spec
    tracking = {
        "tracking_uri": handle.tracking_uri,
        "experiment_id": handle.experiment_id,
        "outbox": str(handle.outbox / "trials"),
    }
    trainable = _trainable(spec, tracking)
    if resume:
        # The callbacks were pickled with the experiment and come back with it.
        return tune.Tuner.restore(handle.path, trainable, resume_unfinished=True, resume_errored=True)
    mlflow = MlflowCallback(handle.tracking_uri, tracker.experiment_name, handle.parent_run_id, spec,
                            str(tracker.outbox.folder), handle.experiment_id)  # fmt: skip
    callbacks = [mlflow, ProgressCallback(spec.tune.metric, spec.tune.mode, spec=spec, run_name=mlflow.run_name)]
    run_config = tune.RunConfig(
        name=storage.name(handle.path),
        storage_path=storage.parent(handle.path),
        stop=_stop(spec) or None,
        callbacks=callbacks,
        verbose=0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=spec.tune.max_failures),
    )
    tune_config = tune.TuneConfig(
        metric=spec.tune.metric,
        mode=spec.tune.mode,
        num_samples=spec.tune.num_samples,
        scheduler=_scheduler(spec),
        search_alg=_search(spec),
        max_concurrent_trials=spec.tune.max_concurrent_trials,
    )
    return tune.Tuner(trainable, param_space=param_space(spec), tune_config=tune_config, run_config=run_config)


def check_stores(spec: SweepSpec, tracking_uri: str, folder: str | None = None) -> None:
    """Both stores take writes, or OrchestratorError naming the one that does not and why: the MLflow store (its
    experiment opened or created, and written) and the sweep's storage (`folder`, by default the folder that holds
    sweeps: a probe file written and removed). Costs a second or two; needs no Ray."""
    check_store(tracking_uri, spec.mlflow.experiment)
    storage.check_writable(folder or storage_root(spec))


class _HideTunesRestoreHint(logging.Filter):
    """Tune's "Resume experiment with: Tuner.restore(...)" after an interrupt: `run_sweep` prints our own command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


_TUNES_LOG = logging.getLogger("ray.tune.tune")
if not any(isinstance(f, _HideTunesRestoreHint) for f in _TUNES_LOG.filters):
    _TUNES_LOG.addFilter(_HideTunesRestoreHint())


def run_sweep(spec: SweepSpec, tracking_uri: str, resume_path: str | Path | None = None) -> tuple[SweepHandle, str]:
    """Run (or resume) a sweep to its end; returns it (with `failed_trials`) and the parent run's status: FINISHED
    when the sweep ran to its end (some trials may have failed), FAILED when every trial failed or the sweep itself
    stopped on an error (raised again), KILLED when it was interrupted. Ray must be up.

    Both stores are checked, and the sweep checked against the cluster, before the parent run exists: a mistake
    found there leaves no run behind."""
    if resume_path is not None:
        handle = SweepHandle.load(resume_path)
        check_stores(handle.spec, handle.tracking_uri, handle.path)
        _check_fits(handle.spec)
        get_family(handle.spec.workload).run_prepare(handle.spec, handle.tracking_uri)
        _report_flush(handle, handle.flush()[1])  # what waits from the interrupted run goes first
        tracker = SweepTracker(handle.tracking_uri, handle.spec.mlflow.experiment, handle.outbox / "driver")
        tracker.start_parent(handle.spec.name, handle.spec.to_dict(), parent_run_id=handle.parent_run_id)
    else:
        path = storage.join(storage_root(spec), f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        check_stores(spec, tracking_uri, path)
        _check_fits(spec)
        get_family(spec.workload).run_prepare(spec, tracking_uri)
        tracker = SweepTracker(tracking_uri, spec.mlflow.experiment)
        parent = tracker.start_parent(
            spec.name, spec.to_dict(), params=spec.description(), tags=provenance_tags(spec.source)
        )
        handle = SweepHandle(path, spec, tracker.tracking_uri, tracker.experiment_id, parent)
        tracker = SweepTracker(tracker.tracking_uri, spec.mlflow.experiment, handle.outbox / "driver",
                               experiment_id=tracker.experiment_id)  # fmt: skip
    status = "FAILED"  # until the sweep is seen to end otherwise
    try:
        if resume_path is None:
            handle.save()
        print(
            f"sweep {handle.spec.name}: folder {handle.path}\n  MLflow {handle.tracking_uri}, experiment "
            f"{handle.spec.mlflow.experiment}, parent run {handle.parent_run_id}",
            flush=True,
        )
        tuner = _tuner(handle, tracker, resume=resume_path is not None)
        results = tuner.fit()
        handle.failed_trials = sum(r.error is not None for r in results)
        if any(r.error is None and not trial_done(r.metrics, r.config, handle.spec) for r in results):
            status = "KILLED"
        elif len(results) and handle.failed_trials == len(results):
            status = "FAILED"
        else:
            status = "FINISHED"
        if status != "KILLED":  # the workload's figures over the finished trials, on the parent run
            tracker.log_summary(handle.parent_run_id, handle.spec.workload)
    except KeyboardInterrupt:
        status = "KILLED"
    except OrchestratorError as error:
        raise SweepFailed(f"sweep {handle.spec.name} stopped: {error}") from error
    finally:
        if status != "FINISHED":
            tracker.kill_running_trials(handle.parent_run_id)
        tracker.end_run(handle.parent_run_id, status)
        handle.unsent = handle.flush()[1]
        _report_flush(handle, handle.unsent)
    if status == "KILLED":
        print(f"sweep interrupted; continue it with: python -m orchestrator resume {handle.path}", flush=True)
    return handle, status


def _report_flush(handle: SweepHandle, left: int) -> None:
    """When writes still wait for the store: how many, where, and the command that sends them."""
    if left:
        print(
            f"MLflow store {handle.tracking_uri} did not answer for {retry_budget_s():g} s: {left} writes wait in "
            f"{handle.outbox} (nothing is lost). Send them when it is back with: python -m orchestrator sync "
            f"{handle.path}",
            file=sys.stderr,
            flush=True,
        )


def sync_sweep(path: str | Path) -> tuple[SweepHandle, int, int]:
    """`orchestrator sync`: send the sweep's waiting MLflow writes; (handle, sent, left)."""
    handle = SweepHandle.load(path)
    return handle, *handle.flush()


def init_ray(address: str | None) -> None:
    """Join `address` / RAY_ADDRESS when given, else start a local Ray sized to this machine."""
    if ray.is_initialized():
        return
    # A local Ray's workers inherit this process's environment (MLFLOW_DISABLE_TELEMETRY included);
    # under `ray job submit` the job's own runtime_env (working_dir) must stay untouched.
    ray.init(address=address, configure_logging=False)
