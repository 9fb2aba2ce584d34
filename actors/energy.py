"""Energy-evaluation role and the pool of them.

`EnergyWorker` (one per actor) holds one force field per (molecule, local structure), built once
when the structure is registered and reused for every conformer; `evaluate(segments)` builds the
conformers of batches of torsion angles of several structures and returns their energies in kcal/mol.

`EnergyPool` (in the trial's process) packs the requests of a batch into chunks of near-equal cost,
about `chunk_size` conformers each, one per worker where that leaves each at
least `min_chunk` (a chunk may span several structures): a learner batch of 8 structures x 16
conformers is one Ray call, not eight, and a large one keeps every worker busy. A Ray call costs
0.3 ms to a few ms against ~10-20 us per conformer, so fewer, larger calls keep the pool efficient (chunk sizes
compared in docs/runtime.md, `orchestrator.families.torsional.benchmark_energy --chunk-size`). A conformer's
cost is what the workers measured for its structure (CPU seconds per conformer, reported with every chunk),
before that its atom count: costs per atom differ between the reference's molecules, so chunks of equal atom
counts left one of two workers idle at a batch's end.
`submit` sends chunks to the least busy workers, at most `max_in_flight` per worker (the rest wait
in a queue, sent as chunks come back), and returns at once; `result` gathers a batch in order. When
a worker dies, the pool waits for Ray to restart it, registers its structures again and redoes its
chunks: no chunk is lost or counted twice.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
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
    seconds: np.ndarray | None = None
    """[S] CPU seconds the worker spent on each of the S segments it was sent (the pool's cost model)."""


class EnergyWorker:
    def __init__(self, backend: str, variant: str, clamp_kcal_mol: float, seed: int = 0, num_cpus: float = 1.0):
        import torch

        torch.set_num_threads(max(1, math.floor(num_cpus)))
        self.backend, self.variant, self.clamp_kcal_mol, self.seed = backend, variant, clamp_kcal_mol, seed
        self._force_fields: dict[str, Any] = {}
        self._molecules: dict[str, Any] = {}

    def ping(self) -> None:
        """Answers once the actor is alive."""

    def cpu_seconds(self) -> float:
        """CPU time of this process so far (the benchmark's pool efficiency per CPU second)."""
        return time.process_time()

    def register(self, structures: dict[str, Structure]) -> int:
        from workloads.torsional.molecule import load_molecule

        for key, structure in structures.items():
            if key in self._force_fields:
                continue
            molecule = self._molecules.get(structure.smiles)
            if molecule is None:
                molecule = self._molecules[structure.smiles] = load_molecule(structure.smiles, self.seed, self.variant)
            self._force_fields[key] = self._force_field(molecule, structure.positions)
        return len(self._force_fields)

    def _force_field(self, molecule: Any, positions: np.ndarray) -> Any:
        if self.backend == "openmm":
            from workloads.torsional.energy_openmm import OpenMMEnergy

            return OpenMMEnergy(molecule, positions, variant=self.variant)
        from workloads.torsional.energy_rdkit import RDKitEnergy

        return RDKitEnergy(molecule, positions, variant=self.variant)

    def energies(self, key: str, angles: np.ndarray) -> EnergyResult:
        """angles [B, K] radians -> energies of the conformers of structure `key`."""
        if key not in self._force_fields:  # a restarted worker starts empty; the pool registers again
            raise KeyError(f"structure {key!r} is not registered on this energy worker")
        start = time.thread_time()
        raw = np.asarray(self._force_fields[key].torsion_energies(angles), dtype=np.float64)  # [B]
        clamped = ~np.isfinite(raw) | (raw > self.clamp_kcal_mol)
        return EnergyResult(
            np.where(clamped, self.clamp_kcal_mol, raw), clamped, np.array([time.thread_time() - start])
        )

    def evaluate(self, segments: list[tuple[str, np.ndarray]]) -> EnergyResult:
        """[(key, angles [B_s, K_s])] -> the energies of every segment, concatenated in order ([sum B_s]), with
        each segment's CPU seconds."""
        return _concat([self.energies(key, angles) for key, angles in segments])


@dataclass(frozen=True)
class EnergyRequest:
    key: str
    angles: np.ndarray
    """[B, K] radians."""


@dataclass
class _Batch:
    """One submitted list of requests: its chunks (segments (request, start, stop)) and their results."""

    requests: list[EnergyRequest]
    chunks: list[list[tuple[int, int, int]]]
    results: dict[int, EnergyResult] = field(default_factory=dict)


class EnergyPool:
    def __init__(self, workers: list[Any], chunk_size: int = 4096, max_in_flight: int = 2, min_chunk: int = 256):
        self.workers = workers
        self.chunk_size = chunk_size
        self.min_chunk = min_chunk
        self.max_in_flight = max_in_flight
        self.structures: dict[str, Structure] = {}
        self.redone_chunks = 0
        self._batches: dict[int, _Batch] = {}
        self._next_ticket = 0
        self._queue: deque[tuple[int, int]] = deque()  # (ticket, chunk) not sent yet, oldest first
        self._pending: dict[ray.ObjectRef, tuple[int, int, int]] = {}  # ref -> (ticket, chunk, worker)
        self._in_flight = [0] * len(workers)
        self._measured_seconds: dict[str, float] = defaultdict(float)  # structure key -> CPU seconds so far
        self._measured_conformers: dict[str, int] = defaultdict(int)  # ... over this many conformers

    def register(self, structures: dict[str, Structure]) -> None:
        self.structures.update(structures)
        ray.get([worker.register.remote(structures) for worker in self.workers])

    def submit(self, requests: list[EnergyRequest]) -> int:
        """Queue the requests' chunks, send what the in-flight bound allows, return a ticket at once."""
        ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
        # chunks of equal cost keep the workers equally busy when each gets only a few chunks
        costs = self.cost_per_conformer([r.key for r in requests])
        self._batches[ticket] = _Batch(requests, self._chunks([len(r.angles) for r in requests], costs))
        self._queue.extend((ticket, c) for c in range(len(self._batches[ticket].chunks)))
        self._collect(timeout=0)
        self._send()
        return ticket

    def result(self, ticket: int) -> list[EnergyResult]:
        """The energies of a submitted batch, one EnergyResult per request, in order (blocks until done)."""
        batch = self._batches[ticket]
        while len(batch.results) < len(batch.chunks):
            self._send()
            self._collect(timeout=None)
        del self._batches[ticket]
        pieces: list[list[EnergyResult]] = [[] for _ in batch.requests]
        for c, segments in enumerate(batch.chunks):
            result, offset = batch.results[c], 0
            for i, start, stop in segments:
                n = stop - start
                pieces[i].append(
                    EnergyResult(result.energies[offset : offset + n], result.clamped[offset : offset + n])
                )
                offset += n
        return [_concat(p) if p else EnergyResult(np.zeros(0), np.zeros(0, dtype=bool)) for p in pieces]

    def evaluate(self, requests: list[EnergyRequest]) -> list[EnergyResult]:
        """Energies for every request, in order."""
        return self.result(self.submit(requests))

    def record(self, key: str, conformers: int, seconds: float) -> None:
        """A worker spent `seconds` of CPU on `conformers` conformers of structure `key`."""
        self._measured_seconds[key] += seconds
        self._measured_conformers[key] += conformers

    def cost_per_conformer(self, keys: list[str], min_measured: int = 64) -> list[float]:
        """Each key's measured CPU seconds per conformer once `min_measured` conformers were timed; before that its
        atoms x the measured seconds per atom-conformer of the timed structures (or just its atoms, when none is)."""

        def atoms(key: str) -> int:
            return len(self.structures[key].positions) if key in self.structures else 1

        timed = [k for k, n in self._measured_conformers.items() if n >= min_measured]
        per_atom = (
            (
                sum(self._measured_seconds[k] for k in timed)
                / sum(self._measured_conformers[k] * atoms(k) for k in timed)
            )
            if timed
            else 1.0
        )
        return [
            self._measured_seconds[k] / self._measured_conformers[k]
            if self._measured_conformers.get(k, 0) >= min_measured
            else atoms(k) * per_atom
            for k in keys
        ]

    def _chunks(self, sizes: list[int], costs: list[float] | None = None) -> list[list[tuple[int, int, int]]]:
        """Cut the concatenated requests into chunks of near-equal cost (conformers x each request's cost per
        conformer, default 1): as many as chunk_size conformers per chunk would make, at least one per worker,
        none smaller than min_chunk conformers."""
        total = sum(sizes)
        if total == 0:
            return []
        costs = costs or [1.0] * len(sizes)
        num_chunks = min(math.ceil(total / self.min_chunk), max(math.ceil(total / self.chunk_size), len(self.workers)))
        target = sum(n * w for n, w in zip(sizes, costs)) / num_chunks
        chunks: list[list[tuple[int, int, int]]] = [[]]
        room = target
        for i, (n, w) in enumerate(zip(sizes, costs)):
            start = 0
            while start < n:
                if room <= 0:
                    chunks.append([])
                    room += target  # an overfull chunk borrows from the next: the total stays num_chunks
                stop = min(n, start + max(1, math.ceil(room / w - 1e-9)))
                chunks[-1].append((i, start, stop))
                room -= (stop - start) * w
                start = stop
        return chunks

    def _send(self) -> None:
        """Send queued chunks to the least busy workers while the in-flight bound allows."""
        while self._queue:
            w = min(range(len(self.workers)), key=self._in_flight.__getitem__)
            if self._in_flight[w] >= self.max_in_flight:
                return
            ticket, c = self._queue.popleft()
            batch = self._batches[ticket]
            segments = [
                (batch.requests[i].key, np.asarray(batch.requests[i].angles[start:stop], dtype=np.float64))
                for i, start, stop in batch.chunks[c]
            ]
            self._pending[self.workers[w].evaluate.remote(segments)] = (ticket, c, w)
            self._in_flight[w] += 1

    def _collect(self, timeout: float | None) -> None:
        """Take the chunks that came back (at least one if timeout is None); redo those of a dead worker."""
        if not self._pending:
            return
        ready, _ = ray.wait(
            list(self._pending), num_returns=1 if timeout is None else len(self._pending), timeout=timeout
        )
        for ref in ready:
            ticket, c, w = self._pending.pop(ref)
            self._in_flight[w] -= 1
            batch = self._batches[ticket]
            try:
                batch.results[c] = result = ray.get(ref)
                timed = zip(batch.chunks[c], result.seconds) if result.seconds is not None else ()
                for (i, start, stop), seconds in timed:
                    self.record(batch.requests[i].key, stop - start, float(seconds))
            except (*ACTOR_DIED, KeyError):  # died in flight, or restarted before it got the call
                self.redone_chunks += 1
                self._revive(w)
                self._queue.appendleft((ticket, c))

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
    seconds = [r.seconds for r in results if r.seconds is not None]
    return EnergyResult(
        np.concatenate([r.energies for r in results]),
        np.concatenate([r.clamped for r in results]),
        np.concatenate(seconds) if len(seconds) == len(results) else None,
    )


class PoolEnergyFn:
    """The learner's energy function backed by the pool: [(entry, angles [n, K])] -> [energies [n]].

    `submit(requests) -> handle` sends the batch and returns at once (the learner samples its next
    batch meanwhile); `result(handle)` gathers it in order; `fn(requests)` is result(submit(requests)).
    Handed to a learner actor; structures are registered with the workers on first sight.

    `workers`: actor handles, or the names of named actors in `namespace`, looked up on first use. A learner
    actor's constructor gets names: an actor handle there is an object reference, which Ray does not keep for
    the actor's restart (ray-project/ray#53727), while a name finds the same actor, restarted or not."""

    def __init__(
        self, workers: list[Any], chunk_size: int = 4096, max_in_flight: int = 2, namespace: str | None = None
    ):
        self._workers, self._namespace = list(workers), namespace
        self._chunk_size, self._max_in_flight = chunk_size, max_in_flight
        self._pool: EnergyPool | None = None

    @property
    def pool(self) -> EnergyPool:
        if self._pool is None:
            handles = [ray.get_actor(w, namespace=self._namespace) if isinstance(w, str) else w for w in self._workers]
            self._pool = EnergyPool(handles, chunk_size=self._chunk_size, max_in_flight=self._max_in_flight)
        return self._pool

    def submit(self, requests: list[tuple[Any, np.ndarray]]) -> int:
        new = {
            entry.structure_id: Structure(entry.smiles, entry.positions)
            for entry, _ in requests
            if entry.structure_id not in self.pool.structures
        }
        if new:
            self.pool.register(new)
        return self.pool.submit([EnergyRequest(entry.structure_id, angles) for entry, angles in requests])

    def result(self, handle: int) -> list[np.ndarray]:
        return [result.energies for result in self.pool.result(handle)]

    def __call__(self, requests: list[tuple[Any, np.ndarray]]) -> list[np.ndarray]:
        return self.result(self.submit(requests))
