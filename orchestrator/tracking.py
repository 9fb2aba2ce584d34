"""Every MLflow call of the project lives here: MLflow's API moves between releases.

Layout in MLflow: one experiment per sweep name, one parent run per sweep, one child run per
Tune trial (tag `mlflow.parentRunId`), so the MLflow UI groups a sweep.

Who writes what: the Tune driver (one process) writes params, metrics and run status, so a
SQLite store has a single writer. Trials write only artifacts (figures, Parquet samples) into
their own run's artifact location, which they find by the tag `orchestrator.trial_id`, under
`eval/step_NNNNNNN/` per evaluation; `sample` reads the newest of them back.

A store that is briefly unreachable (an `mlflow server` restarting, a network blip) does not fail a
trial: every call goes through `_retry`, which retries with exponential back-off for up to
`ORCHESTRATOR_MLFLOW_RETRY_S` seconds (default 120), and metric batches that still cannot be sent
wait in the driver's `SweepTracker` and go out, oldest first, with the next call that reaches the store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.errors import OrchestratorError

EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
BEST_TRIAL_TAG = "orchestrator.best_trial"
"""Parent-run tag: the name of the best trial so far (by the sweep's tune.metric and mode)."""
BEST_RUN_TAG = "orchestrator.best_run_id"
TRIAL_TAG = "orchestrator.trial_id"
SWEEP_TAG = "orchestrator.sweep"
PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "orchestrator.role"
TRAIN_HISTORY_KEY = "train_history"
"""A report's training metrics between two evaluations, [[step, {metric: value}], ...], oldest first: logged at their
own steps (thinned to `mlflow.train_points` per run), so training curves have more than one point per report."""
PLACEMENT_KEY = "placement"
IMAGES_KEY = "step_images"
"""A trial's report: how many step-keyed images it logged with this report (the callback tags the run)."""
"""A trial's report {'trial': node id, 'learner.0': node id, ...}: where it and its actors run."""
NODE_TAG = "orchestrator.node."
"""Tag prefix of a trial run: `orchestrator.node.learner.0` = the Ray node id of that actor (the last one
reported: it moves when a node is lost), `orchestrator.node.trial` = the trial function's node."""
# Logged with every report (the callback adds it), so its history tells the last step a run logged.
STEP_METRIC = "time_total_s"

_PARAM_BATCH = 100  # log_batch accepts at most 100 params per call
_METRIC_BATCH = 1000
_PARAM_VALUE_MAX = 6000
_PARAM_NAME = re.compile(r"[\w\-. :/]+")  # what MLflow accepts in a param or metric name

T = TypeVar("T")

log = logging.getLogger(__name__)

RETRY_BUDGET_ENV = "ORCHESTRATOR_MLFLOW_RETRY_S"
DEFAULT_RETRY_BUDGET_S = 120.0
"""How long one MLflow call keeps retrying an unreachable store: a tracking server restarts in ~15-20 s."""
_FIRST_WAIT_S = 0.5
_MAX_WAIT_S = 8.0


def _client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient whose HTTP layer leaves retrying to `_retry`, the one retry layer. Without these, MLflow's
    HTTP client would itself retry every request 7 times over ~4 minutes inside each of our attempts, and wait up
    to 120 s for an answer. A user's own setting of either variable wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    return MlflowClient(tracking_uri)


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative SQLite path absolute, so trials in other working directories find it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def retry_budget_s() -> float:
    return float(os.environ.get(RETRY_BUDGET_ENV) or DEFAULT_RETRY_BUDGET_S)


def _transient(error: Exception) -> bool:
    """Worth another try: the store is unreachable, too slow, or failed on its side (HTTP 5xx or 429).
    A request the store rejects (4xx: a bad value, a missing run) would fail the same way again, and so would a
    local SQLite file that cannot be opened or written (`_database_error`), which MLflow reports as 503 too."""
    if _database_error(error) is not None:
        return False
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return True


def _database_error(error: BaseException | None) -> str | None:
    """The message of the local SQLite error behind `error` (sqlite3's, under SQLAlchemy's and MLflow's) that
    retrying cannot mend: a file that cannot be opened, a read-only database, a disk I/O error, a file that is not a
    database. None when there is none, and for the ones that pass: the database locked or busy (another writer), or
    moved away from under the open store (SQLITE_READONLY_DBMOVED: its folder renamed or unmounted; it may come
    back). An http store never has one: its errors come as HTTP answers, not from this process's sqlite3."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sqlite3.Error):
            code = getattr(error, "sqlite_errorcode", None)
            passes = code is not None and (code & 0xFF in _SQLITE_BUSY_OR_LOCKED or code == _SQLITE_READONLY_DBMOVED)
            return None if passes else str(error).splitlines()[0]
        error = error.__cause__ or error.__context__
    return None


_SQLITE_BUSY_OR_LOCKED = (5, 6)
_SQLITE_READONLY_DBMOVED = 1032


def _retry(fn: Callable[[], T], what: str) -> T:
    """Call `fn`; while it fails with a transient error, retry with exponential back-off (0.5 s doubling to
    8 s) for up to `retry_budget_s()` seconds, then raise OrchestratorError. A repeated request is harmless:
    a metric batch is built once (same timestamps), so one that did arrive is not stored twice."""
    budget = retry_budget_s()
    deadline = time.monotonic() + budget
    wait, attempt = _FIRST_WAIT_S, 1
    while True:
        try:
            return fn()
        except Exception as error:  # MLflow raises many kinds for a lost server
            if not _transient(error):
                raise OrchestratorError(f"MLflow: {what} failed: {_database_error(error) or error}") from error
            left = deadline - time.monotonic()
            if left <= 0:
                raise OrchestratorError(
                    f"MLflow: {what} failed for {budget:g} s ({attempt} attempts; {RETRY_BUDGET_ENV} sets how "
                    f"long): {error}"
                ) from error
            if attempt == 1:
                log.warning("MLflow: %s failed (%s); retrying for up to %g s", what, str(error)[:200], budget)
            time.sleep(min(wait, left))
            wait = min(wait * 2, _MAX_WAIT_S)
            attempt += 1


def check_store(tracking_uri: str, experiment: str) -> None:
    """Fail now, with one paragraph naming the store and the reason, when the MLflow store cannot take the sweep:
    a local SQLite file is opened and written (in a transaction rolled back) with sqlite3 first, as MLflow would
    retry opening it for ~100 s; then the experiment is opened or created and tagged, a write; then a local
    artifact root gets a probe file, written and removed. An http store that does not answer is retried as any call
    (`_retry`)."""
    uri = resolve_tracking_uri(tracking_uri)
    where = "--tracking-uri, the sweep's mlflow.tracking_uri or MLFLOW_TRACKING_URI"

    def fail(reason: str) -> OrchestratorError:
        return OrchestratorError(
            f"MLflow store {uri}: {reason}. Nothing was started. Give a store this machine can write ({where})."
        )

    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :].split("?", 1)[0])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise fail(f"cannot create its folder {path.parent} ({_os_reason(path.parent, error)})") from None
        try:
            db = sqlite3.connect(path, timeout=10, isolation_level=None)
            try:
                db.execute("PRAGMA schema_version").fetchone()  # reads the header: "file is not a database"
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE orchestrator_store_probe (x)")  # a write, rolled back
                db.execute("ROLLBACK")
            finally:
                db.close()
        except sqlite3.Error as error:
            if not re.search(r"locked|busy", str(error), re.IGNORECASE):  # another writer: MLflow waits for it
                raise fail(f"SQLite cannot open or write {path} ({error})") from None
    try:
        tracker = SweepTracker(uri, experiment)
        for key, value in EXPERIMENT_TAGS.items():  # a write that changes nothing
            _retry(partial(tracker.client.set_experiment_tag, tracker.experiment_id, key, value), "tagging it")
        location = _retry(lambda: tracker.client.get_experiment(tracker.experiment_id), "reading it").artifact_location
    except OrchestratorError as error:
        reason = _database_error(error.__cause__) or str(error.__cause__ or error).splitlines()[0]
        raise fail(f"cannot open or write experiment {experiment!r} ({reason})") from None
    root = _local_path(location)
    if root is not None:
        probe = root / f".orchestrator-probe-{uuid.uuid4().hex}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"probe")
            probe.unlink()
        except OSError as error:
            raise fail(f"cannot write its artifact folder {root} ({_os_reason(root, error)})") from None


def _os_reason(folder: Path, error: OSError) -> str:
    """Why a folder cannot be made or written, in words: a file in the way, or the system's reason."""
    blocked = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    return f"{blocked} is a file, not a folder" if blocked is not None else str(error.strerror or error)


def _local_path(location: str | None) -> Path | None:
    """The local folder of an artifact location (a file:// URI or a path); None for a remote one."""
    if not location:
        return None
    if location.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    return None if "://" in location or location.startswith("mlflow-artifacts:") else Path(location)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: MLflow params are flat. A mapping with a key that MLflow does not
    accept in a param name (e.g. the variant 'TB + Expl.') stays one param, logged as its JSON."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(_PARAM_NAME.fullmatch(str(k)) for k in value):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class SweepTracker:
    """The driver side: experiment, parent run, child runs, metrics by step, run status."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = _client(self.tracking_uri)
        self.experiment_name = experiment
        self.experiment_id = _retry(lambda: self._experiment(experiment), f"opening experiment {experiment!r}")
        self._run_of_trial: dict[str, str] = {}
        # A resumed trial restarts from its last checkpoint, which may be older than the last step it
        # logged before the interruption; steps up to this mark are already in MLflow and are not logged twice.
        self._logged_through: dict[str, int] = {}
        # Metric batches (run id, metrics) not yet in the store, oldest first: see `flush`.
        self._unsent: list[tuple[str, list[Metric]]] = []

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifact_location = None
        if self.tracking_uri.startswith("sqlite:///"):
            # Keep artifacts beside the database rather than in whatever directory we run from.
            db_path = Path(self.tracking_uri[len("sqlite:///") :])
            artifact_location = (db_path.parent / "mlartifacts").as_uri()
        try:
            # Tagged as model development, MLflow 3's UI opens the experiment on its runs table, not its GenAI view.
            return self.client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
        except MlflowException as error:
            # Another sweep, or our own earlier attempt whose answer was lost, created it meanwhile.
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    # -- parent run -----------------------------------------------------------------------
    def start_parent(
        self,
        sweep_name: str,
        sweep: dict[str, Any],
        parent_run_id: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Open (or reopen, on resume) the sweep's parent run and log the sweep once: `params` flattened (default:
        the sweep), `tags` (e.g. `provenance_tags`) and the whole sweep as sweep.json."""
        if parent_run_id is not None:
            _retry(lambda: self.client.update_run(parent_run_id, status="RUNNING"), "reopening the parent run")
            return parent_run_id
        run_tags = {**(tags or {}), SWEEP_TAG: sweep_name, ROLE_TAG: "sweep"}
        run = _retry(
            lambda: self.client.create_run(self.experiment_id, run_name=sweep_name, tags=run_tags),
            "creating the parent run",
        )
        run_id = run.info.run_id
        self._log_params(run_id, flatten(sweep if params is None else params))
        self.log_text(run_id, json.dumps(sweep, indent=2, default=str), "sweep.json")
        return run_id

    def end_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """status: FINISHED, FAILED or KILLED. Metrics still waiting are sent first: a run is not closed
        over missing metrics, and a store still unreachable after the retries fails the call."""
        self.flush(raise_on_failure=True)
        if error:
            tags = [RunTag("orchestrator.error", error[:5000])]
            _retry(lambda: self.client.log_batch(run_id, tags=tags), "tagging the error")
        _retry(lambda: self.client.set_terminated(run_id, status=status), f"setting run status {status}")

    # -- child runs -----------------------------------------------------------------------
    def run_of_trial(self, trial_id: str) -> str | None:
        """The child run this tracker already opened for the trial, if any."""
        return self._run_of_trial.get(trial_id)

    def trial_run(
        self,
        parent_run_id: str,
        trial_id: str,
        trial_name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> str:
        """The child run of a trial: found by its tag when it exists (resume), else created (with `tags`)."""
        if trial_id in self._run_of_trial:
            return self._run_of_trial[trial_id]
        existing = find_trial_run(self.client, self.experiment_id, trial_id)
        if existing is not None:
            run_id = existing
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopening a trial run")
            history = _retry(lambda: self.client.get_metric_history(run_id, STEP_METRIC), "reading the last step")
            self._logged_through[run_id] = max((m.step for m in history), default=-1)
        else:
            tags = {**(tags or {}), PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial"}
            run = _retry(
                lambda: self.client.create_run(self.experiment_id, run_name=trial_name, tags=tags),
                "creating a trial run",
            )
            run_id = run.info.run_id
            self._log_params(run_id, flatten(params))
        self._run_of_trial[trial_id] = run_id
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """One `log_batch` per report, not a call per key; a step already logged before a resume is skipped.
        Never fails for an unreachable store: what cannot be sent waits for the next call (see `flush`)."""
        if step <= self._logged_through.get(run_id, -1):
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if _is_number(v)]
        self._unsent += [
            (run_id, batch[start : start + _METRIC_BATCH]) for start in range(0, len(batch), _METRIC_BATCH)
        ]
        self.flush()

    def log_metric_history(self, run_id: str, points: list[tuple[int, dict[str, float]]]) -> None:
        """Metrics at several steps in as few `log_batch` calls as the batch limit allows; steps already logged
        before a resume are skipped."""
        through = self._logged_through.get(run_id, -1)
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for step, metrics in points if step > through
                 for k, v in metrics.items() if _is_number(v)]  # fmt: skip
        self._unsent += [
            (run_id, batch[start : start + _METRIC_BATCH]) for start in range(0, len(batch), _METRIC_BATCH)
        ]
        self.flush()

    @property
    def unsent(self) -> int:
        """Metric batches waiting for the store."""
        return len(self._unsent)

    def flush(self, raise_on_failure: bool = False) -> bool:
        """Send the waiting metric batches, oldest first, each with `_retry`. When the store stays unreachable
        they keep waiting, with a warning (or OrchestratorError if `raise_on_failure`); True when none wait."""
        while self._unsent:
            run_id, chunk = self._unsent[0]
            try:
                _retry(partial(self.client.log_batch, run_id, metrics=chunk), "logging metrics")
            except OrchestratorError as error:
                if not _transient(error.__cause__):
                    self._unsent.pop(0)  # the store rejects it (e.g. a bad metric name): it would block the rest
                    raise
                if raise_on_failure:
                    raise OrchestratorError(f"{error} ({len(self._unsent)} metric batches not logged)") from error
                log.warning(
                    "MLflow unreachable: %d metric batches wait for the next report (%s)", len(self._unsent), error
                )
                return False
            self._unsent.pop(0)
        return True

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(run_id, tags=batch), "setting tags")

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        _retry(lambda: self.client.log_text(run_id, text, artifact_file), f"logging {artifact_file}")

    def log_sweep_outcome(self, parent_run_id: str, outcome: SweepOutcome) -> None:
        """The sweep's outcome on its parent run, as trials finish: the best trial as tags and as a link in the run's
        description, its final metrics as the parent's metrics (step = trials ended so far), and the table of every
        ended trial (searched values, status, final metrics) as trials.md and trials.parquet."""
        best = outcome.best()
        ended = sum(row.status in ("FINISHED", "FAILED") for row in outcome.rows)
        note = outcome.markdown(self.experiment_id)
        tags = {"mlflow.note.content": note}
        if best is not None:
            tags |= {BEST_TRIAL_TAG: best.name, BEST_RUN_TAG: best.run_id}
            numbers = {k: v for k, v in best.finals.items() if _is_number(v) and math.isfinite(v)}
            metrics = [Metric(k, float(v), int(time.time() * 1000), ended) for k, v in numbers.items()]
            for start in range(0, len(metrics), _METRIC_BATCH):
                chunk = metrics[start : start + _METRIC_BATCH]
                _retry(partial(self.client.log_batch, parent_run_id, metrics=chunk), "logging the best trial's metrics")
        self.set_tags(parent_run_id, tags)
        self.log_text(parent_run_id, note, "trials.md")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "trials.parquet"
            outcome.write_parquet(path)
            _retry(lambda: self.client.log_artifact(parent_run_id, str(path)), "logging trials.parquet")

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        _retry(lambda: self.client.log_figure(run_id, figure, artifact_file), f"logging {artifact_file}")

    def trial_histories(self, parent_run_id: str, status: str = "FINISHED") -> list[TrialHistory]:
        """The sweep's trial runs in `status`, oldest first, each with its params and every metric's history:
        what a workload's sweep summary reads (`registry.Family.summary`)."""
        where = f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = '{status}'"
        runs = _search_runs(self.client, self.experiment_id, where, "searching for the trials' runs")
        trials = []
        for run in runs:
            run_id = run.info.run_id
            histories = {}
            for key in run.data.metrics:
                history = _retry(partial(self.client.get_metric_history, run_id, key), f"reading the history of {key}")
                histories[key] = sorted((m.step, m.value) for m in history)
            trials.append(TrialHistory(run.info.run_name, run_id, dict(run.data.params), histories))
        return trials

    def kill_running_trials(self, parent_run_id: str) -> None:
        """End as KILLED the sweep's trial runs still RUNNING (an interrupted or failed sweep)."""
        where = f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
        for run in _search_runs(self.client, self.experiment_id, where, "searching for running trials"):
            self.end_run(run.info.run_id, "KILLED")

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        batch = [Param(k, _param_value(v)) for k, v in params.items()]
        for start in range(0, len(batch), _PARAM_BATCH):
            chunk = batch[start : start + _PARAM_BATCH]
            _retry(partial(self.client.log_batch, run_id, params=chunk), "logging params")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value))


