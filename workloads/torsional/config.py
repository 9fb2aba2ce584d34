"""Typed configuration of the Torsional-GFN workload (arXiv:2507.11759); defaults in one place.

A sweep file's `config:` block may only override fields that exist here (unknown keys are errors).
Molecules: the reference's 6 FreeSolv training molecules and 2 validation molecules (all with 2 torsions by
the torsional-diffusion rule, see molecule.py). Every SMILES of train_smiles and val_smiles is checked when the
config is validated (molecule.check_smiles: it parses, embeds and has 1 to MAX_GRID_TORSIONS torsions), so a sweep
with an unusable molecule fails `validate` (one pydantic error per molecule, at its list index) before Ray starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from workloads.torsional.ground_truth import MAX_GRID_TORSIONS, bins_for_width, grid_torsion_problem
from workloads.torsional.molecule import check_smiles
from workloads.typed_config import StrictConfig

REFERENCE_TRAIN_SMILES = (
    "C1C=CC[C@@H]2[C@@H]1C(=O)N(C2=O)SC(Cl)(Cl)Cl",
    "COC=O",
    "c1ccc2c(c1)C(=O)c3c(ccc(c3C2=O)N)N",
    "C[C@@H]1CCCC[C@@H]1C",
    "COc1ccccc1",
    "CCC",
)
REFERENCE_VAL_SMILES = ("CCc1cccc2c1cccc2", "c1ccc(c(c1)C(F)(F)F)C(F)(F)F")
METRIC_BIN_DEGREES = 15.0
"""Histogram metrics use 15-degree bins (the issue's check): grid_bins must be a multiple of 24."""


class TorsionalReplayConfig(StrictConfig):
    """Replay of terminal torsions (with their energies) of earlier batches, by backward trajectories."""

    enabled: bool = False
    """Reference: a buffer of 500 per (molecule, local structure), off by default."""
    capacity_per_structure: int = Field(500, gt=0)
    """Terminal states kept per (molecule, local structure) by the replay buffer."""
    share: float = Field(0.25, ge=0, lt=1)
    """Fraction of each training batch's trajectories drawn backward from replayed terminal states."""
    seed_with_md: bool = True
    """Seed the buffer with the torsions of each training molecule's MD frames (replay.py), kept for good."""
    seed_share: float = Field(0.5, ge=0, le=1)
    """Probability that a replayed state of a structure with seeds is one of them."""
    draw_every: int = Field(50, gt=0)
    """Iterations trained on one draw from the buffer (one round trip to the replay-buffer actor)."""


def _molecule_problem(smiles: str, variant: str) -> str | None:
    """Why a molecule of train_smiles / val_smiles cannot be trained on or evaluated, or None."""
    num_torsions, what = check_smiles(smiles, variant)
    return what or grid_torsion_problem(num_torsions)


def _molecule_error(field: str, index: int, smiles: str, problem: str) -> InitErrorDetails:
    """A pydantic error at field[index]. Its type "spec" with expected / found is the form orchestrator/spec.py
    turns into its one-paragraph message ("config.train_smiles[1]: expected ..., found ...")."""
    expected = (
        f"a SMILES that RDKit parses and embeds (ETKDG), with MMFF parameters and 1 to {MAX_GRID_TORSIONS} torsions"
    )
    found = f"{smiles!r}: {problem}"
    error = PydanticCustomError("spec", "expected {expected}, found {found}", {"expected": expected, "found": found})
    return {"type": error, "loc": (field, index), "input": smiles}


class TorsionalConfig(StrictConfig):
    """Conditional GFlowNet over the torsions of several molecules and MD local structures."""

    train_smiles: list[str] = list(REFERENCE_TRAIN_SMILES)
    val_smiles: list[str] = list(REFERENCE_VAL_SMILES)
    """Validation molecules: never trained on, evaluated zero-shot (split unseen_molecules)."""
    variant: Literal["MMFF94", "MMFF94s"] = "MMFF94s"
    temperature_k: float = Field(298.15, gt=0)
    """T of the target exp(-E / kT) (and of the MD that makes the local structures)."""
    energy_backend: Literal["rdkit", "openmm"] = "rdkit"
    """Backend of the energy pool (the in-process learner path always uses RDKit)."""
    energy_clamp_kcal_mol: float = Field(100.0, gt=0)
    """E - E_L (E_L: the local structure's own energy) is clamped to at most this; non-finite -> this."""
    reward_floor_kcal_mol: float = Field(10.0, gt=0)
    """Training's log R' = -min(E - E_L, this) / kT: bounded residuals (learner.py docstring)."""
    num_train_structures: int = Field(4, gt=0)
    """MD frames per training molecule used for training (split train_structures)."""
    num_heldout_structures: int = Field(2, gt=0)
    """Later MD frames per training molecule never trained on (split unseen_structures)."""
    num_val_structures: int = Field(2, gt=0)
    """MD frames per validation molecule (split unseen_molecules)."""
    md_seed: int = 0
    cache_dir: str = ".cache/torsional"
    """MD frames are cached here by (SMILES, force field, seed, settings), and each structure's basins (basins.py)."""
    num_steps: int = Field(20, gt=0)
    """S: steps of a trajectory on the torus."""
    hidden_dim: int = Field(64, gt=0)
    encoder_layers: int = Field(3, gt=0)
    step_layers: int = Field(0, ge=0)
    """Atom-level message-passing layers run at every step (policy.py); 0: torsion-level coupling only."""
    torsion_layers: int = Field(2, ge=0)
    """Torsion-level layers coupling the torsions of a molecule at every step: several times cheaper per iteration
    than atom-level layers (step_layers) on the reference molecules, and as accurate after equal training time
    (docs/torsional.md)."""
    score_drift: bool = True
    """The drift adds the step lambda_k sigma_k^2 s_k along grad log p_k, the score of the target smoothed by the
    noise still to come (policy.py, smoothed_score.py): the untrained policy is already a sampler of the target."""
    basin_variance_rad2: float = Field(0.04, gt=0)
    """v0, the variance of a typical basin of R (a methyl rotor's at 298 K is ~0.04 rad^2). With probes it sets
    the mix a_k = v0 / (v0 + c_k) of the two score estimators (smoothed_score.py); with score_probes = 0 it scales
    the local score by a_k (policy.py). Other values tried: docs/torsional.md."""
    score_guide: Literal["basins", "probes"] = "basins"
    """How the drift's smoothed score grad log p_k is computed (with score_drift): "basins", exactly for the
    target's Laplace mixture of basins from a minimum search per structure (basins.py, seconds per structure,
    cached); "probes", by score_probes importance-sampled energies at every step (smoothed_score.py). The basins
    are the default: closer to the target untrained than 64 probes, at about a tenth of the cost
    (docs/torsional.md)."""
    score_probes: int = Field(64, ge=0)
    """J probes (antithetic pairs, so even) of the smoothed score at every step (smoothed_score.py); 0: the local
    score -dE/dx / kT, scaled by v0 / (v0 + c_k) (policy.py). Each probe is one energy and gradient per torsion
    set and step; more probes split the mass between basins better (docs/torsional.md)."""
    forward_std: Literal["noising", "reverse_basin"] = "reverse_basin"
    """PF's std at step k: sigma_k (PB's), or the reversal's for a Gaussian basin of variance v0 (basin_variance_rad2),
    sigma_k sqrt((v0 + c_{k+1}) / (v0 + c_k)): narrower, as the reversal of a noising step is, so that a drift can
    match the reversal (docs/torsional.md)."""
    learn_std: bool = False
    """The policy also outputs a per-torsion std multiplier in [1/e, e] (initialized at 1)."""
    log_z_hidden_dim: int = Field(32, gt=0)
    loss: Literal["tb", "vargrad"] = "vargrad"
    """tb: learned conditional log Z_phi(G, L); vargrad: log Z = detached mean per local structure."""
    trajectories_per_structure: int = Field(16, gt=1)
    structures_per_batch: int = Field(8, gt=0)
    """Local structures (of several molecules) in one batch; drawn without replacement each iteration."""
    lr: float = Field(1e-3, gt=0)
    lr_log_z: float = Field(1e-2, gt=0)
    grad_clip: float = Field(10.0, gt=0)
    noise_prob: float = Field(0.1, ge=0, le=1)
    """Exploration: probability that a (trajectory, step) samples with std x noise_factor."""
    noise_factor: float = Field(2.0, ge=1)
    total_iters: int = Field(2_000, gt=0)
    eval_every: int = Field(250, gt=0)
    eval_samples: int = Field(2_000, gt=1)
    """Samples per evaluated (molecule, local structure); the issue's final evaluation needs >= 2000."""
    eval_chunk: int = Field(500, gt=0)
    """Trajectories per forward pass at evaluation (memory bound)."""
    grid_bins: int = Field(72, gt=0, le=1008)
    """Cells per torsion of the exact grid (K = 2: grid_bins^2 energies per local structure; K = 3: at most 48^3). At
    most 1008, the largest multiple of 24 whose square fits ground_truth.MAX_GRID_CELLS."""
    replay: TorsionalReplayConfig = TorsionalReplayConfig()

    @model_validator(mode="after")
    def _check(self) -> TorsionalConfig:
        if self.grid_bins % bins_for_width(METRIC_BIN_DEGREES):
            raise ValueError(f"grid_bins={self.grid_bins} must be a multiple of {bins_for_width(METRIC_BIN_DEGREES)}")
        if self.score_probes % 2:
            raise ValueError(f"score_probes={self.score_probes} must be even (antithetic pairs)")
        if not self.train_smiles:
            raise ValueError("train_smiles is empty")
        errors = [
            _molecule_error(field, i, smiles, problem)
            for field in ("train_smiles", "val_smiles")
            for i, smiles in enumerate(getattr(self, field))
            if (problem := _molecule_problem(smiles, self.variant))
        ]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def smoke(self) -> TorsionalConfig:
        """Two small training molecules, one validation molecule, a few iterations: a whole-stack check."""
        return self.model_copy(
            update={
                "train_smiles": ["CCC", "COC=O"],
                "val_smiles": ["COc1ccccc1"],
                "num_train_structures": 1,
                "num_heldout_structures": 1,
                "num_val_structures": 1,
                "hidden_dim": 16,
                "log_z_hidden_dim": 16,
                "encoder_layers": 2,
                "torsion_layers": 1,
                "num_steps": 8,
                "trajectories_per_structure": 8,
                "structures_per_batch": 2,
                "total_iters": 4,
                "eval_every": 2,
                "eval_samples": 64,
                "eval_chunk": 64,
                "grid_bins": 24,
                "score_probes": 8,
            }
        )
