"""Every MLflow call of the project lives here: MLflow's API moves between releases.

Layout in MLflow: one experiment per sweep name, one parent run per sweep, one child run per
Tune trial (tag `mlflow.parentRunId`), so the MLflow UI groups a sweep.

Who writes what: the Tune driver (one process) writes params, metrics, tags and run status, so a
SQLite store has a single writer. Trials write only artifacts (figures, Parquet samples, models) into
their own run, which they find by the tag `orchestrator.trial_id`, under `eval/step_NNNNNNN/` per
evaluation; `sample` reads the newest of them back.

A store that is away (an `mlflow server` restarting or down, a network cut) neither stops nor fails a
sweep, however long it is away: every write goes first to an on-disk outbox (orchestrator/outbox.py)
in the sweep's folder, the driver's in `<outbox>/driver`, each trial's in `<outbox>/trials/<id>`, and
is sent at once when the store answers; what cannot be sent waits there and is tried again with the
next write. At the sweep's end the outboxes are flushed, each call retried for up to
`ORCHESTRATOR_MLFLOW_RETRY_S` seconds (default 120); what is still left is sent by `resume` or
`python -m orchestrator sync`. Reads (a trial's histories for a summary, `report`, `sample`) retry
for that long and then fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sqlite3
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.errors import OrchestratorError
from orchestrator.outbox import Later, Outbox, write_atomically
from orchestrator.outbox import folders as outbox_folders

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
MODEL_PREFIX = "model:"
"""A driver's artifact named `model:<name>` writes a folder that is logged as an MLflow LoggedModel <name> of the
trial's run (tagged with the step), not as files: e.g. a trained posterior, listed on the run's Models tab."""
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
    """`MLFLOW_TRACKING_URI` if set, else a SQLite store in the working directory, or in the home folder when that
    is Ray's copy of a job's working_dir, which Ray deletes (as for the sweep's folder: `storage.root`)."""
    from orchestrator.storage import in_ray_working_dir_copy

    folder = Path.home() if in_ray_working_dir_copy(Path.cwd()) else Path.cwd()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder / 'mlflow.db'}"


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


class StoreUnreachable(OrchestratorError, Later):
    """The store did not answer within the retry budget: an outbox keeps the write for later (`outbox.Later`)."""


def _retry(fn: Callable[[], T], what: str, budget_s: float | None = None) -> T:
    """Call `fn`; while it fails with a transient error, retry with exponential back-off (0.5 s doubling to
    8 s) for up to `budget_s` (default `retry_budget_s()`; 0: one attempt), then raise StoreUnreachable. A request
    the store refuses raises OrchestratorError at once."""
    budget = retry_budget_s() if budget_s is None else budget_s
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
                raise StoreUnreachable(
                    f"MLflow: {what} failed for {budget:g} s ({attempt} attempts; {RETRY_BUDGET_ENV} sets how "
                    f"long): {str(error)[:300]}"
                ) from error
            if attempt == 1 and budget > 0:
                log.warning("MLflow: %s failed (%s); retrying for up to %g s", what, str(error)[:200], budget)
            time.sleep(min(wait, left))
            wait = min(wait * 2, _MAX_WAIT_S)
            attempt += 1


