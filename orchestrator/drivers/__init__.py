"""One driver per workload: creates the trial's actors in its placement group and runs the
loop between two reports. `orchestrator/trial.py` does what every workload shares (restore,
report, checkpoint, recovery from a dead actor)."""

from pathlib import Path
from typing import Callable


def png_writers(figures_png: dict[str, bytes]) -> dict[str, Callable[[Path], None]]:
    """Artifact writers for figures rendered (as PNG bytes) by a learner actor."""
    return {name: (lambda path, png=png: path.write_bytes(png)) for name, png in figures_png.items()}
