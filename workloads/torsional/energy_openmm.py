"""MMFF94 / MMFF94s energies with OpenMM: one Context per (molecule, local structure), reused.

The System (mmff_openmm.mmff_system) holds RDKit's MMFF terms as custom forces; a batch of
conformers is evaluated by `setPositions` + `getState(energy)` per conformer on one Context.
Positions in Angstrom are divided by 10 (nm); energies in kJ/mol are divided by 4.184 (kcal/mol).
The energy does not depend on the local structure (unlike RDKit's force field, nothing is fixed at
build time but the term list); `positions_local` is kept for the same signature as RDKitEnergy.
"""
from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

from .mmff_openmm import KJ_PER_KCAL, mmff_system
from .molecule import Molecule

PLATFORMS = ("CPU", "Reference", "CUDA", "OpenCL")


def make_context(system: openmm.System, platform: str = "CPU",
                 integrator: openmm.Integrator | None = None) -> openmm.Context:
    """A Context on `platform` (CPU with one thread: small molecules run faster on one)."""
    integrator = integrator if integrator is not None else openmm.VerletIntegrator(0.001)
    properties = {"CpuThreads": "1"} if platform == "CPU" else {}
    if platform in ("CUDA", "OpenCL"):
        properties = {"Precision": "double"}
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)


class OpenMMEnergy:
    """E(x) in kcal/mol for conformers x of one molecule, from one OpenMM Context.

    platform: "Reference" (default: fastest on small molecules, double precision), "CPU" (one thread),
    or "CUDA" / "OpenCL" (double precision) where installed.
    """

    def __init__(self, molecule: Molecule, positions_local: np.ndarray | None = None, variant: str = "MMFF94s",
                 platform: str = "Reference"):
        assert platform in PLATFORMS, platform
        self.molecule = molecule
        self.variant = variant
        self.system = mmff_system(molecule.mol, variant)
        self.context = make_context(self.system, platform)
        self.positions_local = molecule.positions() if positions_local is None else np.asarray(positions_local)

    def energy(self, positions: np.ndarray, groups: int | set[int] = -1) -> float:
        """[N, 3] Angstrom -> kcal/mol (of the given force groups; all by default)."""
        self.context.setPositions(np.asarray(positions, dtype=np.float64) * 0.1)  # [N, 3] nm
        state = self.context.getState(getEnergy=True, groups=groups)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_KCAL

    def energies(self, positions: np.ndarray) -> np.ndarray:
        """[B, N, 3] (or [N, 3]) Angstrom -> [B] float64 kcal/mol; NaN where OpenMM refuses the positions."""
        positions_nm = np.asarray(positions, dtype=np.float64) * 0.1
        if positions_nm.ndim == 2:
            positions_nm = positions_nm[None]
        out = np.empty(len(positions_nm))  # [B] kJ/mol
        set_positions, get_state = self.context.setPositions, self.context.getState
        for b, x in enumerate(positions_nm):
            try:
                set_positions(x)
                out[b] = get_state(getEnergy=True).getPotentialEnergy()._value  # kJ/mol, without unit checks
            except openmm.OpenMMException:
                out[b] = np.nan
        return out / KJ_PER_KCAL
