"""The families a sweep may name (its `workload:` key): one line each in `FAMILIES`, the only place where the
core of the orchestrator meets a family.

A family's package (`orchestrator/families/<name>/__init__.py`) defines `FAMILY`, a `Family`: its typed config,
its worker roles, and "module:attribute" paths to its driver, sweep-end summary, report table and extra CLI
commands. Those are imported only when used, so validating a sweep imports no ray or torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from orchestrator.errors import OrchestratorError

FAMILIES: dict[str, str] = {
    "samplers": "orchestrator.families.samplers",
    "torsional": "orchestrator.families.torsional",
    "sed": "orchestrator.families.sed",
    "wcst": "orchestrator.families.wcst",
    "rtb": "orchestrator.families.rtb",
    "outsourced": "orchestrator.families.outsourced",
}
"""Family name (a sweep's `workload:`) -> the package that defines its `FAMILY`."""


def import_path(path: str) -> Any:
    """'package.module:name' -> the object it names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Family:
    name: str
    config_model: type[BaseModel]
    """Typed config; a sweep's `config:` block is validated against it. It has `total_iters` (the step budget:
    the driver's `step` runs from 0 to it) and `smoke()` (the same config, tiny)."""
    driver: str
    """"module:Class" of the trial driver (see orchestrator/driver.py), built with a `TrialContext`."""
    worker_roles: dict[str, int | None] = field(default_factory=dict)
    """Ray actor roles besides the learner -> the most actors the driver makes of it (None: any);
    `resources.workers` may only name these."""
    optional_roles: tuple[str, ...] = ()
    """Worker roles a trial has only when the sweep's `resources.workers` names them (a role left out otherwise
    gets one actor of the default resources)."""
    trial_roles: str | None = None
    """"module:function" (the trial's resolved config) -> the worker roles that trial starts (e.g. a method's);
    its placement group reserves bundles for those only. None: every role of the sweep's."""
    summary: str | None = None
    """"module:function" called when a sweep ends with its finished trials (`tracking.TrialHistory`: params and
    metric histories), returning {file name: matplotlib figure or text} for the sweep's parent run."""
    report_table: str | None = None
    """"module:function" behind `report --table`: (finished trials as `tracking.TrialRow`, the variants axis of
    the rows) -> (table rows, header first; note lines)."""
    datasets: str | None = None
    """"module:function" (the trial's resolved config) -> [InputData]: the data a trial reads, logged as MLflow
    dataset inputs of its run (lists of inputs, image sets)."""
    prepare: str | None = None
    """"module:function" (the validated sweep, its MLflow tracking URI) called once when the sweep runs or resumes,
    with Ray up, before its parent run exists: fits what its trials share (`model_cache.py`), or raises
    OrchestratorError for input only the store can judge (a cached model the sweep requires but lacks)."""
    commands: tuple[str, ...] = ()
    """Modules that each add one subcommand to `python -m orchestrator` (see `cli.py`: COMMAND, HELP,
    add_arguments(parser), run(args) -> exit code)."""

    def load_driver(self) -> type:
        return import_path(self.driver)

    def roles_of(self, config: Any) -> set[str] | None:
        """The worker roles a trial of `config` starts; None: all."""
        return None if self.trial_roles is None else set(import_path(self.trial_roles)(config))

    def load_summary(self) -> Any:
        return None if self.summary is None else import_path(self.summary)

    def load_report_table(self) -> Any:
        return None if self.report_table is None else import_path(self.report_table)

    def run_prepare(self, spec: Any, tracking_uri: str) -> None:
        if self.prepare is not None:
            import_path(self.prepare)(spec, tracking_uri)

    def input_data(self, config: Any) -> list[InputData]:
        return [] if self.datasets is None else list(import_path(self.datasets)(config))


@dataclass(frozen=True)
class InputData:
    """A data set a trial reads, as its run's MLflow dataset input (`mlflow.data.from_pandas`)."""

    name: str
    """e.g. 'digits-train'."""
    context: str
    """MLflow's `mlflow.data.context` tag: 'training', 'evaluation', ..."""
    frame: Any
    """A pandas DataFrame: the data itself where it is small (a list of inputs), else one row per item or split
    that describes it (sizes, labels, generator settings); its content hash is the dataset's digest."""
    source: str
    """Where it comes from, e.g. 'config.train_smiles' or 'sklearn.datasets.load_digits'."""


def family_names() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise OrchestratorError(f"unknown workload {name!r}; known workloads: {', '.join(FAMILIES)}.")
    return importlib.import_module(FAMILIES[name]).FAMILY
