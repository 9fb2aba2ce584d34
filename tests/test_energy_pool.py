"""The energy pool on a real local Ray: results in order and equal to an in-process force field,
clamping of absurd energies, a worker killed mid-batch whose chunks are redone exactly once, and
batches submitted before earlier ones are gathered (the learner's overlap)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import ray

from actors.energy import EnergyPool, EnergyRequest, EnergyWorker, PoolEnergyFn, Structure
from workloads.torsional.conformer import set_torsions
from workloads.torsional.energy_rdkit import RDKitEnergy
from workloads.torsional.molecule import load_molecule

SMILES = ("CCC", "COc1ccccc1")


def _workers(backend: str, num_workers: int = 2) -> list:
    worker = ray.remote(EnergyWorker).options(num_cpus=0.5, max_restarts=-1, max_task_retries=0)
    return [worker.remote(backend, "MMFF94s", 1000.0) for _ in range(num_workers)]


def _pool(backend: str, num_workers: int = 2, chunk_size: int = 64) -> EnergyPool:
    pool = EnergyPool(_workers(backend, num_workers), chunk_size=chunk_size, min_chunk=min(chunk_size, 256))
    pool.register({s: Structure(s, load_molecule(s).positions()) for s in SMILES})
    return pool


def _requests(n: int, seed: int = 0) -> list[EnergyRequest]:
    rng = np.random.default_rng(seed)
    return [EnergyRequest(s, rng.uniform(0, 2 * np.pi, size=(n, 2))) for s in SMILES]


def _expected(requests: list[EnergyRequest]) -> list[np.ndarray]:
    out = []
    for request in requests:
        molecule = load_molecule(request.key)
        positions = molecule.positions()
        raw = RDKitEnergy(molecule, positions).energies(set_torsions(positions, molecule, request.angles))
        out.append(np.minimum(raw, 1000.0))
    return out


def test_pool_matches_in_process_energies_in_order(ray_cluster):
    requests = _requests(300)
    for backend in ("rdkit", "openmm"):
        results = _pool(backend).evaluate(requests)
        for result, expected, request in zip(results, _expected(requests), requests):
            assert result.energies.shape == (len(request.angles),)
            np.testing.assert_allclose(result.energies, expected, atol=1e-3)


def test_overlapping_atoms_are_clamped_and_flagged(ray_cluster):
    pool = _pool("rdkit", num_workers=1)
    molecule = load_molecule("CCC")
    crushed = molecule.positions() * 0.05  # every atom within ~0.1 Angstrom of another
    pool.register({"crushed": Structure("CCC", crushed)})
    (result,) = pool.evaluate([EnergyRequest("crushed", np.zeros((4, 2)))])
    assert result.clamped.all() and np.all(result.energies == 1000.0)
    (fine,) = pool.evaluate([EnergyRequest("CCC", np.zeros((4, 2)))])
    assert not fine.clamped.any() and np.all(np.isfinite(fine.energies))


def test_a_killed_worker_has_its_chunks_redone_once(ray_cluster):
    pool = _pool("openmm", chunk_size=16)
    requests = _requests(10_000, seed=1)  # 1,250 chunks: a few seconds, the kill lands mid-batch
    killer = threading.Thread(target=lambda: (time.sleep(0.3), ray.kill(pool.workers[0], no_restart=False)))
    killer.start()
    results = pool.evaluate(requests)
    killer.join()
    assert pool.redone_chunks >= 1
    for result, expected in zip(results, _expected(requests)):
        np.testing.assert_allclose(result.energies, expected, atol=1e-3)


def test_chunks_span_structures_and_cover_every_conformer_once():
    pool = EnergyPool([None, None], chunk_size=100, min_chunk=50)
    sizes = [16] * 8 + [0, 250]  # a learner batch, an empty request, a large one
    chunks = pool._chunks(sizes)
    assert len(chunks) == 4 and max(sum(stop - start for _, start, stop in c) for c in chunks) <= 100
    seen = [np.zeros(n, dtype=int) for n in sizes]
    for chunk in chunks:
        for i, start, stop in chunk:
            seen[i][start:stop] += 1
    assert all(np.all(s == 1) for s in seen)
    assert len(pool._chunks([16] * 8)) == 2  # one Ray call per worker ...
    assert len(pool._chunks([16] * 4)) == 2 and len(pool._chunks([16] * 3)) == 1  # ... if each gets >= min_chunk
    assert pool._chunks([1]) == [[(0, 0, 1)]] and pool._chunks([0, 0]) == []


def test_chunks_carry_equal_costs():
    """A request of heavy conformers (3x the cost) is cut finer: every chunk costs the same, none is lost."""
    pool = EnergyPool([None, None], chunk_size=100, min_chunk=50)
    chunks = pool._chunks([300, 100], costs=[1.0, 3.0])  # 400 conformers: 4 chunks of cost 150
    assert chunks == [[(0, 0, 150)], [(0, 150, 300)], [(1, 0, 50)], [(1, 50, 100)]]
    uneven = pool._chunks([250, 101], costs=[1.0, 2.6])
    assert len(uneven) == 4 and sum(stop - start for c in uneven for _, start, stop in c) == 351
    chunk_costs = [sum((stop - start) * (1.0, 2.6)[i] for i, start, stop in c) for c in uneven]
    assert max(chunk_costs) - min(chunk_costs) <= 2 * 2.6  # equal up to the conformers at the seams


def test_measured_costs_replace_atom_counts(ray_cluster):
    """The workers time every segment; once a structure has 64 timed conformers its chunks are cut by that time.
    Before, a structure costs its atoms x the timed seconds per atom-conformer."""
    pool = _pool("rdkit", chunk_size=400)
    requests = _requests(300)
    pool.evaluate(requests)
    atoms = {s: len(load_molecule(s).positions()) for s in SMILES}
    costs = dict(zip(SMILES, pool.cost_per_conformer(list(SMILES))))
    assert all(0 < c < 1e-2 for c in costs.values())  # seconds per conformer, not atoms
    assert costs["COc1ccccc1"] > costs["CCC"]  # 16 atoms against 11
    measured = dict(pool._measured_conformers)
    assert measured == dict.fromkeys(SMILES, 300)  # each conformer timed once
    pool.structures["new"] = Structure("CCC", load_molecule("CCC").positions())
    per_atom = sum(pool._measured_seconds.values()) / sum(300 * atoms[s] for s in SMILES)
    assert pool.cost_per_conformer(["new"]) == [pytest.approx(atoms["CCC"] * per_atom)]

    timed = EnergyPool([None, None], chunk_size=100, min_chunk=50)
    timed.structures = {key: Structure("CCC", np.zeros((11, 3))) for key in ("light", "heavy")}  # same atoms
    timed.record("light", 100, 1e-3)
    timed.record("heavy", 100, 3e-3)  # 3x the light one's time: its chunks hold a third of the conformers
    costs = timed.cost_per_conformer(["light", "heavy"])
    assert costs == [pytest.approx(1e-5), pytest.approx(3e-5)]
    assert timed._chunks([300, 100], costs) == [[(0, 0, 150)], [(0, 150, 300)], [(1, 0, 50)], [(1, 50, 100)]]


@dataclass(frozen=True)
class _Entry:
    """The fields of the learner's StructureEntry that the pool reads."""

    structure_id: str
    smiles: str
    positions: np.ndarray


def test_submit_two_batches_then_gather_in_order(ray_cluster):
    fn = PoolEnergyFn(_workers("rdkit"), chunk_size=40, max_in_flight=1)
    entries = [_Entry(s, s, load_molecule(s).positions()) for s in SMILES]
    first, second = _requests(50, seed=2), _requests(70, seed=3)
    handle_1 = fn.submit([(entry, r.angles) for entry, r in zip(entries, first)])
    handle_2 = fn.submit([(entry, r.angles) for entry, r in zip(entries, second)])  # before result(first)
    got_1, got_2 = fn.result(handle_1), fn.result(handle_2)
    for got, requests in ((got_1, first), (got_2, second)):
        for energies, expected in zip(got, _expected(requests)):
            np.testing.assert_allclose(energies, expected, atol=1e-6)
    assert not fn.pool._pending and not fn.pool._queue and not fn.pool._batches
    (again,) = fn([(entries[0], first[0].angles)])  # __call__ = result(submit(...))
    np.testing.assert_allclose(again, got_1[0], atol=1e-12)
