"""energy_torch.TorchTorsionalEnergy: batched MMFF energies of set torsions equal RDKit's, and their exact gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workloads.torsional.config import REFERENCE_TRAIN_SMILES, REFERENCE_VAL_SMILES, TorsionalConfig
from workloads.torsional.conformer import dihedral_angles
from workloads.torsional.data import zero_shot_entry
from workloads.torsional.energy_rdkit import RDKitEnergy
from workloads.torsional.energy_torch import TorchTorsionalEnergy

# the 8 reference molecules (K = 2) and K = 1 (methanol, acetate: charged), K = 3 (butane), and 2-butyne
# (K = 2 about bonds to sp atoms: no torsion term at all, only pairs)
EXTRA = ["CO", "CC(=O)[O-]", "CCCC", "CC#CC"]


@pytest.fixture(scope="module")
def entries():
    smiles = (*REFERENCE_TRAIN_SMILES, *REFERENCE_VAL_SMILES, *EXTRA)
    out = [zero_shot_entry(s, "etkdg", TorsionalConfig()) for s in smiles]
    assert sorted({e.num_torsions for e in out}) == [1, 2, 3]
    return out


def mixed_batch(entries, rows_per_entry: int, seed: int):
    """entry_index [B] (every entry, shuffled) and angles [B, K_max], with random values in the padded columns."""
    rng = np.random.default_rng(seed)
    entry_index = rng.permutation(np.repeat(np.arange(len(entries)), rows_per_entry))
    angles = rng.uniform(-2 * np.pi, 2 * np.pi, (len(entry_index), max(e.num_torsions for e in entries)))
    return entry_index, angles


def rdkit_energies(entries, entry_index, angles, variant):
    ffs = [RDKitEnergy(e.molecule, e.positions, variant) for e in entries]
    return np.array(
        [ffs[i].torsion_energies(a[None, : entries[i].num_torsions])[0] for i, a in zip(entry_index, angles)]
    )


@pytest.mark.parametrize("variant", ["MMFF94s", "MMFF94"])
def test_energies_equal_rdkit_on_a_mixed_batch(entries, variant):
    energy = TorchTorsionalEnergy(entries, variant)
    entry_index, angles = mixed_batch(entries, 4, seed=0)
    e = energy.energies(torch.as_tensor(entry_index), torch.as_tensor(angles))
    assert e.shape == (len(entry_index),) and e.dtype == torch.float64
    np.testing.assert_allclose(e.numpy(), rdkit_energies(entries, entry_index, angles, variant), atol=1e-6, rtol=0)
    # the local structure's own torsions give its own energy (the constant c_L)
    own = np.zeros((len(entries), energy.k_max))
    for i, entry in enumerate(entries):
        own[i, : entry.num_torsions] = dihedral_angles(entry.positions, entry.molecule.torsions)[0]
    want = [RDKitEnergy(x.molecule, x.positions, variant).energies(x.positions)[0] for x in entries]
    np.testing.assert_allclose(
        energy.energies(torch.arange(len(entries)), torch.as_tensor(own)).numpy(), want, atol=1e-6, rtol=0
    )


def test_gradient_equals_finite_differences_of_rdkit(entries):
    """dE/dx in the flat layout (P = 2 rows of B mixed trajectories), against central differences of RDKit."""
    energy = TorchTorsionalEnergy(entries)
    entry_index, _ = mixed_batch(entries, 1, seed=1)
    entry_index = np.concatenate([entry_index, [entry_index[0]]])  # an entry twice
    K = np.array([entries[i].num_torsions for i in entry_index])
    torsion_index = np.repeat(np.arange(len(entry_index)), K)  # [M]
    starts = np.cumsum(K) - K
    x = np.random.default_rng(2).uniform(0, 2 * np.pi, (2, len(torsion_index)))  # [P, M]
    with torch.no_grad():
        grad = energy.gradient(torch.as_tensor(entry_index), torch.as_tensor(torsion_index), torch.as_tensor(x))
    assert grad.shape == x.shape and grad.dtype == torch.float64 and not grad.requires_grad

    h = 1e-5
    ffs = [RDKitEnergy(e.molecule, e.positions) for e in entries]
    want = np.zeros_like(x)
    for p in range(len(x)):
        for m, b in enumerate(torsion_index):
            angles = np.tile(x[p, starts[b] : starts[b] + K[b]], (2, 1))  # [2, K_b]
            angles[:, m - starts[b]] += (h, -h)
            plus, minus = ffs[entry_index[b]].torsion_energies(angles)
            want[p, m] = (plus - minus) / (2 * h)
    assert np.abs(want).max() > 1.0  # not trivially zero
    np.testing.assert_allclose(grad.numpy(), want, atol=1e-4, rtol=1e-4)


def test_gradient_dtype_layout_check_and_autograd(entries):
    energy = TorchTorsionalEnergy(entries)
    entry_index = torch.tensor([8, 0, 10, 10])  # K = 1, 2, 3, 3
    torsion_index = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 3])
    x = torch.rand(3, 9) * 6.0
    grad = energy.gradient(entry_index, torsion_index, x)
    assert grad.shape == (3, 9) and grad.dtype == torch.float32
    with pytest.raises(AssertionError, match="torsion_index"):
        energy.gradient(entry_index, torsion_index[1:], x[:, 1:])
    # energies() is differentiable: its autograd gradient is gradient()'s, and 0 in the padded columns
    angles = torch.zeros(4, energy.k_max, dtype=torch.float64)
    angles[[0, 1, 1, 2, 2, 2, 3, 3, 3], [0, 0, 1, 0, 1, 2, 0, 1, 2]] = x[0].double()
    angles.requires_grad_(True)
    energy.energies(entry_index, angles).sum().backward()
    flat = angles.grad[[0, 1, 1, 2, 2, 2, 3, 3, 3], [0, 0, 1, 0, 1, 2, 0, 1, 2]]
    torch.testing.assert_close(flat, grad[0].double(), rtol=1e-5, atol=1e-4)
    assert angles.grad[0, 1:].abs().max() == 0 and angles.grad[1, 2] == 0
