"""User-facing errors: one short paragraph that says where, what was expected and what was found."""

from __future__ import annotations

import re
from pathlib import Path


class OrchestratorError(Exception):
    """Base of every error the CLI reports to the user without a traceback."""


class SpecError(OrchestratorError):
    """An invalid sweep file: `file: key.path: expected ..., found ....` (key may be empty)."""

    def __init__(self, file: str | Path | None, key: str, expected: str, found: str, hint: str = ""):
        self.file = str(file) if file is not None else "<sweep>"
        self.key, self.expected, self.found, self.hint = key, expected, found, hint
        where = f"{self.file}: {key}" if key else self.file
        message = f"{where}: expected {expected}, found {found}." + (f" {hint}" if hint else "")
        super().__init__(re.sub(r"\s*\n\s*", " ", message))  # always one paragraph