def _param_value(value: Any) -> str:
    """Strings as they are, everything else as JSON (None -> null, True -> true), as a sweep file writes it."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_PARAM_VALUE_MAX]


def _search_runs(
    client: MlflowClient, experiment_id: str, where: str, what: str, newest_first: bool = False, most: int = 10_000
) -> list:
    """The experiment's runs matching the filter `where`, by start time (oldest first unless `newest_first`)."""
    order = ["attributes.start_time DESC" if newest_first else "attributes.start_time ASC"]
    return _retry(partial(client.search_runs, [experiment_id], where, order_by=order, max_results=most), what)


def find_trial_run(client: MlflowClient, experiment_id: str, trial_id: str) -> str | None:
    runs = _search_runs(client, experiment_id, f"tags.`{TRIAL_TAG}` = '{trial_id}'", "searching for a trial's run")
    return runs[0].info.run_id if runs else None


@dataclass
class TrialArtifacts:
    """The trial side: writes figures and files into the trial's own run (no DB writes)."""

    tracking_uri: str
    experiment_id: str
    trial_id: str
    _run_id: str | None = None

    def run_id(self, wait_s: float = 60.0) -> str:
        """The driver creates the child run when the trial starts; wait for it briefly."""
        if self._run_id is None:
            client = _client(self.tracking_uri)
            deadline = time.monotonic() + wait_s
            while (run_id := find_trial_run(client, self.experiment_id, self.trial_id)) is None:
                if time.monotonic() > deadline:
                    raise OrchestratorError(f"MLflow: no run for trial {self.trial_id} after {wait_s:.0f} s")
                time.sleep(0.5)
            self._run_id = run_id
        return self._run_id

    def log_files(self, files: dict[str, Callable[[Path], None]], artifact_dir: str, step: int | None = None) -> int:
        """`files` maps a file name to a function that writes it; all land in `artifact_dir`. With `step`, each PNG
        is also logged as a step-keyed image (`step_images`), which the MLflow UI shows with a step slider and
        compares across runs. Returns the number of such images."""
        client = _client(self.tracking_uri)
        run_id = self.run_id()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "out"
            folder.mkdir()
            for name, write in files.items():
                write(folder / name)
            _retry(lambda: client.log_artifacts(run_id, str(folder), artifact_dir), f"logging {artifact_dir}")
            pngs = sorted(folder.glob("*.png")) if step is not None else []
            if pngs:
                images = Path(tmp) / "images"
                step_images(pngs, step, images)
                _retry(lambda: client.log_artifacts(run_id, str(images), "images"), "logging step images")
        return len(pngs)


