"""Torsional-GFN chemistry: molecules and torsions, torsion setting, RDKit / OpenMM MMFF energies, MD frames."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdMolTransforms

from workloads.torsional import md
from workloads.torsional.conformer import dihedral_angles, set_torsions
from workloads.torsional.energy_openmm import OpenMMEnergy
from workloads.torsional.energy_rdkit import RDKitEnergy, molecule_with_positions, reference_energy
from workloads.torsional.md import MDSettings, md_frames, run_md, train_and_heldout_frames
from workloads.torsional.molecule import MoleculeError, load_molecule

TRAIN = [
    "C1C=CC[C@@H]2[C@@H]1C(=O)N(C2=O)SC(Cl)(Cl)Cl",
    "COC=O",
    "c1ccc2c(c1)C(=O)c3c(ccc(c3C2=O)N)N",
    "C[C@@H]1CCCC[C@@H]1C",
    "COc1ccccc1",
    "CCC",
]
VALIDATION = ["CCc1cccc2c1cccc2", "c1ccc(c(c1)C(F)(F)F)C(F)(F)F"]
# charged, aromatic, halogenated, N / O / S / P, linear centres (nitrile, alkyne), drug-like
VARIED = [
    "CC(=O)[O-]",
    "C[NH3+]",
    "CC(=O)Nc1ccc(O)cc1",
    "CS(=O)(=O)N",
    "c1ccc(cc1)[N+](=O)[O-]",
    "CCSC",
    "Brc1ccc(CCl)cc1",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "OC(=O)c1ccccc1O",
    "C[N+](C)(C)CC(=O)[O-]",
    "c1ccsc1CO",
    "Ic1ccccc1C=O",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1CCN(CC1)c1ccccc1",
    "COP(=O)(OC)OC",
    "C=CC(=O)N",
    "N#CCCO",
    "CC#N",
    "CCOC(=O)C#C",
    "FC(F)(F)c1ccc(cc1)S(=O)(=O)N",
    "c1ccncc1CN",
]


def bond_lengths(mol: Chem.Mol, x: np.ndarray) -> np.ndarray:
    b = np.array([(bd.GetBeginAtomIdx(), bd.GetEndAtomIdx()) for bd in mol.GetBonds()])
    return np.linalg.norm(x[..., b[:, 0], :] - x[..., b[:, 1], :], axis=-1)  # [..., E]


def bond_angles(mol: Chem.Mol, x: np.ndarray) -> np.ndarray:
    ijk = np.array(
        [
            (i.GetIdx(), j.GetIdx(), k.GetIdx())
            for j in mol.GetAtoms()
            for i in j.GetNeighbors()
            for k in j.GetNeighbors()
            if i.GetIdx() < k.GetIdx()
        ]
    )
    u, v = x[..., ijk[:, 0], :] - x[..., ijk[:, 1], :], x[..., ijk[:, 2], :] - x[..., ijk[:, 1], :]
    return np.arccos(np.clip((u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1), -1, 1))


@pytest.fixture(scope="module")
def molecules():
    return {s: load_molecule(s) for s in TRAIN + VALIDATION}


# ---------------------------------------------------------------- molecule.py
def test_reference_molecules_have_two_torsions(molecules):
    for smiles, m in molecules.items():
        assert m.torsions.shape == (2, 4) and m.torsions.dtype == np.int64, smiles
        assert m.mol.GetNumConformers() == 1 and m.positions().shape == (m.num_atoms, 3)
        for a, b, c, d in m.torsions.tolist():
            bond = m.mol.GetBondBetweenAtoms(b, c)
            assert bond.GetBondType() == Chem.BondType.SINGLE and not bond.IsInRing()
            assert m.mol.GetBondBetweenAtoms(a, b) and m.mol.GetBondBetweenAtoms(c, d) and a != c and d != b


def test_torsion_rule_on_propane_and_anisole(molecules):
    assert molecules["CCC"].torsions[:, 1:3].tolist() == [[0, 1], [1, 2]]  # two methyl rotors
    anisole = molecules["COc1ccccc1"]
    assert sorted(map(sorted, anisole.torsions[:, 1:3].tolist())) == [[0, 1], [1, 2]]  # CH3-O and O-Car


def test_load_is_deterministic():
    a, b = load_molecule("COc1ccccc1", seed=3), load_molecule("COc1ccccc1", seed=3)
    np.testing.assert_array_equal(a.positions(), b.positions())


@pytest.mark.parametrize(
    "smiles, what",
    [
        ("C1CC(", "parse"),
        ("not a smiles", "parse"),
        ("C", "no rotatable"),
        ("c1ccccc1", "no rotatable"),
        ("CCO.CCO", "fragments"),
    ],
)
def test_bad_molecules_raise_clear_errors(smiles, what):
    with pytest.raises(MoleculeError) as err:
        load_molecule(smiles)
    assert repr(smiles) in str(err.value) and what in str(err.value)
    assert isinstance(err.value, ValueError)


# ---------------------------------------------------------------- conformer.py
def test_set_torsions_sets_dihedrals_and_keeps_local_structure(molecules):
    rng = np.random.default_rng(0)
    for smiles, m in molecules.items():
        x0 = m.positions()
        angles = rng.uniform(-np.pi, np.pi, (16, 2))  # [B, K]
        x = set_torsions(x0, m, angles)  # [B, N, 3]
        assert x.shape == (16, m.num_atoms, 3)
        np.testing.assert_allclose(
            bond_lengths(m.mol, x), np.broadcast_to(bond_lengths(m.mol, x0), (16, m.mol.GetNumBonds())), atol=1e-10
        )
        np.testing.assert_allclose(
            bond_angles(m.mol, x), np.broadcast_to(bond_angles(m.mol, x0), (16, len(bond_angles(m.mol, x0)))), atol=1e-9
        )
        for b in range(3):
            conf = molecule_with_positions(m, x[b]).GetConformer()
            rd = [rdMolTransforms.GetDihedralRad(conf, *t) for t in m.torsions.tolist()]
            np.testing.assert_allclose(np.angle(np.exp(1j * (np.array(rd) - angles[b]))), 0, atol=1e-9, err_msg=smiles)
        np.testing.assert_allclose(np.angle(np.exp(1j * (dihedral_angles(x, m.torsions) - angles))), 0, atol=1e-9)


def test_set_torsions_batched_positions_and_identity(molecules):
    m = molecules["COC=O"]
    x0 = m.positions()
    same = set_torsions(x0, m, dihedral_angles(x0, m.torsions))  # setting the current values changes nothing
    np.testing.assert_allclose(same[0], x0, atol=1e-10)
    xs = np.stack([x0, x0 + 1.0])  # [2, N, 3]: a batch of local structures
    out = set_torsions(xs, m, np.array([[0.3, -2.0], [0.3, -2.0]]))
    np.testing.assert_allclose(out[1] - 1.0, out[0], atol=1e-10)
    assert np.all(xs[0] == x0)  # inputs are not modified


def test_dihedral_angles_match_rdkit(molecules):
    m = molecules[TRAIN[0]]
    conf = m.mol.GetConformer()
    want = [rdMolTransforms.GetDihedralRad(conf, *t) for t in m.torsions.tolist()]
    np.testing.assert_allclose(dihedral_angles(m.positions(), m.torsions)[0], want, atol=1e-12)


# ---------------------------------------------------------------- energies
def test_rdkit_energy_matches_the_reference_way(molecules):
    rng = np.random.default_rng(1)
    for smiles in ("CCC", TRAIN[0]):
        m = molecules[smiles]
        x = set_torsions(m.positions(), m, rng.uniform(-np.pi, np.pi, (5, 2)))
        np.testing.assert_allclose(RDKitEnergy(m, m.positions()).energies(x), reference_energy(m, x), atol=1e-8)


def test_rdkit_energy_returns_non_finite_as_is(molecules):
    m = molecules["CCC"]
    x = np.stack([m.positions(), np.full((m.num_atoms, 3), np.nan)])
    e = RDKitEnergy(m).energies(x)
    assert np.isfinite(e[0]) and not np.isfinite(e[1])


@pytest.mark.parametrize("variant", ["MMFF94s", "MMFF94"])
def test_openmm_matches_rdkit_on_varied_molecules(variant):
    """Within 1e-3 kcal/mol (in practice ~1e-11) on the relaxed and on random-torsion conformers."""
    smiles_list = TRAIN + VALIDATION + VARIED
    assert len(smiles_list) >= 20
    rng = np.random.default_rng(0)
    for smiles in smiles_list:
        m = load_molecule(smiles, variant=variant)
        x0 = m.positions()
        x = np.concatenate([x0[None], set_torsions(x0, m, rng.uniform(-np.pi, np.pi, (6, m.num_torsions)))])
        e_rdkit = RDKitEnergy(m, x0, variant).energies(x)
        e_openmm = OpenMMEnergy(m, x0, variant).energies(x)
        keep = e_rdkit < 1e4  # absurd overlaps are clamped by the caller anyway
        assert keep[0]
        np.testing.assert_allclose(e_openmm[keep], e_rdkit[keep], atol=1e-3, rtol=0, err_msg=smiles)


@pytest.mark.parametrize("variant", ["MMFF94s", "MMFF94"])
def test_torsion_energies_of_both_backends_match_rdkit_on_varied_molecules(variant):
    """torsion_energies(phi): OpenMM's torsional subsystem plus its constant equals RDKit's whole force field."""
    rng = np.random.default_rng(1)
    for smiles in TRAIN + VALIDATION + VARIED:
        m = load_molecule(smiles, variant=variant)
        x_local = set_torsions(m.positions(), m, rng.uniform(-np.pi, np.pi, (1, m.num_torsions)))[0]
        angles = rng.uniform(-np.pi, np.pi, (8, m.num_torsions))
        e_rdkit = RDKitEnergy(m, x_local, variant).energies(set_torsions(x_local, m, angles))
        np.testing.assert_allclose(RDKitEnergy(m, x_local, variant).torsion_energies(angles), e_rdkit, atol=1e-9)
        keep = e_rdkit < 1e4
        e_openmm = OpenMMEnergy(m, x_local, variant).torsion_energies(angles)
        np.testing.assert_allclose(e_openmm[keep], e_rdkit[keep], atol=1e-3, rtol=0, err_msg=smiles)


def test_torsional_subsystem_drops_only_terms_that_torsions_keep(molecules):
    from workloads.torsional.mmff_openmm import mmff_system

    m = molecules["COc1ccccc1"]  # two rotors: CH3-O and O-ring; three rigid parts
    full, torsional = mmff_system(m.mol), mmff_system(m.mol, rotatable_bonds=m.torsions[:, 1:3])

    def num_terms(system):
        return {
            f.getName().split()[1]: next(
                getattr(f, n)() for n in ("getNumBonds", "getNumAngles", "getNumTorsions") if hasattr(f, n)
            )
            for f in system.getForces()
        }

    every, kept = num_terms(full), num_terms(torsional)
    assert list(kept) == ["torsion", "vdw", "ele"]  # bond, angle, stretch-bend, out-of-plane: unchanged by torsions
    assert 0 < kept["torsion"] < every["torsion"] and 0 < kept["vdw"] < every["vdw"]


def test_openmm_cpu_platform_and_other_local_structure(molecules):
    m = molecules[TRAIN[0]]
    x = set_torsions(m.positions(), m, np.random.default_rng(2).uniform(-np.pi, np.pi, (4, 2)))
    e = RDKitEnergy(m, x[1]).energies(x)  # the force field built on another local structure
    np.testing.assert_allclose(OpenMMEnergy(m, x[1], platform="CPU").energies(x), e, atol=1e-6)


# ---------------------------------------------------------------- md.py
FAST = MDSettings(equilibration_ps=0.2, spacing_ps=0.1)


def test_md_frames_are_thermal_local_structures(molecules):
    m = molecules["CCC"]
    frames = run_md(m, num_frames=20, seed=0)  # default settings
    assert frames.shape == (20, m.num_atoms, 3) and np.isfinite(frames).all()
    dev = np.abs(bond_lengths(m.mol, frames) - bond_lengths(m.mol, m.positions()))
    assert dev.max() < 0.15 and dev.mean() < 0.05
    assert np.abs(bond_angles(m.mol, frames) - bond_angles(m.mol, m.positions())).max() < np.deg2rad(25)
    assert np.min(np.abs(np.diff(frames, axis=0)).max(axis=(1, 2))) > 0.05  # consecutive frames differ
    e = RDKitEnergy(m).energies(frames) - RDKitEnergy(m).energies(m.positions())
    kT = 0.001987204118 * 298.15
    assert 0.2 * (3 * m.num_atoms - 6) / 2 * kT < e.mean() < 3 * (3 * m.num_atoms - 6) / 2 * kT  # ~equipartition


def test_md_is_seeded(molecules):
    m = molecules["COC=O"]
    a, b = run_md(m, 3, 5, settings=FAST), run_md(m, 3, 5, equilibration_ps=0.2, spacing_ps=0.1)
    c = run_md(m, 3, 6, settings=FAST)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_md_cache_is_reused(molecules, tmp_path, monkeypatch):
    m = molecules["COC=O"]
    first = md_frames(m, 4, seed=1, cache_dir=tmp_path, settings=FAST)
    assert len(list(tmp_path.glob("md-*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("MD rerun despite the cache")

    monkeypatch.setattr(md, "run_md", fail)
    np.testing.assert_array_equal(md_frames(m, 4, seed=1, cache_dir=tmp_path, settings=FAST), first)
    with pytest.raises(AssertionError):  # another seed is another key
        md_frames(m, 4, seed=2, cache_dir=tmp_path, settings=FAST)


def test_train_and_heldout_frames(molecules, tmp_path):
    m = molecules["CCC"]
    train, heldout = train_and_heldout_frames(m, 3, 2, seed=0, cache_dir=tmp_path, settings=FAST)
    assert train.shape == (3, m.num_atoms, 3) and heldout.shape == (2, m.num_atoms, 3)
    all_frames = md_frames(m, 5, seed=0, cache_dir=tmp_path, settings=FAST)
    np.testing.assert_array_equal(np.concatenate([train, heldout]), all_frames)


@pytest.mark.slow
def test_md_default_settings_on_all_reference_molecules(molecules, tmp_path):
    for smiles, m in molecules.items():
        frames = md_frames(m, 20, seed=0, cache_dir=tmp_path)
        dev = np.abs(bond_lengths(m.mol, frames) - bond_lengths(m.mol, m.positions()))
        assert dev.max() < 0.2 and dev.mean() < 0.05, smiles
        e = OpenMMEnergy(m).energies(frames)
        np.testing.assert_allclose(e, RDKitEnergy(m).energies(frames), atol=1e-3)
