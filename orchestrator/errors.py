"""User-facing errors: one short paragraph that says where, what was expected and what was found."""

from __future__ import annotations

import re
from pathlib import Path


class OrchestratorError(Exception):
    """Base of every error the CLI reports to the user without a traceback; found before anything started, it is a
    user's mistake (a sweep file, a store, a cluster too small): exit code 2."""

    exit_code = 2


class SweepFailed(OrchestratorError):
    """A sweep that started and then stopped on an error (e.g. its MLflow store away for longer than the retry
    budget): exit code 1, as when trials failed."""

    exit_code = 1


class SpecError(OrchestratorError):
    """An invalid sweep file: `file: key.path: expected ..., found ....` (key may be empty)."""

    def __init__(self, file: str | Path | None, key: str, expected: str, found: str, hint: str = ""):
        self.file = str(file) if file is not None else "<sweep>"
        self.key, self.expected, self.found, self.hint = key, expected, found, hint
        where = f"{self.file}: {key}" if key else self.file
        message = f"{where}: expected {expected}, found {found}." + (f" {hint}" if hint else "")
        super().__init__(re.sub(r"\s*\n\s*", " ", message))  # always one paragraph