LOGGED_IMAGES_TAG = "mlflow.loggedImages"
"""Run tag by which the MLflow UI knows a run has step-keyed images; set by the driver (trials write no tags)."""


def step_images(pngs: list[Path], step: int, folder: Path) -> None:
    """Write each PNG into `folder` as MLflow's `log_image(key=..., step=...)` names them (the key is the file's
    stem): the image and its compressed preview. Only files are written, so a trial makes no store writes."""
    import uuid

    from mlflow.tracking.multimedia import compress_image_size
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    timestamp = int(time.time() * 1000)
    for png in pngs:
        key = re.sub(r"[^A-Za-z0-9_\-. ]", "_", png.stem)
        base = folder / f"{key}+step+{step}+timestamp+{timestamp}+{uuid.uuid4()}"
        with Image.open(png) as image:
            image.save(f"{base}.png")
            compress_image_size(image).save(f"{base}+compressed.webp")


def download_latest_eval_file(tracking_uri: str, run_id: str, name: str, destination: Path) -> tuple[str, Path]:
    """The file `name` of the run's newest evaluation that has it: (artifact path `eval/step_NNNNNNN/name`,
    its local copy under `destination`). Raises OrchestratorError naming the store, the run and the file."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        # MLflow would create an empty store there and report the run as missing.
        raise OrchestratorError(
            f"No MLflow store at {uri}; pass the store that holds run {run_id} with "
            f"--tracking-uri (or set MLFLOW_TRACKING_URI)."
        )
    client = _client(uri)
    try:
        _retry(lambda: client.get_run(run_id), f"reading run {run_id!r} from {uri}")
    except OrchestratorError as error:
        if getattr(error.__cause__, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise OrchestratorError(
                f"MLflow store {uri} has no run {run_id!r}; give the run id of a trial "
                f"(a child run of a sweep, shown in the MLflow UI)."
            ) from error.__cause__
        raise
    steps = _retry(lambda: client.list_artifacts(run_id, "eval"), f"listing the evaluations of run {run_id}")
    for step in sorted((f.path for f in steps if f.is_dir), reverse=True):  # step_NNNNNNN sorts by step
        files = _retry(partial(client.list_artifacts, run_id, step), f"listing {step} of run {run_id}")
        if any(Path(f.path).name == name for f in files):
            path = f"{step}/{name}"
            local = _retry(partial(client.download_artifacts, run_id, path, str(destination)), f"downloading {path}")
            return path, Path(local)
    raise OrchestratorError(
        f"Run {run_id} in MLflow store {uri} has no eval/step_*/{name} artifact (found "
        f"{len([f for f in steps if f.is_dir])} evaluation folders); is it a trial run of a "
        f"workload that writes {name}?"
    )


@dataclass
class TrialRow:
    name: str
    status: str
    params: dict[str, str]
    final: float | None
    best: float | None
    run_id: str
    finals: dict[str, float]
    """Every metric of the run at its last logged step."""


@dataclass
class TrialHistory:
    """A trial run as a sweep summary sees it."""

    name: str
    run_id: str
    params: dict[str, str]
    """The run's params (flattened resolved config `config.<field>`, `sampled.<key>`, `seed`, ...), as strings."""
    metrics: dict[str, list[tuple[int, float]]]
    """Metric -> [(step, value)] in step order."""


