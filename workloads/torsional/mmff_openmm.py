"""MMFF94 / MMFF94s as an OpenMM System of custom forces, with RDKit's MMFF parameters.

The terms and their selection follow RDKit's MMFF builder (Halgren, J. Comput. Chem. 17, 490 (1996)),
so that the OpenMM energy equals RDKit's `MMFFGetMoleculeForceField(...).CalcEnergy()`.
Inside each expression lengths are in Angstrom (r_A = 10 r_nm), angles in degrees, energies in
kcal/mol, and the result is multiplied by 4.184 to give OpenMM's kJ/mol. c1 = 143.9325 (md/A -> kcal/mol).

    bond stretch      E = c1/2 kb dr^2 (1 + cs dr + 7/12 cs^2 dr^2),   dr = r - r0, cs = -2 /A
    angle bend        E = c1/2 (pi/180)^2 ka dth^2 (1 + cb dth),        dth = theta - theta0 (deg), cb = -0.006981317
      linear centre   E = c1 ka (1 + cos theta)                         (MMFFPROP lin = 1: types 4, 53, 61)
    stretch-bend      E = c1 (pi/180) dth (kba_ijk dr_ij + kba_kji dr_kj)   (not at linear centres)
    out-of-plane      E = c1/2 (pi/180)^2 koop chi^2,   chi = Wilson angle of j-l out of the i-j-k plane (deg),
                      three terms per tricoordinate centre j (each neighbour as l once)
    torsion           E = 1/2 (V1 (1 + cos phi) + V2 (1 - cos 2 phi) + V3 (1 + cos 3 phi))
                      on bonds j-k whose atoms are sp2/sp3, have degree > 1 and are in no triple bond
    van der Waals     E = eps (1.07 R* / (r + 0.07 R*))^7 (1.12 R*^7 / (r^7 + 0.12 R*^7) - 2)   (buffered 14-7)
    electrostatics    E = 332.0716 q_i q_j / (D (r + 0.05)) x (0.75 if 1-4)   (constant dielectric D = 1)
                      (distance-dependent model: (r + 0.05)^2 in the denominator)
Nonbonded pairs are those 3 or more bonds apart (1-4 and beyond), within one fragment; electrostatics
only between atoms with non-zero partial charges.
Each term is its own force group (FORCE_GROUPS), so each can be compared with RDKit's.

Torsional subsystem (`mmff_system(..., rotatable_bonds=B)`; its terms, `torsional_terms`, are also
energy_torch.py's): setting the torsions of bonds B rotates rigid parts of the molecule (the connected
pieces left when B is cut) about those bonds, which keeps every bond length, bond angle and
out-of-plane angle: each of those terms has its atoms bonded to one centre, and all of them lie in one
rigid part or on the rotation axis. So only the torsion terms about bonds in B and the nonbonded pairs
in different rigid parts change, and for conformers x made from a local structure x_L by setting torsions
    E(x) = E_B(x) + [E(x_L) - E_B(x_L)],
with E_B the subsystem's energy: on the reference molecules it holds 3-18 of 5-72 torsion terms and
11-131 of 11-300 pairs, and none of the stretch-bend and out-of-plane terms that cost most to evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openmm
from rdkit import Chem
from rdkit.Chem import AllChem

C1 = 143.9325  # MDYNE_A_TO_KCAL_MOL
RAD2DEG = 180.0 / np.pi
DEG2RAD = np.pi / 180.0
KJ_PER_KCAL = 4.184
LINEAR_TYPES = frozenset({4, 53, 61})  # MMFFPROP atom types with lin = 1
FORCE_GROUPS = {"bond": 0, "angle": 1, "stretch_bend": 2, "oop": 3, "torsion": 4, "vdw": 5, "ele": 6}
TORSION_BOND_SMARTS = Chem.MolFromSmarts("[!$(*#*)&!D1]~[!$(*#*)&!D1]")
# a = x_i - x_j, b = x_k - x_j (j = p2); in an OpenMM expression a definition may use only later ones
_VECTORS = "ax = x1 - x2; ay = y1 - y2; az = z1 - z2; bx = x3 - x2; by = y3 - y2; bz = z3 - z2"


def _bonds(mol, props) -> openmm.CustomBondForce:
    force = openmm.CustomBondForce(f"{KJ_PER_KCAL}*0.5*{C1}*kb*dr^2*(1 - 2*dr + 7/3*dr^2); dr = 10*r - r0")
    force.addPerBondParameter("kb")
    force.addPerBondParameter("r0")
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        p = props.GetMMFFBondStretchParams(mol, i, j)
        if p is not None:
            _, kb, r0 = p
            force.addBond(i, j, [kb, r0])
    return force


def _angles(mol, props) -> openmm.CustomAngleForce:
    bend = f"0.5*{C1 * DEG2RAD**2}*ka*dth^2*(1 - 0.006981317*dth); dth = theta*{RAD2DEG} - theta0"
    force = openmm.CustomAngleForce(f"{KJ_PER_KCAL}*select(lin, {C1}*ka*(1 + cos(theta)), bent); bent = {bend}")
    for name in ("ka", "theta0", "lin"):
        force.addPerAngleParameter(name)
    for j, atom in enumerate(mol.GetAtoms()):
        nbs = [nb.GetIdx() for nb in atom.GetNeighbors()]
        lin = float(props.GetMMFFAtomType(j) in LINEAR_TYPES)
        for a in range(len(nbs)):
            for b in range(a + 1, len(nbs)):
                p = props.GetMMFFAngleBendParams(mol, nbs[a], j, nbs[b])
                if p is not None:
                    _, ka, theta0 = p
                    force.addAngle(nbs[a], j, nbs[b], [ka, theta0, lin])
    return force


def _stretch_bends(mol, props) -> openmm.CustomCompoundBondForce:
    # written with coordinates (x1 .. z3): OpenMM evaluates these much faster than distance() / angle()
    force = openmm.CustomCompoundBondForce(
        3,
        f"{KJ_PER_KCAL * C1 * DEG2RAD}*dth*(kijk*(10*r1 - r01) + kkji*(10*r2 - r02));"
        f"dth = {RAD2DEG}*acos(min(1, max(-1, (ax*bx + ay*by + az*bz)/(r1*r2)))) - theta0;"
        "r1 = sqrt(ax*ax + ay*ay + az*az); r2 = sqrt(bx*bx + by*by + bz*bz);" + _VECTORS,
    )
    for name in ("kijk", "kkji", "r01", "r02", "theta0"):
        force.addPerBondParameter(name)
    for j, atom in enumerate(mol.GetAtoms()):
        if props.GetMMFFAtomType(j) in LINEAR_TYPES:
            continue
        nbs = [nb.GetIdx() for nb in atom.GetNeighbors()]
        for a in range(len(nbs)):
            for b in range(a + 1, len(nbs)):
                i, k = nbs[a], nbs[b]
                p = props.GetMMFFStretchBendParams(mol, i, j, k)
                if p is None:
                    continue
                _, kijk, kkji = p
                r1 = props.GetMMFFBondStretchParams(mol, i, j)[2]
                r2 = props.GetMMFFBondStretchParams(mol, j, k)[2]
                theta0 = props.GetMMFFAngleBendParams(mol, i, j, k)[2]
                force.addBond([i, j, k], [kijk, kkji, r1, r2, theta0])
    return force


def _oops(mol, props) -> openmm.CustomCompoundBondForce:
    # sin(chi) = n . l / (|n| |l|),  n = (x_i - x_j) x (x_k - x_j),  l = x_l - x_j
    force = openmm.CustomCompoundBondForce(
        4,
        f"{KJ_PER_KCAL * 0.5 * C1 * DEG2RAD**2}*koop*chi^2;"
        f"chi = {RAD2DEG}*asin(min(1, max(-1, (nx*lx + ny*ly + nz*lz)"
        "/sqrt((nx*nx + ny*ny + nz*nz)*(lx*lx + ly*ly + lz*lz)))));"
        "nx = ay*bz - az*by; ny = az*bx - ax*bz; nz = ax*by - ay*bx;"
        "lx = x4 - x2; ly = y4 - y2; lz = z4 - z2;" + _VECTORS,
    )
    force.addPerBondParameter("koop")
    for j, atom in enumerate(mol.GetAtoms()):
        if atom.GetDegree() != 3:
            continue
        n0, n2, n3 = [nb.GetIdx() for nb in atom.GetNeighbors()]
        koop = props.GetMMFFOopBendParams(mol, n0, j, n2, n3)
        if koop is None:
            continue
        for i, k, l in ((n0, n2, n3), (n0, n3, n2), (n2, n3, n0)):
            force.addBond([i, j, k, l], [koop])
    return force


@dataclass(frozen=True, eq=False)
class TorsionalTerms:
    """The torsion and nonbonded terms of an MMFF energy, with RDKit's parameters (numpy, Angstrom, kcal/mol)."""

    torsions: np.ndarray
    """[T, 4] int64 atom quadruples (i, j, k, l) of the torsion terms."""
    torsion_v: np.ndarray
    """[T, 3] float64 (V1, V2, V3) kcal/mol."""
    vdw_pairs: np.ndarray
    """[P, 2] int64 atom pairs (i < j) of the van der Waals terms."""
    vdw_r: np.ndarray
    """[P] float64 R*_ij, Angstrom."""
    vdw_eps: np.ndarray
    """[P] float64 epsilon_ij, kcal/mol (both after donor-acceptor scaling)."""
    ele_pairs: np.ndarray
    """[P', 2] int64 atom pairs (i < j) of the electrostatic terms (non-zero charges only)."""
    ele_qq: np.ndarray
    """[P'] float64 332.0716 q_i q_j / D x (0.75 if 1-4), kcal/mol Angstrom."""
    distance_dielectric: bool
    """Denominator (r + 0.05)^2 (distance-dependent dielectric) instead of (r + 0.05)."""


