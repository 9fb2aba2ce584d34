"""The energy pool on a real local Ray: results in order and equal to an in-process force field,
clamping of absurd energies, and a worker killed mid-batch whose chunks are redone exactly once."""
from __future__ import annotations

import threading
import time

import numpy as np
import ray

from actors.energy import EnergyPool, EnergyRequest, EnergyWorker, Structure
from workloads.torsional.conformer import set_torsions
from workloads.torsional.energy_rdkit import RDKitEnergy
from workloads.torsional.molecule import load_molecule

SMILES = ("CCC", "COc1ccccc1")


def _pool(backend: str, num_workers: int = 2, chunk_size: int = 64) -> EnergyPool:
    worker = ray.remote(EnergyWorker).options(num_cpus=0.5, max_restarts=-1, max_task_retries=0)
    workers = [worker.remote(backend, "MMFF94s", 1000.0) for _ in range(num_workers)]
    pool = EnergyPool(workers, chunk_size=chunk_size)
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
    requests = _requests(3000, seed=1)
    killer = threading.Thread(target=lambda: (time.sleep(0.5), ray.kill(pool.workers[0], no_restart=False)))
    killer.start()
    results = pool.evaluate(requests)
    killer.join()
    assert pool.redone_chunks >= 1
    for result, expected in zip(results, _expected(requests)):
        np.testing.assert_allclose(result.energies, expected, atol=1e-3)
