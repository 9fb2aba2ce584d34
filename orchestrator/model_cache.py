"""Models that many trials share (a fitted diffusion prior, a trained classifier), fitted once and kept in the
sweep's MLflow store as LoggedModels, keyed by a content hash of everything that determines them.

    content_hash(kind, key) = sha256(json({"kind": kind, "key": key}, sorted keys))[:16]

Each fit is one run of the experiment `cached-models` (params: the key; metrics: the fit's statistics) with one
LoggedModel (name: the kind; tags: content_hash, kind) whose artifacts are the model's files. `find` returns the
newest READY model with a given hash, so two sweeps that fit the same model at once both succeed, and either
copy serves later ones. Names no family: a family's `prepare` (registry.py) decides what to fit and how.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_EXPERIMENT = "cached-models"
"""The MLflow experiment that holds every cached model's fit run."""


def content_hash(kind: str, key: dict[str, Any]) -> str:
    """16 hex digits of sha256 over the kind and the key's JSON (sorted keys): equal keys, equal hashes."""
    text = json.dumps({"kind": kind, "key": key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CachedModel:
    model_id: str
    """MLflow's LoggedModel id (`models:/<model_id>`)."""
    kind: str
    content_hash: str
    source_run_id: str
    """The run that fitted it (experiment `cached-models`)."""


def find(tracking_uri: str, kind: str, key: dict[str, Any]) -> CachedModel | None:
    """The newest READY model of `kind` whose content hash is that of `key`, or None."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(CACHE_EXPERIMENT)
    if experiment is None:
        return None
    digest = content_hash(kind, key)
    models = client.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"tags.content_hash = '{digest}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
    )
    ready = [m for m in models if m.status == mlflow.entities.LoggedModelStatus.READY]
    if not ready:
        return None
    return CachedModel(ready[0].model_id, kind, digest, ready[0].source_run_id)


def store(
    tracking_uri: str, kind: str, key: dict[str, Any], files: dict[str, bytes], metrics: dict[str, float]
) -> CachedModel:
    """Logs one fit: a run with the key as params and `metrics`, and a READY LoggedModel holding `files`."""
    import mlflow
    from mlflow import MlflowClient

    from orchestrator.tracking import open_experiment

    client = MlflowClient(tracking_uri)
    experiment_id = open_experiment(client, tracking_uri, CACHE_EXPERIMENT)
    digest = content_hash(kind, key)
    tags = {"content_hash": digest, "kind": kind}
    run = client.create_run(experiment_id, run_name=f"{kind}-{digest}", tags=tags)
    run_id = run.info.run_id
    try:
        for name, value in key.items():
            client.log_param(run_id, name, json.dumps(value) if not isinstance(value, str) else value)
        for name, value in metrics.items():
            client.log_metric(run_id, name, float(value))
        model = client.create_logged_model(experiment_id, name=kind, source_run_id=run_id, tags=tags)
        with tempfile.TemporaryDirectory() as folder:
            for name, data in files.items():
                (Path(folder) / name).write_bytes(data)
            client.log_model_artifacts(model.model_id, folder)
        client.finalize_logged_model(model.model_id, mlflow.entities.LoggedModelStatus.READY)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return CachedModel(model.model_id, kind, digest, run_id)


def load_files(tracking_uri: str, model_id: str) -> dict[str, bytes]:
    """The files of a cached model, by name."""
    import mlflow
    from mlflow import MlflowClient

    model = MlflowClient(tracking_uri).get_logged_model(model_id)
    with tempfile.TemporaryDirectory() as folder:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=model.artifact_location, dst_path=folder, tracking_uri=tracking_uri
        )
        return {file.name: file.read_bytes() for file in Path(path).iterdir() if file.is_file()}


def fit_if_missing(
    tracking_uri: str,
    kind: str,
    key: dict[str, Any],
    fit: Callable[[], tuple[dict[str, bytes], dict[str, float]]],
    *,
    label: str,
    missing: str,
    missing_field: str,
) -> CachedModel:
    """The cached model of (kind, key). If the store lacks it: with missing == "fit", `fit()` -> (files, metrics)
    is stored and returned; with "fail", an OrchestratorError naming `missing_field` (e.g. config.prior_missing).
    Progress lines start with `label` and the content hash."""
    from orchestrator.errors import OrchestratorError

    digest = content_hash(kind, key)
    found = find(tracking_uri, kind, key)
    if found is not None:
        print(f"{label} {digest}: cached (MLflow model {found.model_id})", flush=True)
        return found
    field = missing_field.rsplit(".", 1)[-1]
    if missing == "fail":
        raise OrchestratorError(
            f"{missing_field}: the MLflow store {tracking_uri} has no fitted {kind} {digest} "
            f"({', '.join(f'{k}={v}' for k, v in key.items())}), and {field} is 'fail'. Run the sweep once with "
            f"{field}: fit (the default), or point --tracking-uri at the store that has it."
        )
    print(f"{label} {digest}: not cached, fitting the {kind} before the trials", flush=True)
    start = time.monotonic()
    files, metrics = fit()
    stored = store(tracking_uri, kind, key, files, metrics)
    print(f"{label} {digest}: fitted in {time.monotonic() - start:.0f} s, MLflow model {stored.model_id}", flush=True)
    return stored