def torsional_terms(
    mol: Chem.Mol, variant: str = "MMFF94s", rotatable_bonds: np.ndarray | None = None, props=None
) -> TorsionalTerms:
    """The torsion and nonbonded terms of an explicit-H molecule's MMFF energy (module docstring's rules).

    rotatable_bonds: [K, 2] atom pairs; when given, only the terms of the torsional subsystem: the torsion terms
    about these bonds and the nonbonded pairs in different rigid parts. None: every torsion and nonbonded term.
    props: RDKit's MMFFMolProperties of `mol` (made from `variant` when None).
    """
    if props is None:
        props = AllChem.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
        assert props is not None, f"no MMFF parameters for {Chem.MolToSmiles(mol)}"
    n = mol.GetNumAtoms()
    if rotatable_bonds is None:
        rotatable, part = None, np.arange(n)  # every atom its own part: every pair kept
    else:
        rotatable = {frozenset(map(int, bond)) for bond in np.asarray(rotatable_bonds).reshape(-1, 2)}
        part = rigid_parts(mol, rotatable)

    quads, vs = [], []
    ok_hybrid = (Chem.HybridizationType.SP2, Chem.HybridizationType.SP3)
    for j, k in mol.GetSubstructMatches(TORSION_BOND_SMARTS, uniquify=True, maxMatches=10**9):
        if mol.GetAtomWithIdx(j).GetHybridization() not in ok_hybrid:
            continue
        if mol.GetAtomWithIdx(k).GetHybridization() not in ok_hybrid:
            continue
        if rotatable is not None and frozenset((j, k)) not in rotatable:
            continue
        for i in (nb.GetIdx() for nb in mol.GetAtomWithIdx(j).GetNeighbors()):
            if i == k:
                continue
            for l in (nb.GetIdx() for nb in mol.GetAtomWithIdx(k).GetNeighbors()):
                if l in (j, i):
                    continue
                p = props.GetMMFFTorsionParams(mol, i, j, k, l)
                if p is not None:
                    quads.append((i, j, k, l))
                    vs.append(p[1:4])

    vdw_pairs, vdw_params, ele_pairs, ele_qq = [], [], [], []
    dielectric = props.GetMMFFDielectricConstant()
    topo = Chem.GetDistanceMatrix(mol)  # [N, N] shortest path in bonds
    frag = np.zeros(n, dtype=np.int64)
    for f, atoms in enumerate(Chem.GetMolFrags(mol)):
        frag[list(atoms)] = f
    q = np.array([props.GetMMFFPartialCharge(i) for i in range(n)])
    for i in range(n):
        for j in range(i + 1, n):
            if frag[i] != frag[j] or topo[i, j] < 3 or part[i] == part[j]:
                continue
            p = props.GetMMFFVdWParams(i, j)
            if p is not None:
                vdw_pairs.append((i, j))
                vdw_params.append((p[2], p[3]))  # (R_ij_star, epsilon), after donor-acceptor scaling
            if abs(q[i]) > 1e-10 and abs(q[j]) > 1e-10:
                scale = 0.75 if topo[i, j] == 3 else 1.0
                ele_pairs.append((i, j))
                ele_qq.append(332.0716 * q[i] * q[j] / dielectric * scale)
    vdw_params = np.array(vdw_params, dtype=np.float64).reshape(-1, 2)
    return TorsionalTerms(
        torsions=np.array(quads, dtype=np.int64).reshape(-1, 4),
        torsion_v=np.array(vs, dtype=np.float64).reshape(-1, 3),
        vdw_pairs=np.array(vdw_pairs, dtype=np.int64).reshape(-1, 2),
        vdw_r=vdw_params[:, 0],
        vdw_eps=vdw_params[:, 1],
        ele_pairs=np.array(ele_pairs, dtype=np.int64).reshape(-1, 2),
        ele_qq=np.array(ele_qq, dtype=np.float64),
        distance_dielectric=props.GetMMFFDielectricModel() == 2,
    )  # RDKit: 1 constant, 2 distance-dependent


