"""The layout rules of docs/adding-a-family.md, checked on the tree: `workloads/` stays free of ray and mlflow,
the core of `orchestrator/` names no family, and each family's orchestration lives in its own package, found
through its registry line."""

import ast
import importlib
import re
from pathlib import Path

import pytest

from orchestrator.registry import FAMILIES, get_family

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "workloads"
CORE = sorted(p for p in (ROOT / "orchestrator").glob("*.py"))
"""The core: every module directly under orchestrator/ (families/ holds the families)."""
FAMILY_WORDS = [
    *FAMILIES,
    "sampler",
    "torsion",
    "molecule",
    "smiles",
    "ensemble",
    "gflownet",
    "manywell",
    "gmm",
    "cue",
    "dsprites",
    "rdkit",
    "openmm",
    "energy",
]
"""Family names and words only a family's code has reason to use."""


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_ray_or_mlflow_imports_under_workloads():
    offenders = [
        f"{path}: {name}"
        for path in WORKLOADS.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in {"ray", "mlflow"}
    ]
    assert not offenders, offenders


def test_the_core_names_no_family():
    """Code, docstrings and comments of the core; the registry's one line per family is the only exception."""
    pattern = re.compile(r"\b(" + "|".join(FAMILY_WORDS) + r")", re.IGNORECASE)
    registry_line = re.compile(r'^\s+"\w+": "orchestrator\.families\.\w+",$')
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in CORE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not (path.name == "registry.py" and registry_line.match(line))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_core_imports_no_family_package():
    offenders = [
        f"{path.name}: {name}"
        for path in CORE
        for name in _imports(path)
        if name.startswith("orchestrator.families") or name.startswith("workloads")
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_family_is_its_registry_entry_and_its_own_package(name):
    family = get_family(name)
    package = FAMILIES[name]
    assert family.name == name
    for path in (family.driver, family.summary, family.report_table):
        if path is not None:
            assert path.startswith(f"{package}."), path
            module, _, attribute = path.partition(":")
            assert hasattr(importlib.import_module(module), attribute), path
    for module in family.commands:
        assert module.startswith(f"{package}.")
        command = importlib.import_module(module)
        assert command.COMMAND and callable(command.add_arguments) and callable(command.run)
    default = family.config_model()
    assert default.total_iters > 0  # the step budget, named alike everywhere (a field, or a property of a config
    assert default.smoke().total_iters <= default.total_iters  # with a block per task)
    others = [f"orchestrator.families.{other}" for other in FAMILIES if other != name]
    folder = ROOT / package.replace(".", "/")
    crossing = [
        f"{path.name}: {imported}"
        for path in folder.rglob("*.py")
        for imported in _imports(path)
        if any(imported.startswith(other) for other in others)
    ]
    assert not crossing, crossing
