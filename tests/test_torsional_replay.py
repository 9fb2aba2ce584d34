"""Per-structure replay buffer of terminal torsions (workloads/torsional/replay.py), no Ray."""

from __future__ import annotations

import numpy as np

from workloads.torsional.learner import TorsionalTerminals
from workloads.torsional.replay import StructureReplayBuffer


def _terminals(entry_index, start):
    n = len(entry_index)
    angles = np.full((n, 3), np.nan, dtype=np.float32)
    angles[:, :2] = np.arange(start, start + n)[:, None]  # each state identifiable by its value
    return TorsionalTerminals(np.asarray(entry_index, dtype=np.int64), angles, np.arange(start, start + n) * 1.0)


def test_capacity_keeps_the_newest_states_of_each_structure():
    buffer = StructureReplayBuffer(capacity_per_structure=4, seed=0)
    buffer.add(_terminals([0] * 6 + [1] * 2, start=0))  # structure 0: energies 0..5, structure 1: 6, 7
    buffer.add(_terminals([1] * 3, start=100))  # structure 1: 6, 7, 100, 101, 102 -> newest 4
    assert len(buffer) == 8
    assert buffer.energies[0].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert buffer.energies[1].tolist() == [7.0, 100.0, 101.0, 102.0]


def test_sample_is_balanced_over_structures_and_pairs_angles_with_energies():
    buffer = StructureReplayBuffer(capacity_per_structure=1000, seed=1)
    assert buffer.sample(5) is None
    buffer.add(_terminals([0] * 900 + [1] * 10, start=0))
    batch = buffer.sample(4000)
    share_of_1 = float(np.mean(batch.entry_index == 1))
    assert abs(share_of_1 - 0.5) < 0.05  # structure-uniform, not state-uniform (which gives 10/910)
    assert np.array_equal(batch.angles[:, 0].astype(np.float64), batch.energy_kcal_mol)
    assert np.isnan(batch.angles[:, 2]).all()
    assert set(batch.energy_kcal_mol[batch.entry_index == 1].tolist()) <= set(range(900, 910))


def test_state_round_trip_gives_the_same_draws():
    buffer = StructureReplayBuffer(capacity_per_structure=50, seed=2)
    buffer.add(_terminals([0, 1, 2] * 20, start=0))
    copy = StructureReplayBuffer(capacity_per_structure=50, seed=99)
    copy.set_state(buffer.get_state())
    a, b = buffer.sample(30), copy.sample(30)
    assert np.array_equal(a.entry_index, b.entry_index) and np.array_equal(a.energy_kcal_mol, b.energy_kcal_mol)


def test_seeds_are_kept_and_drawn_with_their_share():
    buffer = StructureReplayBuffer(capacity_per_structure=3, seed=3, seed_share=0.25)
    buffer.add_seeds(_terminals([0, 0], start=-2))  # seeds of structure 0: energies -2, -1
    only_seeds = buffer.sample(50)
    assert set(only_seeds.energy_kcal_mol.tolist()) == {-2.0, -1.0}  # nothing stored yet: seeds only
    for start in range(0, 30, 3):
        buffer.add(_terminals([0, 0, 0], start=start))  # the ring buffer turns over; seeds stay
    batch = buffer.sample(4000)
    seeded = np.isin(batch.energy_kcal_mol, [-2.0, -1.0])
    assert abs(seeded.mean() - 0.25) < 0.03
    assert set(batch.energy_kcal_mol[~seeded].tolist()) == {27.0, 28.0, 29.0}
    restored = StructureReplayBuffer(capacity_per_structure=3, seed=0, seed_share=0.25)
    restored.set_state(buffer.get_state())
    assert set(restored.seeds) == {0} and restored.seeds[0][1].tolist() == [-2.0, -1.0]
