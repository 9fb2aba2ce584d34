"""Registry of targets: `make_target(name)`; adding one is a file and a line here."""

from __future__ import annotations

from workloads.samplers.targets.base import Target
from workloads.samplers.targets.funnel import Funnel
from workloads.samplers.targets.gmm25 import GMM25
from workloads.samplers.targets.gmm40 import GMM40
from workloads.samplers.targets.manywell import ManyWell

TARGETS: dict[str, type[Target]] = {"gmm25": GMM25, "gmm40": GMM40, "funnel": Funnel, "manywell": ManyWell}


def make_target(name: str) -> Target:
    if name not in TARGETS:
        raise KeyError(f"unknown target {name!r}; known: {sorted(TARGETS)}")
    return TARGETS[name]()


__all__ = ["TARGETS", "Target", "make_target"]