@dataclass
class SweepTrials:
    """The trials of a sweep as `report` reads them back from MLflow."""

    workload: str | None
    """The sweep's family (its parent run's param `workload`); None where no parent run was found."""
    experiment_id: str
    metric: str | None
    rows: list[TrialRow]


@dataclass
class TrialOutcome:
    """One trial as the sweep's parent run tabulates it."""

    name: str
    run_id: str
    status: str
    """RUNNING, FINISHED or FAILED."""
    searched: dict[str, Any]
    """The trial's search-space point, by dotted key."""
    finals: dict[str, float]
    """Its last reported metrics."""


@dataclass
class SweepOutcome:
    """Every trial of a sweep so far, and which is best by `metric` (`mode` min or max)."""

    metric: str
    mode: str
    rows: list[TrialOutcome]

    def best(self) -> TrialOutcome | None:
        scored = [r for r in self.rows if r.status == "FINISHED" and _is_number(r.finals.get(self.metric))]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        return pick(scored, key=lambda r: r.finals[self.metric])

    def markdown(self, experiment_id: str) -> str:
        """The best trial (a link the MLflow UI opens) and one table row per trial."""
        best = self.best()
        finished = sum(r.status == "FINISHED" for r in self.rows)
        failed = sum(r.status == "FAILED" for r in self.rows)
        head = (
            f"**Best trial: [{best.name}](#/experiments/{experiment_id}/runs/{best.run_id})**, "
            f"{self.metric} = {best.finals[self.metric]:.4g} ({self.mode})"
            if best
            else f"No finished trial has {self.metric} yet."
        )
        keys = list(dict.fromkeys(k for r in self.rows for k in r.searched))
        lines = [
            head,
            "",
            f"{finished} finished, {failed} failed, {len(self.rows)} trials in all.",
            "",
            "| trial | status | " + " | ".join(keys) + f" | {self.metric} |",
            "|---|---|" + "---|" * len(keys) + "---|",
        ]
        for r in self.rows:
            value = r.finals.get(self.metric)
            shown = f"{value:.4g}" if _is_number(value) else "-"
            cells = [str(r.searched.get(k, "")) for k in keys]
            lines.append(f"| {r.name} | {r.status} | " + " | ".join(cells) + f" | {shown} |")
        return "\n".join(lines) + "\n"

    def write_parquet(self, path: Path) -> None:
        """One row per trial: name, run_id, status, every searched value (as text) and every final metric."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(dict.fromkeys(k for r in self.rows for k in r.searched))
        metrics = sorted({k for r in self.rows for k, v in r.finals.items() if _is_number(v)})
        columns: dict[str, list] = {"trial": [r.name for r in self.rows], "run_id": [r.run_id for r in self.rows],
                                    "status": [r.status for r in self.rows]}  # fmt: skip
        columns |= {k: [_param_value(r.searched[k]) if k in r.searched else None for r in self.rows] for k in keys}
        columns |= {k: [float(r.finals[k]) if k in r.finals else None for r in self.rows] for k in metrics}
        pq.write_table(pa.table(columns), path)


def provenance_tags(source: str | Path | None) -> dict[str, str]:
    """MLflow's standard tags of where a run came from: the sweep file (the UI's "Source"), the user, the git
    commit of the file's working tree (when it is in one; a `ray job submit` working-dir copy has none), and the
    command line as `orchestrator.command`."""
    import getpass
    import subprocess
    import sys

    command = " ".join(["python -m orchestrator", *sys.argv[1:]]) if sys.argv[0].endswith("__main__.py") else ""
    tags = {
        "mlflow.source.name": str(source or command or sys.argv[0]),
        "mlflow.source.type": "LOCAL",
        "orchestrator.command": command or " ".join(sys.argv),
    }
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    folder = Path(source).resolve().parent if source else Path.cwd()
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        tags["mlflow.source.git.commit"] = commit
    return tags


def trial_table(tracking_uri: str, experiment: str, metric: str | None = None, mode: str | None = None) -> SweepTrials:
    """The trials of the newest sweep in `experiment`, for `report`.
    Metric and mode default to the sweep's `tune.metric` and `tune.mode`."""
    client = _client(resolve_tracking_uri(tracking_uri))
    found = _retry(lambda: client.get_experiment_by_name(experiment), f"reading experiment {experiment!r}")
    if found is None:
        raise OrchestratorError(f"MLflow store {tracking_uri}: no experiment named {experiment!r}.")
    sweep_runs = f"tags.`{ROLE_TAG}` = 'sweep'"
    parents = _search_runs(client, found.experiment_id, sweep_runs, "searching for the sweep's run", True, 1)
    parent_filter = f" and tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'" if parents else ""
    trial_runs = f"tags.`{ROLE_TAG}` = 'trial'{parent_filter}"
    runs = _search_runs(client, found.experiment_id, trial_runs, "searching for the trials' runs")
    workload = None
    if parents:
        metric = metric or parents[0].data.params.get("tune.metric")
        mode = mode or parents[0].data.params.get("tune.mode")
        workload = parents[0].data.params.get("workload")
    mode = mode or "min"
    rows = []
    for run in runs:
        final = run.data.metrics.get(metric) if metric else None
        best = None
        if metric and final is not None:
            history = [
                m.value
                for m in _retry(
                    partial(client.get_metric_history, run.info.run_id, metric), f"reading the history of {metric}"
                )
            ]
            best = min(history) if mode == "min" else max(history)
        rows.append(
            TrialRow(
                run.info.run_name,
                run.info.status,
                dict(run.data.params),
                final,
                best,
                run.info.run_id,
                dict(run.data.metrics),
            )
        )
    return SweepTrials(workload, found.experiment_id, metric, rows)


def ui_hint(tracking_uri: str, experiment_id: str | None = None) -> str:
    """How to open the MLflow UI on the experiment's runs table."""
    uri = resolve_tracking_uri(tracking_uri)
    page = f"/#/experiments/{experiment_id}/runs" if experiment_id else ""
    if uri.startswith(("http://", "https://")):
        return f"Open the MLflow UI at {uri.rstrip('/')}{page}"
    return (
        f"Open the MLflow UI with: mlflow ui --host 127.0.0.1 --backend-store-uri {uri}  (then "
        f"http://127.0.0.1:5000{page})"
    )


__all__: Iterable[str] = [
    "SweepTracker",
    "SweepTrials",
    "TrialArtifacts",
    "TrialHistory",
    "trial_table",
    "download_latest_eval_file",
    "flatten",
    "default_tracking_uri",
    "resolve_tracking_uri",
    "ui_hint",
    "RunStatus",
]