def _torsions(terms: TorsionalTerms) -> openmm.CustomTorsionForce:
    force = openmm.CustomTorsionForce(
        f"{KJ_PER_KCAL}*0.5*(V1*(1 + cos(theta)) + V2*(1 - cos(2*theta)) + V3*(1 + cos(3*theta)))"
    )
    for name in ("V1", "V2", "V3"):
        force.addPerTorsionParameter(name)
    for (i, j, k, l), v in zip(terms.torsions.tolist(), terms.torsion_v.tolist()):
        force.addTorsion(i, j, k, l, v)
    return force


def _nonbonded(terms: TorsionalTerms) -> tuple[openmm.CustomBondForce, openmm.CustomBondForce]:
    vdw = openmm.CustomBondForce(
        f"{KJ_PER_KCAL}*eps*(1.07*R/(rA + 0.07*R))^7*(1.12*R^7/(rA^7 + 0.12*R^7) - 2); rA = 10*r"
    )
    vdw.addPerBondParameter("R")
    vdw.addPerBondParameter("eps")
    for (i, j), r, eps in zip(terms.vdw_pairs.tolist(), terms.vdw_r.tolist(), terms.vdw_eps.tolist()):
        vdw.addBond(i, j, [r, eps])
    denominator = "(10*r + 0.05)^2" if terms.distance_dielectric else "(10*r + 0.05)"
    ele = openmm.CustomBondForce(f"{KJ_PER_KCAL}*qq/{denominator}")
    ele.addPerBondParameter("qq")
    for (i, j), qq in zip(terms.ele_pairs.tolist(), terms.ele_qq.tolist()):
        ele.addBond(i, j, [qq])
    return vdw, ele