def open_experiment(client: MlflowClient, tracking_uri: str, name: str) -> str:
    """The id of experiment `name`, created if missing (artifacts beside a SQLite store, tagged for the runs view)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        # Keep artifacts beside the database rather than in whatever directory we run from.
        db_path = Path(tracking_uri[len("sqlite:///") :])
        artifact_location = (db_path.parent / "mlartifacts").as_uri()
    try:
        # Tagged as model development, MLflow 3's UI opens the experiment on its runs table, not its GenAI view.
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
    except MlflowException as error:
        # Another sweep, or our own earlier attempt whose answer was lost, created it meanwhile.
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


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


def trial_ref(trial_id: str) -> str:
    """How a write names a trial's run before the run may exist: the outbox resolves it by the trial's tag."""
    return f"{_TRIAL_REF}{trial_id}"


_TRIAL_REF = "trial:"
_RUNS_FILE = "runs.json"


class SweepTracker:
    """The driver side: experiment, parent run, child runs, metrics by step, run status.

    Every write after the parent run goes first to the outbox in `outbox` (orchestrator/outbox.py) and is sent at
    once when the store answers; while it is away the writes wait on disk, are tried again as the sweep goes on,
    and `flush` (the sweep's end, `resume`, `orchestrator sync`) sends what is left. A trial's run is named by
    `trial_ref(trial_id)` until it exists. Reads (`trial_histories`, `run_id`) go to the store."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str | None,
        outbox: str | Path | None = None,
        experiment_id: str | None = None,
    ):
        """Opens (or makes) the experiment named `experiment`, unless its `experiment_id` is given: then the store
        is not asked (a trial starts whether or not it answers)."""
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = _client(self.tracking_uri)
        self.experiment_name = experiment
        self.experiment_id = experiment_id or _retry(
            lambda: self._experiment(experiment), f"opening experiment {experiment!r}"
        )
        self._outbox_folder = outbox
        self._opened: set[str] = set()  # trial ids whose run this tracker has opened

    def _experiment(self, name: str) -> str:
        return open_experiment(self.client, self.tracking_uri, name)

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
        the sweep), `tags` (e.g. `provenance_tags`) and the whole sweep as sweep.json. Written at once, not through
        the outbox: the store was just checked, and the parent's id names the sweep."""
        if parent_run_id is not None:
            _retry(lambda: self.client.update_run(parent_run_id, status="RUNNING"), "reopening the parent run")
            return parent_run_id
        run_tags = {**(tags or {}), SWEEP_TAG: sweep_name, ROLE_TAG: "sweep"}
        run = _retry(
            lambda: self.client.create_run(self.experiment_id, run_name=sweep_name, tags=run_tags),
            "creating the parent run",
        )
        run_id = run.info.run_id
        batch = [Param(k, _param_value(v)) for k, v in flatten(sweep if params is None else params).items()]
        for start in range(0, len(batch), _PARAM_BATCH):
            _retry(partial(self.client.log_batch, run_id, params=batch[start : start + _PARAM_BATCH]), "logging params")
        _retry(lambda: self.client.log_text(run_id, json.dumps(sweep, indent=2, default=str), "sweep.json"), "sweep")
        return run_id

    # -- writes, through the outbox --------------------------------------------------------
    @property
    def outbox(self) -> Outbox:
        """The outbox in the folder given, or (made when first written: tests, one-off use) in a new temporary one."""
        if self._outbox_folder is None:
            self._outbox_folder = tempfile.mkdtemp(prefix="mlflow-outbox-")
        return Outbox.at(self._outbox_folder)

    def run_of_trial(self, trial_id: str) -> str | None:
        """The trial's ref if this tracker opened its run."""
        return trial_ref(trial_id) if trial_id in self._opened else None

    def trial_run(
        self,
        parent_run_id: str,
        trial_id: str,
        trial_name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        inputs: list[dict[str, Any]] | None = None,
    ) -> str:
        """The trial's run (its `trial_ref`): made with `params`, `tags` and dataset `inputs` (`dataset_input`), or
        reopened when the store has it (a resumed sweep)."""
        tags = {**(tags or {}), PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial"}
        params = [[k, _param_value(v)] for k, v in flatten(params).items()]
        self._put({"op": "open_trial_run", "trial": trial_id, "name": trial_name, "tags": tags, "params": params,
                   "inputs": inputs or []})  # fmt: skip
        self._opened.add(trial_id)
        return trial_ref(trial_id)

    def log_metrics(self, run: str, metrics: dict[str, float], step: int) -> None:
        """One write per report; a step the run logged before a resume is dropped when sent."""
        self.log_metric_history(run, [(step, metrics)])

    def log_metric_history(self, run: str, points: list[tuple[int, dict[str, float]]]) -> None:
        """Metrics at several steps in one write (sent in as few `log_batch` calls as its limits allow)."""
        now = int(time.time() * 1000)  # fixed here: a batch sent twice (a crash after sending) is stored once
        metrics = [[k, float(v), now, int(step)] for step, values in points for k, v in values.items() if _is_number(v)]
        if metrics:
            self._put({"op": "batch", "run": run, "metrics": metrics})

    def set_tags(self, run: str, tags: dict[str, str]) -> None:
        self._put({"op": "batch", "run": run, "tags": [[k, str(v)] for k, v in tags.items()]})

    def log_text(self, run: str, text: str, artifact_file: str) -> None:
        self._log_file(run, artifact_file, lambda path: path.write_text(text))

    def log_figure(self, run: str, figure: Any, artifact_file: str) -> None:
        self._log_file(run, artifact_file, figure.savefig)

    def _log_file(self, run: str, artifact_file: str, write: Callable[[Path], Any]) -> None:
        folder, name = os.path.split(artifact_file)
        self._put({"op": "artifacts", "run": run, "path": folder or None}, lambda files: write(files / name))

    def log_sweep_outcome(self, parent_run_id: str, outcome: SweepOutcome) -> None:
        """The sweep's outcome on its parent run, as trials end: the best trial as tags and as a link in the run's
        description, its final metrics as the parent's metrics (step = trials ended so far), and the table of every
        trial (searched values, status, final metrics) as trials.md and trials.parquet."""
        rows = [asdict(row) for row in outcome.rows]
        self._put({"op": "outcome", "parent": parent_run_id, "metric": outcome.metric, "mode": outcome.mode,
                   "rows": rows, "time": int(time.time() * 1000)})  # fmt: skip

    def log_summary(self, parent_run_id: str, workload: str) -> None:
        """The workload's sweep summary (orchestrator/summary.py), made when this write is sent: after every
        earlier write, over the trials' histories as the store then has them."""
        self._put({"op": "summary", "parent": parent_run_id, "workload": workload})

    def end_run(self, run: str, status: str, error: str | None = None) -> None:
        """status: FINISHED, FAILED or KILLED."""
        if error:
            self.set_tags(run, {"orchestrator.error": error[:5000]})
        self._put({"op": "end_run", "run": run, "status": status})

    def kill_running_trials(self, parent_run_id: str) -> None:
        """End as KILLED the sweep's trial runs still RUNNING when this is sent (an interrupted or failed sweep)."""
        self._put({"op": "kill_running_trials", "parent": parent_run_id})

    def _put(self, record: dict[str, Any], files: Callable[[Path], None] | None = None) -> None:
        self.outbox.put(record, files)
        self.send()

    def send(self) -> int:
        """Send what waits, unless the store failed a moment ago (then it waits for a later call); how many wait."""
        return self.outbox.send(self._perform)

    @property
    def unsent(self) -> int:
        """Writes waiting in the outbox."""
        return self.outbox.pending

    def flush(self, budget_s: float | None = None) -> int:
        """Send every waiting write, each call retried for up to `budget_s` (default `retry_budget_s()`) while the
        store is away; returns how many still wait."""
        with _budget(budget_s):
            return self.outbox.send(self._perform, force=True)

    # -- sending ----------------------------------------------------------------------------
    def run_id(self, run: str) -> str:
        """The run id of `run` (a run id, or a `trial_ref` whose run exists: else `outbox.Later`)."""
        if not run.startswith(_TRIAL_REF):
            return run
        known = self._known_run(run)
        if known is None:
            found = find_trial_run(self.client, self.experiment_id, run[len(_TRIAL_REF) :], _SEND_BUDGET.value)
            if found is None:
                raise Later(f"the run of {run} is not made yet")
            known = self._remember(run, found, -1)
        return known["run_id"]

    def _known_run(self, run: str) -> dict[str, Any] | None:
        """{run_id, through} of a trial's run that a write of this outbox opened: kept in the outbox's runs.json,
        which every tracker of the folder shares, in this process or a later one (`sync`, `resume`)."""
        path = self.outbox.folder / _RUNS_FILE
        return json.loads(path.read_text()).get(run) if path.exists() else None

    def _remember(self, run: str, run_id: str, through: int) -> dict[str, Any]:
        path = self.outbox.folder / _RUNS_FILE
        runs = json.loads(path.read_text()) if path.exists() else {}
        runs[run] = {"run_id": run_id, "through": through}
        write_atomically(path, json.dumps(runs))
        return runs[run]

    def _perform(self, record: dict[str, Any], files: Path | None) -> None:
        """Carry out one outbox write (idempotent: see orchestrator/outbox.py). A local SQLite file that cannot be
        written now (a full disk, a lost mount) is a store that is away, not a write it refuses."""
        try:
            self._carry_out(record, files)
        except OrchestratorError as error:
            if _database_error(error.__cause__) is not None and not isinstance(error, Later):
                raise StoreUnreachable(str(error)) from error
            raise

    def _carry_out(self, record: dict[str, Any], files: Path | None) -> None:
        op, client, budget = record["op"], self.client, _SEND_BUDGET.value

        def call(fn: Callable[[], T], what: str) -> T:
            return _retry(fn, what, budget)

        if op == "open_trial_run":
            self._open_trial_run(record, call)
        elif op == "batch":
            run_id = self.run_id(record["run"])
            # A resumed trial restarts from its last checkpoint, which may be older than the last step it logged
            # before the interruption: steps up to the mark read when its run was reopened are in MLflow already.
            through = (self._known_run(record["run"]) or {}).get("through", -1)
            metrics = [Metric(k, v, t, step) for k, v, t, step in record.get("metrics", []) if step > through]
            params = [Param(k, v) for k, v in record.get("params", [])]
            tags = [RunTag(k, v) for k, v in record.get("tags", [])]
            for start in range(0, max(len(metrics), len(params), len(tags)), _PARAM_BATCH):
                part = slice(start, start + _PARAM_BATCH)  # at most 100 of each and 1000 in all per call
                call(partial(client.log_batch, run_id, metrics[part], params[part], tags[part]), "logging a batch")
        elif op == "artifacts":
            run_id = self.run_id(record["run"])
            call(partial(client.log_artifacts, run_id, str(files), record["path"]), f"logging {record['path']}")
        elif op == "model":
            self._log_model(record, files, call)
        elif op == "end_run":
            run_id = self.run_id(record["run"])
            call(partial(client.set_terminated, run_id, record["status"]), f"setting run status {record['status']}")
        elif op == "outcome":
            self._send_outcome(record, call)
        elif op == "summary":
            from orchestrator.summary import log_sweep_summary  # it imports this module

            log_sweep_summary(self, record["workload"], record["parent"])
        elif op == "kill_running_trials":
            where = f"tags.`{PARENT_TAG}` = '{record['parent']}' and attributes.status = 'RUNNING'"
            for run in _search_runs(client, self.experiment_id, where, "searching for running trials", budget=budget):
                call(partial(client.set_terminated, run.info.run_id, "KILLED"), "ending a trial run")
        else:
            raise OrchestratorError(f"unknown outbox write {op!r}")

    def _log_model(self, record: dict[str, Any], files: Path, call: Callable) -> None:
        """A READY LoggedModel `record['name']` of the run, holding the folder's files (a resend logs it again)."""
        from mlflow.entities import LoggedModelStatus

        run_id, tags = self.run_id(record["run"]), {"step": str(record["step"])}
        create = partial(self.client.create_logged_model, self.experiment_id, record["name"], run_id, tags=tags)
        model = call(create, f"creating model {record['name']}")
        call(partial(self.client.log_model_artifacts, model.model_id, str(files)), f"logging model {record['name']}")
        call(partial(self.client.finalize_logged_model, model.model_id, LoggedModelStatus.READY), "finalizing a model")

    def _open_trial_run(self, record: dict[str, Any], call: Callable) -> None:
        ref = trial_ref(record["trial"])
        existing = find_trial_run(self.client, self.experiment_id, record["trial"], _SEND_BUDGET.value)
        if existing is not None:  # a resumed sweep, or this write sent again after a crash
            call(partial(self.client.update_run, existing, "RUNNING"), "reopening a trial run")
            history = call(partial(self.client.get_metric_history, existing, STEP_METRIC), "reading the last step")
            self._remember(ref, existing, max((m.step for m in history), default=-1))
            return
        tags = record["tags"]
        run = call(
            partial(self.client.create_run, self.experiment_id, run_name=record["name"], tags=tags),
            "creating a trial run",
        )
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in record["params"]]
        for start in range(0, len(params), _PARAM_BATCH):
            call(partial(self.client.log_batch, run_id, params=params[start : start + _PARAM_BATCH]), "logging params")
        if record["inputs"]:
            call(partial(self.client.log_inputs, run_id, [_dataset_input(d) for d in record["inputs"]]), "datasets")
        self._remember(ref, run_id, -1)

    def _send_outcome(self, record: dict[str, Any], call: Callable) -> None:
        parent = record["parent"]
        rows = []
        for row in record["rows"]:
            try:
                rows.append(TrialOutcome(**{**row, "run_id": self.run_id(row["run_id"])}))
            except Later:
                if row["status"] != "RUNNING":
                    raise
        outcome = SweepOutcome(record["metric"], record["mode"], rows)
        best = outcome.best()
        note = outcome.markdown(self.experiment_id)
        tags = [RunTag("mlflow.note.content", note)]
        if best is not None:
            tags += [RunTag(BEST_TRIAL_TAG, best.name), RunTag(BEST_RUN_TAG, best.run_id)]
            ended = sum(row.status in ("FINISHED", "FAILED") for row in rows)
            numbers = {k: v for k, v in best.finals.items() if _is_number(v) and math.isfinite(v)}
            metrics = [Metric(k, float(v), record["time"], ended) for k, v in numbers.items()]
            for start in range(0, len(metrics), _METRIC_BATCH):
                chunk = metrics[start : start + _METRIC_BATCH]
                call(partial(self.client.log_batch, parent, metrics=chunk), "logging the best trial's metrics")
        call(partial(self.client.log_batch, parent, tags=tags), "tagging the best trial")
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "trials.md").write_text(note)
            outcome.write_parquet(Path(folder) / "trials.parquet")
            call(partial(self.client.log_artifacts, parent, folder), "logging trials.md and trials.parquet")

    # -- reads -------------------------------------------------------------------------------
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


