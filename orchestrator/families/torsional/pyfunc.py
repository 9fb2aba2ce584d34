"""A trained Torsional-GFN as an MLflow pyfunc model: `predict` takes SMILES and returns conformers with energies.

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/eval/step_NNNNNNN/model")
    model.predict(pd.DataFrame({"smiles": ["CC(C)O"]}), params={"n": 500, "seed": 0, "structure": "etkdg"})

One row per conformer, the columns of the `sample` command's Parquet (export.SAMPLE_COLUMNS): smiles,
local_structure, torsions (radians), energy_kcal_mol (RDKit MMFF of the trial's variant, not clamped), log_pf. It
draws them as `sample --seed` does (sample.draw, one generator per molecule seeded with `seed`), so a molecule's
conformers do not depend on the other rows and equal `sample`'s for the same model, structure and seed.

The folder (`save_pyfunc`) is MLflow's "model from code": MLmodel, pyfunc_model.py (the code MLflow runs to build
the model), artifacts/model.pt (the trial's model.pt), the signature with its params and an input example, and
requirements pinned to this environment's versions, given rather than inferred (inference would load the model in
a subprocess at every save). The code itself comes from this project's installed packages (`orchestrator`,
`workloads`), as for the `sample` command.
"""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from orchestrator.families.torsional.sample import draw
from workloads.torsional.data import zero_shot_entry
from workloads.torsional.export import SAMPLE_COLUMNS, learner_from_model, load_model, model_config, save_model

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
DEFAULT_SAMPLES = 100
"""Conformers per molecule when predict gets no `n`."""
REQUIREMENTS = (
    "amortized-orchestrator",
    "mlflow",
    "torch",
    "rdkit",
    "openmm",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "pydantic",
    "matplotlib",
)
"""What loading and predict import: the project itself (whose code the model runs) and the libraries its torsional
modules import."""

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string)]),
    outputs=Schema(
        [
            ColSpec(DataType.string, "smiles"),
            ColSpec(DataType.string, "local_structure"),
            ColSpec(Array(DataType.double), "torsions"),
            ColSpec(DataType.double, "energy_kcal_mol"),
            ColSpec(DataType.double, "log_pf"),
        ]
    ),
    params=ParamSchema(
        [
            ParamSpec("n", DataType.long, DEFAULT_SAMPLES),
            ParamSpec("seed", DataType.long, 0),
            ParamSpec("structure", DataType.string, "etkdg"),
        ]
    ),
)


PARAM_DEFAULTS = {param.name: param.default for param in SIGNATURE.params.params}
STRUCTURES = ("etkdg", "md")


class TorsionalSampler(mlflow.pyfunc.PythonModel):
    """SMILES -> conformers with energies, from the model.pt artifact (module docstring)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = load_model(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """model_input: a DataFrame with a `smiles` column, or SMILES strings; params: n (conformers per molecule),
        seed, structure ('etkdg': the ETKDG + MMFF conformer, or 'md': MD frame 0). A SMILES that cannot be used
        raises MoleculeError naming it."""
        params = {**PARAM_DEFAULTS, **(params or {})}
        n, seed, structure = int(params["n"]), int(params["seed"]), params["structure"]
        if n < 1 or structure not in STRUCTURES:
            raise ValueError(f"expected n >= 1 and structure in {STRUCTURES}, found n={n}, structure={structure!r}")
        if isinstance(model_input, pd.DataFrame):  # MLflow passes a list of SMILES as a one-column frame
            model_input = model_input["smiles"] if "smiles" in model_input else model_input.iloc[:, 0]
        smiles = [model_input] if isinstance(model_input, str) else [str(s) for s in model_input]
        unique = list(dict.fromkeys(smiles))  # a molecule asked twice is drawn once (its rows are the same)
        if not unique:
            return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
        config = model_config(self.model)
        learner = learner_from_model(self.model, [zero_shot_entry(s, structure, config) for s in unique])
        drawn = {s: draw(learner, i, n, seed) for i, s in enumerate(unique)}
        return pd.DataFrame([row for s in smiles for row in drawn[s]], columns=list(SAMPLE_COLUMNS))


def requirements() -> list[str]:
    """REQUIREMENTS pinned to the installed versions (a local build tag such as torch's +cu130 dropped)."""
    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


def save_pyfunc(path: Path, learner_state: dict[str, Any]) -> None:
    """The pyfunc model folder at `path` (created) from a TorsionalLearner.state_dict()."""
    config = learner_state["config"]
    example = (pd.DataFrame({"smiles": config["val_smiles"][:1] or config["train_smiles"][:1]}), {"n": 10})
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        save_model(weights, learner_state)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(MODEL_CODE),
            artifacts={"model": str(weights)},
            signature=SIGNATURE,
            input_example=example,
            pip_requirements=requirements(),
            metadata={"step": int(learner_state["step"]), "seed": int(learner_state["seed"])},
        )
