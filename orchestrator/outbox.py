"""An on-disk queue of writes for a store that may be away: nothing is lost while it is.

    put(record, files)  ->  folder/000000042.files/  (written first, when there are files)
                            folder/000000042.json    (written to a temporary name, then renamed: the commit)
    send(perform)       ->  perform(record, files) for each, oldest first; a performed one is removed;
                            `Later` stops the round (the store is away: retried after a back-off of 0.5 s
                            doubling to 30 s); any other error moves the record to `rejected/`, with a warning

A record that was performed but not yet removed when the process died is performed again: `perform` must be
idempotent (tracking.py's MLflow writes are: metrics carry their timestamps, a trial's run is looked up before it
is made). One process writes a folder; `send` takes an exclusive lock on it, so `orchestrator sync` and a running
sweep never send the same record twice at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REJECTED = "rejected"
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0


class Later(Exception):
    """Raised by `perform`: the record cannot be performed now (its store is away); keep it and stop the round."""


class Outbox:
    """The queue in `folder`; `Outbox.at(folder)` gives one instance per folder per process, so that every writer
    of a process appends in one order."""

    _open: dict[Path, Outbox] = {}

    @classmethod
    def at(cls, folder: str | Path) -> Outbox:
        folder = Path(folder).resolve()
        if folder not in cls._open:
            cls._open[folder] = cls(folder)
        return cls._open[folder]

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._next = max((int(p.stem) for p in self._records()), default=0) + 1
        self._retry_at = 0.0
        self._backoff_s = _FIRST_BACKOFF_S

    def _records(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.json") if p.stem.isdigit())

    @property
    def pending(self) -> int:
        return len(self._records())

    def put(self, record: dict[str, Any], files: Callable[[Path], None] | None = None) -> None:
        """Queue `record` (JSON); `files(folder)` writes the files that go with it into an empty folder."""
        name = f"{self._next:09d}"
        self._next += 1
        if files is not None:
            folder = self.folder / f"{name}.files"
            shutil.rmtree(folder, ignore_errors=True)  # left by a crash before its record was committed
            folder.mkdir()
            files(folder)
        write_atomically(self.folder / f"{name}.json", json.dumps(record, default=_plain))

    def send(self, perform: Callable[[dict[str, Any], Path | None], None], force: bool = False) -> int:
        """Perform the queued records in order until one must wait; returns how many are left. Within a back-off
        after a failed round nothing is tried, unless `force`."""
        if not force and time.monotonic() < self._retry_at:
            return self.pending
        with open(self.folder / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process is sending this folder
                return self.pending
            while records := self._records():  # a performed record may queue more (a sweep's summary does)
                for path in records:
                    files = self.folder / f"{path.stem}.files"
                    try:
                        perform(json.loads(path.read_text()), files if files.is_dir() else None)
                    except Later as error:
                        self._retry_at = time.monotonic() + self._backoff_s
                        self._backoff_s = min(2 * self._backoff_s, _MAX_BACKOFF_S)
                        log.warning("%d writes wait in %s (%s)", len(self._records()), self.folder, error)
                        return self.pending
                    except Exception as error:  # refused: keep it on disk for a person, never block the rest
                        self._reject(path, files, error)
                        continue
                    path.unlink()
                    shutil.rmtree(files, ignore_errors=True)
        self._backoff_s = _FIRST_BACKOFF_S
        return 0

    def _reject(self, path: Path, files: Path, error: Exception) -> None:
        rejected = self.folder / REJECTED
        rejected.mkdir(exist_ok=True)
        log.warning("write %s refused, kept in %s: %s", path.name, rejected, str(error)[:500])
        if files.is_dir():
            os.replace(files, rejected / files.name)
        (rejected / f"{path.stem}.error.txt").write_text(f"{type(error).__name__}: {error}\n")
        os.replace(path, rejected / path.name)


def write_atomically(path: Path, text: str) -> None:
    """Whole or not at all, on disk before it is seen: a temporary file, flushed and synced, renamed over `path`."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _plain(value: Any) -> Any:
    """numpy scalars (Tune samples some search-space values as numpy) as Python numbers."""
    return value.item() if hasattr(value, "item") else str(value)


def folders(root: str | Path) -> list[Path]:
    """The outboxes under `root` (itself and every folder below that holds records), `root` first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p.parent for p in root.rglob("*.json") if p.stem.isdigit() and REJECTED not in p.parts]
    return sorted(set(found), key=lambda p: (p != root, str(p)))
