"""Energy-evaluation role and the pool of them.

`EnergyWorker` (one per actor) holds one force field per (molecule, local structure), built once
when the structure is registered and reused for every conformer; `energies(key, angles)` builds
the conformers of a batch of torsion angles and returns their energies in kcal/mol.

`EnergyPool` (in the trial's process) splits a batch of requests across N workers, keeps at most
`max_in_flight` chunks per worker, gathers results in order and, when a worker dies, waits for
Ray to restart it, registers its structures again and redoes its chunks: no chunk is lost or
counted twice.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray


ACTOR_DIED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


@dataclass(frozen=True)
class Structure:
    """A molecule in one local structure (bond lengths and angles from an MD frame or ETKDG)."""

    smiles: str
    positions: np.ndarray
    """[N, 3] Angstrom."""


@dataclass
class EnergyResult:
    energies: np.ndarray
    """[B] kcal/mol, clamped to `clamp_kcal_mol` where the raw value was non-finite or above it."""
    clamped: np.ndarray
    """[B] bool: the raw energy was non-finite or absurd (overlapping atoms)."""


class EnergyWorker:
    def __init__(self, backend: str, variant: str, clamp_kcal_mol: float, seed: int = 0, num_cpus: float = 1.0):
        import torch  # noqa: F401 - imported for its thread setting only

        torch.set_num_threads(max(1, math.floor(num_cpus)))
        self.backend, self.variant, self.clamp_kcal_mol, self.seed = backend, variant, clamp_kcal_mol, seed
        self._force_fields: dict[str, Any] = {}
        self._molecules: dict[str, Any] = {}
        self._local: dict[str, tuple[Any, np.ndarray]] = {}

    def ping(self) -> int:
        return len(self._force_fields)

    def register(self, structures: dict[str, Structure]) -> int:
        from workloads.torsional.molecule import load_molecule

        for key, structure in structures.items():
            if key in self._force_fields:
                continue
            molecule = self._molecules.get(structure.smiles)
            if molecule is None:
                molecule = self._molecules[structure.smiles] = load_molecule(structure.smiles, self.seed, self.variant)
            self._force_fields[key] = self._force_field(molecule, structure.positions)
            self._local[key] = (molecule, structure.positions)
        return len(self._force_fields)

    def _force_field(self, molecule: Any, positions: np.ndarray) -> Any:
        if self.backend == "openmm":
            from workloads.torsional.energy_openmm import OpenMMEnergy

            return OpenMMEnergy(molecule, positions, variant=self.variant)
        from workloads.torsional.energy_rdkit import RDKitEnergy

        return RDKitEnergy(molecule, positions, variant=self.variant)

    def energies(self, key: str, angles: np.ndarray) -> EnergyResult:
        """angles [B, K] radians -> energies of the conformers of structure `key`."""
        from workloads.torsional.conformer import set_torsions

        if key not in self._local:  # a restarted worker starts empty; the pool registers again
            raise KeyError(f"structure {key!r} is not registered on this energy worker")
        molecule, positions = self._local[key]
        conformers = set_torsions(positions, molecule, angles)  # [B, N, 3]
        raw = np.asarray(self._force_fields[key].energies(conformers), dtype=np.float64)  # [B]
        clamped = ~np.isfinite(raw) | (raw > self.clamp_kcal_mol)
        return EnergyResult(np.where(clamped, self.clamp_kcal_mol, raw), clamped)


@dataclass(frozen=True)
class EnergyRequest:
    key: str
    angles: np.ndarray
    """[B, K] radians."""


class EnergyPool:
    def __init__(self, workers: list[Any], chunk_size: int = 256, max_in_flight: int = 2):
        self.workers = workers
        self.chunk_size = chunk_size
        self.max_in_flight = max_in_flight
        self.structures: dict[str, Structure] = {}
        self.redone_chunks = 0

    def register(self, structures: dict[str, Structure]) -> None:
        self.structures.update(structures)
        ray.get([worker.register.remote(structures) for worker in self.workers])

    def evaluate(self, requests: list[EnergyRequest]) -> list[EnergyResult]:
        """Energies for every request, in order; chunks go round-robin to the workers."""
        chunks = [(i, start) for i, request in enumerate(requests)
                  for start in range(0, len(request.angles), self.chunk_size)]
        queues = [deque(c for c in range(len(chunks)) if c % len(self.workers) == w) for w in range(len(self.workers))]
        pending: dict[ray.ObjectRef, tuple[int, int]] = {}
        in_flight = [0] * len(self.workers)
        results: dict[int, EnergyResult] = {}
        while pending or any(queues):
            for w, queue in enumerate(queues):
                while queue and in_flight[w] < self.max_in_flight:
                    c = queue.popleft()
                    i, start = chunks[c]
                    angles = requests[i].angles[start:start + self.chunk_size]
                    pending[self.workers[w].energies.remote(requests[i].key, angles)] = (c, w)
                    in_flight[w] += 1
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            c, w = pending.pop(ref)
            in_flight[w] -= 1
            try:
                results[c] = ray.get(ref)
            except (*ACTOR_DIED, KeyError):  # died in flight, or restarted before it got the call
                self.redone_chunks += 1
                self._revive(w)
                queues[w].appendleft(c)
        by_request: dict[int, list[EnergyResult]] = {}
        for c, (i, _) in enumerate(chunks):
            by_request.setdefault(i, []).append(results[c])
        return [_concat(by_request[i]) for i in range(len(requests))]

    def _revive(self, w: int, timeout_s: float = 120.0) -> None:
        """Ray restarts a dead worker (max_restarts=-1); it comes back empty: register again."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ray.get(self.workers[w].register.remote(self.structures), timeout=60)
                return
            except (*ACTOR_DIED, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _concat(results: list[EnergyResult]) -> EnergyResult:
    return EnergyResult(np.concatenate([r.energies for r in results]), np.concatenate([r.clamped for r in results]))


class PoolEnergyFn:
    """The learner's energy function backed by the pool: [(entry, angles [n, K])] -> [energies [n]].

    Handed to a learner actor; structures are registered with the workers on first sight."""

    def __init__(self, workers: list[Any], chunk_size: int = 256):
        self.pool = EnergyPool(workers, chunk_size=chunk_size)

    def __call__(self, requests: list[tuple[Any, np.ndarray]]) -> list[np.ndarray]:
        new = {entry.structure_id: Structure(entry.smiles, entry.positions)
               for entry, _ in requests if entry.structure_id not in self.pool.structures}
        if new:
            self.pool.register(new)
        results = self.pool.evaluate([EnergyRequest(entry.structure_id, angles) for entry, angles in requests])
        return [result.energies for result in results]
