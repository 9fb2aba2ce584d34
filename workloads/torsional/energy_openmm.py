"""MMFF94 / MMFF94s energies with OpenMM: Contexts per (molecule, local structure), built once and reused.

The System (mmff_openmm.mmff_system) holds RDKit's MMFF terms as custom forces; a batch of
conformers is evaluated by `setPositions` + `getState(energy)` per conformer on one Context.
Positions in Angstrom are divided by 10 (nm); energies in kJ/mol are divided by 4.184 (kcal/mol).

Two ways in:
    energies(x)            any positions x [B, N, 3]: the whole System.
    torsion_energies(phi)  conformers of the local structure x_L with torsions phi [B, K] (set_torsions):
                           E = E_tors(x) + [E(x_L) - E_tors(x_L)], with E_tors the torsional subsystem
                           (mmff_openmm: the torsion terms about the rotatable bonds and the nonbonded
                           pairs they move); exact because setting torsions keeps every other term.
On the reference molecules the torsional subsystem costs 9-24 us per conformer against 19-104 us for
the whole System (measured on one core, Reference platform): most of the whole System's time goes to
the stretch-bend and out-of-plane terms, CustomCompoundBondForces whose Reference kernel evaluates one
derivative expression per coordinate (it always computes forces, even for an energy).

Platform: "Reference" is the default on every machine, CPU-only or with a GPU; the others are a
constructor argument. Measured with one thread on molecules of 8-28 atoms: the CPU platform costs
~40 us more per call (its per-call set-up exceeds the whole Reference evaluation) and is no faster per
term. CUDA / OpenCL (double precision) work where installed but, with one conformer per call, pay a
kernel launch and a device sync per conformer (not measured: no GPU here). Packing R conformers as R
non-interacting replicas in one Context, with per-replica energies read as energy-parameter
derivatives (one global scale per replica), saved only 10-30 % per conformer on the CPU (50 % on the
8-atom methyl formate), so each conformer is its own call.
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

from .conformer import set_torsions
from .mmff_openmm import KJ_PER_KCAL, mmff_system
from .molecule import Molecule

PLATFORMS = ("Reference", "CPU", "CUDA", "OpenCL")


def make_context(
    system: openmm.System, platform: str = "CPU", integrator: openmm.Integrator | None = None
) -> openmm.Context:
    """A Context on `platform` (CPU with one thread: small molecules run faster on one)."""
    integrator = integrator if integrator is not None else openmm.VerletIntegrator(0.001)
    properties = {"CpuThreads": "1"} if platform == "CPU" else {}
    if platform in ("CUDA", "OpenCL"):
        properties = {"Precision": "double"}
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)


def _context_energies(context: openmm.Context, positions: np.ndarray) -> np.ndarray:
    """[B, N, 3] (or [N, 3]) Angstrom -> [B] float64 kcal/mol; NaN where OpenMM refuses the positions."""
    positions_nm = np.asarray(positions, dtype=np.float64) * 0.1
    if positions_nm.ndim == 2:
        positions_nm = positions_nm[None]
    out = np.empty(len(positions_nm))  # [B] kJ/mol
    set_positions, get_state = context.setPositions, context.getState
    for b, x in enumerate(positions_nm):
        try:
            set_positions(x)
            out[b] = get_state(getEnergy=True).getPotentialEnergy()._value  # kJ/mol, without unit checks
        except openmm.OpenMMException:
            out[b] = np.nan
    return out / KJ_PER_KCAL


class OpenMMEnergy:
    """E(x) in kcal/mol for conformers x of one molecule in one local structure, from OpenMM Contexts.

    platform: "Reference" (default, double precision), "CPU" (one thread), or "CUDA" / "OpenCL"
    (double precision) where installed; see the module docstring for the choice.
    """

    def __init__(
        self,
        molecule: Molecule,
        positions_local: np.ndarray | None = None,
        variant: str = "MMFF94s",
        platform: str = "Reference",
    ):
        assert platform in PLATFORMS, platform
        self.molecule = molecule
        self.variant = variant
        self.positions_local = molecule.positions() if positions_local is None else np.asarray(positions_local)
        self.system = mmff_system(molecule.mol, variant)
        self.context = make_context(self.system, platform)
        self.torsional_context = make_context(mmff_system(molecule.mol, variant, molecule.torsions[:, 1:3]), platform)
        # E(x_L) - E_tors(x_L): the terms that setting torsions does not change
        self.constant = (
            _context_energies(self.context, self.positions_local)
            - _context_energies(self.torsional_context, self.positions_local)
        )[0]

    def energy(self, positions: np.ndarray, groups: int | set[int] = -1) -> float:
        """[N, 3] Angstrom -> kcal/mol (of the given force groups; all by default)."""
        self.context.setPositions(np.asarray(positions, dtype=np.float64) * 0.1)  # [N, 3] nm
        state = self.context.getState(getEnergy=True, groups=groups)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_KCAL

    def energies(self, positions: np.ndarray) -> np.ndarray:
        """[B, N, 3] (or [N, 3]) Angstrom -> [B] float64 kcal/mol; NaN where OpenMM refuses the positions."""
        return _context_energies(self.context, positions)

    def torsion_energies(self, angles: np.ndarray) -> np.ndarray:
        """[B, K] radians -> [B] float64 kcal/mol of set_torsions(x_L, angles), from the torsional subsystem."""
        conformers = set_torsions(self.positions_local, self.molecule, angles)  # [B, N, 3]
        return _context_energies(self.torsional_context, conformers) + self.constant