class _SendBudget:
    """How long each call of a write being sent retries an unreachable store: none while a sweep runs (a write
    that cannot go now waits on disk and is tried with the next one), `retry_budget_s()` when flushing."""

    value: float = 0.0


_SEND_BUDGET = _SendBudget()


@contextlib.contextmanager
def _budget(budget_s: float | None):
    before = _SEND_BUDGET.value
    _SEND_BUDGET.value = retry_budget_s() if budget_s is None else budget_s
    try:
        yield
    finally:
        _SEND_BUDGET.value = before


def dataset_input(name: str, context: str, frame: Any, source: str) -> dict[str, Any]:
    """A data set as an MLflow dataset input (`mlflow.data.from_pandas`: its digest is the frame's content hash), in
    the JSON form an outbox write keeps."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    with warnings.catch_warnings():  # MLflow's "integer column(s)" and pandas' deprecations, of no use here
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(frame, source=CodeDatasetSource({"mlflow.source.name": source}), name=name)
    entity = dataset._to_mlflow_entity()
    fields = ("name", "digest", "source_type", "source", "schema", "profile")
    return {"context": context, **{f: getattr(entity, f) for f in fields}}


def _dataset_input(record: dict[str, Any]) -> DatasetInput:
    dataset = Dataset(**{k: v for k, v in record.items() if k != "context"})
    return DatasetInput(dataset, [InputTag("mlflow.data.context", record["context"])])


def flush_all(tracking_uri: str, experiment: str, root: str | Path, budget_s: float | None = None) -> tuple[int, int]:
    """Send what waits in every outbox under `root` (the driver's first: it makes the runs the trials' files go
    to); returns (sent, left)."""
    folders = outbox_folders(root)
    if not folders:
        return 0, 0
    before = sum(Outbox.at(f).pending for f in folders)
    deadline = time.monotonic() + (retry_budget_s() if budget_s is None else budget_s)
    try:
        experiment_id = SweepTracker(tracking_uri, experiment, folders[0]).experiment_id
    except StoreUnreachable:
        return 0, before
    left = 0
    for folder in folders:  # one budget for all: a store that is away is waited for once
        tracker = SweepTracker(tracking_uri, experiment, folder, experiment_id=experiment_id)
        left += tracker.flush(max(0.0, deadline - time.monotonic()))
    return before - left, left


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value))


def _param_value(value: Any) -> str:
    """Strings as they are, everything else as JSON (None -> null, True -> true), as a sweep file writes it."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_PARAM_VALUE_MAX]


