"""Registry of targets: `make_target(name)`; adding one is a file and a line here."""
from __future__ import annotations

from workloads.samplers.targets.base import Target
from workloads.samplers.targets.gmm25 import GMM25

TARGETS: dict[str, type[Target]] = {"gmm25": GMM25}


def make_target(name: str) -> Target:
    if name not in TARGETS:
        raise KeyError(f"unknown target {name!r}; known: {sorted(TARGETS)}")
    return TARGETS[name]()


__all__ = ["TARGETS", "Target", "make_target"]