def rigid_parts(mol: Chem.Mol, bonds: set[frozenset[int]]) -> np.ndarray:
    """[N] int64: the label of each atom's connected part once `bonds` (pairs of atom indices) are cut."""
    part = np.full(mol.GetNumAtoms(), -1, dtype=np.int64)
    for start in range(mol.GetNumAtoms()):
        if part[start] >= 0:
            continue
        part[start], stack = start, [start]
        while stack:
            i = stack.pop()
            for nb in mol.GetAtomWithIdx(i).GetNeighbors():
                j = nb.GetIdx()
                if part[j] < 0 and frozenset((i, j)) not in bonds:
                    part[j] = start
                    stack.append(j)
    return part


def mmff_system(mol: Chem.Mol, variant: str = "MMFF94s", rotatable_bonds: np.ndarray | None = None) -> openmm.System:
    """OpenMM System (nm, kJ/mol, no constraints, no periodicity) of an explicit-H molecule's MMFF energy.

    rotatable_bonds: [K, 2] atom pairs; when given, only the terms that change when these bonds are
    rotated (the torsional subsystem of the module docstring).
    """
    props = AllChem.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    assert props is not None, f"no MMFF parameters for {Chem.MolToSmiles(mol)}"
    system = openmm.System()
    for atom in mol.GetAtoms():
        system.addParticle(atom.GetMass())
    terms = torsional_terms(mol, variant, rotatable_bonds, props)
    vdw, ele = _nonbonded(terms)
    forces = {"torsion": _torsions(terms), "vdw": vdw, "ele": ele}
    if rotatable_bonds is None:
        forces = {
            "bond": _bonds(mol, props),
            "angle": _angles(mol, props),
            "stretch_bend": _stretch_bends(mol, props),
            "oop": _oops(mol, props),
            **forces,
        }
    for name, force in forces.items():
        force.setName(f"MMFF {name}")
        force.setForceGroup(FORCE_GROUPS[name])
        system.addForce(force)
    return system
