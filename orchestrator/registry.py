"""The workloads a sweep may name: typed config, worker roles, and the driver (imported lazily)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from orchestrator.errors import OrchestratorError
from workloads.ensembles.config import SEDConfig
from workloads.samplers.config import SamplerConfig
from workloads.torsional.config import TorsionalConfig
from workloads.wcst.config import WcstConfig


@dataclass(frozen=True)
class WorkloadEntry:
    name: str
    config_model: type[BaseModel]
    """Typed config; a sweep's `config:` block is validated against it."""
    worker_roles: dict[str, int | None]
    """Ray actor roles besides the learner -> the most actors the driver makes of it (None: any);
    `resources.workers` may only name these."""
    driver: str
    """"module:Class" of the trial driver, imported only when a trial runs (keeps ray/torch out of spec checks)."""
    summary: str | None = None
    """"module:function" called when a sweep ends, with its finished trials (`tracking.TrialHistory`: params and
    metric histories), returning {file name: matplotlib figure or text} for the sweep's parent run; None: none."""

    def load_driver(self) -> type:
        module, _, cls = self.driver.partition(":")
        return getattr(importlib.import_module(module), cls)

    def load_summary(self) -> Any:
        """The summary function (see `summary`), imported only when a sweep ends; None if the workload has none."""
        if self.summary is None:
            return None
        module, _, function = self.summary.partition(":")
        return getattr(importlib.import_module(module), function)


WORKLOADS: dict[str, WorkloadEntry] = {
    "samplers": WorkloadEntry(
        name="samplers",
        config_model=SamplerConfig,
        worker_roles={"replay_buffer": 1},
        driver="orchestrator.drivers.samplers:SamplerDriver",
    ),
    "torsional": WorkloadEntry(
        name="torsional",
        config_model=TorsionalConfig,
        worker_roles={"energy": None, "replay_buffer": 1},
        driver="orchestrator.drivers.torsional:TorsionalDriver",
    ),
    "sed": WorkloadEntry(
        name="sed",
        config_model=SEDConfig,
        worker_roles={"ensemble_member": None},
        driver="orchestrator.drivers.sed:SEDDriver",
        summary="orchestrator.summaries.sed:sed_summary",
    ),
    "wcst": WorkloadEntry(
        name="wcst",
        config_model=WcstConfig,
        worker_roles={},
        driver="orchestrator.drivers.wcst:WcstDriver",
        summary="orchestrator.summaries.wcst:wcst_summary",
    ),
}


def get_workload(name: str) -> WorkloadEntry:
    if name not in WORKLOADS:
        raise OrchestratorError(f"unknown workload {name!r}; known workloads: {', '.join(WORKLOADS)}.")
    return WORKLOADS[name]