def _search_runs(
    client: MlflowClient,
    experiment_id: str,
    where: str,
    what: str,
    newest_first: bool = False,
    most: int = 10_000,
    budget: float | None = None,
) -> list:
    """The experiment's runs matching the filter `where`, by start time (oldest first unless `newest_first`)."""
    order = ["attributes.start_time DESC" if newest_first else "attributes.start_time ASC"]
    return _retry(partial(client.search_runs, [experiment_id], where, order_by=order, max_results=most), what, budget)


def find_trial_run(client: MlflowClient, experiment_id: str, trial_id: str, budget: float | None = None) -> str | None:
    where = f"tags.`{TRIAL_TAG}` = '{trial_id}'"
    runs = _search_runs(client, experiment_id, where, "searching for a trial's run", budget=budget)
    return runs[0].info.run_id if runs else None


class TrialArtifacts:
    """The trial side: its files (figures, Parquet samples, models) for its own run, through an outbox of its own
    (`outbox`, in the sweep's outbox folder), so that a trial neither waits for nor fails on a store that is away.
    The driver makes the run; files written before it exists wait for it."""

    def __init__(self, tracking_uri: str, experiment_id: str, trial_id: str, outbox: str | Path | None = None):
        self.trial_id = trial_id
        self.tracker = SweepTracker(tracking_uri, None, outbox, experiment_id=experiment_id)

    def log_files(self, files: dict[str, Callable[[Path], None]], artifact_dir: str, step: int | None = None) -> int:
        """`files` maps a name to a function that writes it (a file or a folder); all land in `artifact_dir`, but
        `model:<name>` entries, whose folders become LoggedModels of the run (MODEL_PREFIX). With
        `step`, each PNG is also logged as a step-keyed image (`step_images`), which the MLflow UI shows with a step
        slider and compares across runs. Returns the number of such images."""
        images = 0
        models = {name.removeprefix(MODEL_PREFIX): w for name, w in files.items() if name.startswith(MODEL_PREFIX)}
        files = {name: writer for name, writer in files.items() if not name.startswith(MODEL_PREFIX)}

        def write(folder: Path) -> None:
            nonlocal images
            for name, writer in files.items():
                writer(folder / name)
            for table in folder.glob("*.parquet"):
                write_head_csv(table)
            pngs = sorted(folder.glob("*.png")) if step is not None else []
            if pngs:
                step_images(pngs, step, folder.parent / f"{folder.name}.images")
            images = len(pngs)

        run = trial_ref(self.trial_id)
        outbox = self.tracker.outbox
        with tempfile.TemporaryDirectory(dir=outbox.folder) as staging:
            folder = Path(staging) / "files"
            folder.mkdir()
            write(folder)
            outbox.put({"op": "artifacts", "run": run, "path": artifact_dir}, partial(_move, folder))
            if images:
                outbox.put({"op": "artifacts", "run": run, "path": "images"}, partial(_move, Path(f"{folder}.images")))
            for name, writer in models.items():
                model_folder = Path(staging) / f"model-{name}"
                model_folder.mkdir()
                writer(model_folder)
                outbox.put({"op": "model", "run": run, "name": name, "step": step}, partial(_move, model_folder))
        self.tracker.send()
        return images

    def flush(self, budget_s: float | None = None) -> int:
        """Send what waits; returns how many writes still wait (for the sweep's end, `resume` or `sync`)."""
        return self.tracker.flush(budget_s)


PREVIEW_ROWS = 100


def write_head_csv(table: Path) -> None:
    """`<name>.head.csv` beside `<name>.parquet`: its first PREVIEW_ROWS rows, which the MLflow UI previews as a
    table (it has no Parquet viewer)."""
    import pyarrow.parquet as pq

    rows = next(pq.ParquetFile(table).iter_batches(batch_size=PREVIEW_ROWS), None)
    if rows is not None:
        rows.to_pandas().to_csv(table.with_suffix(".head.csv"), index=False)


def _move(source: Path, folder: Path) -> None:
    """An outbox `files` writer: the contents of `source` moved into `folder`."""
    for item in source.iterdir():
        os.replace(item, folder / item.name)


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
