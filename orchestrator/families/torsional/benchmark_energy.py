"""Energy throughput (conformers per second) on the Torsional-GFN reference molecules.

    python -m orchestrator.families.torsional.benchmark_energy [--conformers 4000] [--workers 1 2] [--repeats 5]

Measured in one run, on the same random-torsion conformers of the reference's 6 training and 2
validation molecules: the reference's way (a new RDKit molecule and MMFF force field per conformer),
our RDKit and OpenMM backends (one in-process EnergyWorker each, one thread), and the Ray energy pool
of k actors of each backend. Actors are started, their structures registered and a full pass run
before any timing; then every method is timed once per round, so that all see the same background
load (the machine may be shared: the load average is printed), and each figure is the best round.

    per core          conformers/s divided by the cores used (k for a pool of k actors)
    vs reference      per-core throughput / the reference way's
    efficiency        pool conformers/s / (k x the in-process worker's), by the wall clock
    CPU efficiency    the same per CPU second: conformers per CPU second of the actors and the
                      driver / the in-process worker's; unlike the wall clock it does not count
                      time the actors wait for a core that another process holds
The torch rows time energy_torch.TorchTorsionalEnergy (the exact energy the policy's score drift
differentiates) on the same conformers, all molecules in one batched call per 2,560 conformers (the
learner's size at log PF), energies alone and with dE/d(torsion).
Targets (issue 3): efficiency >= 0.85, per core >= 5x the reference's way. The last rows time the
learner's batch shape (8 structures x 16 conformers per call, batch b + 1 sent before batch b is
gathered) in process and on the largest pool, where each call carries only a few ms of work.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import ray
import torch

from actors.energy import EnergyPool, EnergyRequest, EnergyWorker, Structure
from workloads.torsional.config import REFERENCE_TRAIN_SMILES, REFERENCE_VAL_SMILES, TorsionalConfig
from workloads.torsional.conformer import set_torsions
from workloads.torsional.data import zero_shot_entry
from workloads.torsional.energy_rdkit import reference_energy
from workloads.torsional.energy_torch import TorchTorsionalEnergy
from workloads.torsional.molecule import load_molecule

BACKENDS = ("rdkit", "openmm")


def timing(fn: Callable[[], None], cpu: Callable[[], float] = time.process_time) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call; the CPU probes (a Ray round trip for a pool) stay off the clock."""
    cpu_start = cpu()
    wall = time.perf_counter()
    fn()
    wall = time.perf_counter() - wall
    return wall, cpu() - cpu_start


def row(name: str, rate: float, cores: int, reference_rate: float, efficiency: str = "", cpu_efficiency: str = ""):
    print(
        f"{name:<34}{rate:>14,.0f}{rate / cores:>12,.0f}{rate / cores / reference_rate:>14.1f}"
        f"{efficiency:>12}{cpu_efficiency:>16}"
    )


def main() -> None:
    # Before Ray starts: its workers inherit these. Ray starts them at niceness 15, and on a shared machine they
    # would lose the CPU to every other process while the in-process baseline runs at 0.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conformers", type=int, default=4000, help="per molecule")
    parser.add_argument("--reference-conformers", type=int, default=300, help="per molecule, for the slow way")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    smiles = REFERENCE_TRAIN_SMILES + REFERENCE_VAL_SMILES
    molecules = {s: load_molecule(s) for s in smiles}
    structures = {s: Structure(s, m.positions()) for s, m in molecules.items()}
    requests = [
        EnergyRequest(s, rng.uniform(0, 2 * np.pi, (args.conformers, m.num_torsions))) for s, m in molecules.items()
    ]
    segments = [(r.key, r.angles) for r in requests]
    total = args.conformers * len(requests)
    learner_batches = [
        [EnergyRequest(r.key, r.angles[b : b + 16]) for r in requests] for b in range(0, args.conformers, 16)
    ]  # 8 structures x 16 conformers per call
    k_max = max(args.workers)

    def reference_way() -> None:
        for request in requests:
            molecule = molecules[request.key]
            angles = request.angles[: args.reference_conformers]
            reference_energy(molecule, set_torsions(molecule.positions(), molecule, angles))

    torch.set_num_threads(1)
    torch_energy = TorchTorsionalEnergy([zero_shot_entry(s, "etkdg", TorsionalConfig()) for s in smiles])
    entry_index = torch.arange(len(smiles)).repeat_interleave(args.conformers)  # [total]
    torch_angles = torch.zeros(total, torch_energy.k_max, dtype=torch.float64)
    for i, r in enumerate(requests):
        torch_angles[i * args.conformers : (i + 1) * args.conformers, : r.angles.shape[1]] = torch.as_tensor(r.angles)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(0))  # molecules mixed, as in a batch
    entry_index, torch_angles = entry_index[order], torch_angles[order]

    def torch_backend(with_gradient: bool) -> None:
        for start in range(0, total, 2560):
            e, a = entry_index[start : start + 2560], torch_angles[start : start + 2560]
            if with_gradient:
                a = a.requires_grad_()
                torch_energy.energies(e, a).sum().backward()
            else:
                torch_energy.energies(e, a)

    def learner_in_process(worker: EnergyWorker) -> None:
        for batch in learner_batches:
            worker.evaluate([(r.key, r.angles) for r in batch])

    def learner_loop(pool: EnergyPool) -> None:  # as the learner: submit batch b + 1, then gather batch b
        handle = pool.submit(learner_batches[0])
        for batch in learner_batches[1:]:
            handle, previous = pool.submit(batch), handle
            pool.result(previous)
        pool.result(handle)

    workers, pools = {}, {}
    # k_max actors per backend, one CPU each; only one backend's actors compute at a time
    ray.init(num_cpus=k_max * len(BACKENDS), include_dashboard=False, log_to_driver=False, configure_logging=False)
    actor = ray.remote(EnergyWorker).options(num_cpus=1)
    for backend in BACKENDS:
        workers[backend] = EnergyWorker(backend, "MMFF94s", 1e4)
        workers[backend].register(structures)
        workers[backend].evaluate(segments)  # warm up
        actors = [actor.remote(backend, "MMFF94s", 1e4) for _ in range(k_max)]
        for k in args.workers:
            pools[backend, k] = EnergyPool(actors[:k], chunk_size=args.chunk_size)
            pools[backend, k].register(structures)
            pools[backend, k].evaluate(requests)  # warm up

    def pool_cpu(pool: EnergyPool) -> Callable[[], float]:  # CPU seconds of its actors and of this driver
        return lambda: sum(ray.get([w.cpu_seconds.remote() for w in pool.workers])) + time.process_time()

    # every method once per round, so that each is timed under the same background load; best round
    rounds: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for _ in range(args.repeats):
        rounds["reference"].append(timing(reference_way))
        rounds["torch"].append(timing(lambda: torch_backend(False)))
        rounds["torch", "gradient"].append(timing(lambda: torch_backend(True)))
        for backend in BACKENDS:
            rounds[backend].append(timing(partial(workers[backend].evaluate, segments)))
            for k in args.workers:
                pool = pools[backend, k]
                rounds[backend, k].append(timing(partial(pool.evaluate, requests), pool_cpu(pool)))
            rounds[backend, "learner", 1].append(timing(partial(learner_in_process, workers[backend])))
            rounds[backend, "learner", k_max].append(timing(partial(learner_loop, pools[backend, k_max])))
    ray.shutdown()
    best = {key: (min(w for w, _ in times), min(c for _, c in times)) for key, times in rounds.items()}

    print(
        f"{len(smiles)} molecules x {args.conformers} conformers; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at the end; best of {args.repeats} rounds"
    )
    print(
        f"{'method':<34}{'conformers/s':>14}{'per core':>12}{'vs reference':>14}{'efficiency':>12}"
        f"{'CPU efficiency':>16}"
    )
    reference_rate = args.reference_conformers * len(requests) / best["reference"][0]
    row("reference way (1 core)", reference_rate, 1, reference_rate)
    for backend in BACKENDS:
        row(f"{backend} backend (1 core)", total / best[backend][0], 1, reference_rate)
    row("torch, batched (1 core)", total / best["torch"][0], 1, reference_rate)
    row("torch, with dE/dtorsion (1 core)", total / best["torch", "gradient"][0], 1, reference_rate)
    for backend in BACKENDS:
        wall_1, cpu_1 = best[backend]
        for k in args.workers:
            wall, cpu = best[backend, k]
            row(
                f"pool, {k} {backend} actor(s)",
                total / wall,
                k,
                reference_rate,
                f"{wall_1 / (k * wall):.2f}",
                f"{cpu_1 / cpu:.2f}",
            )
    for backend in BACKENDS:  # the learner's batch shape: in process, then the largest pool
        wall_1 = best[backend, "learner", 1][0]
        row(f"{backend}, 8 x 16 batches (1 core)", total / wall_1, 1, reference_rate)
        wall = best[backend, "learner", k_max][0]
        row(
            f"pool, {k_max} {backend}, 8 x 16 batches",
            total / wall,
            k_max,
            reference_rate,
            f"{wall_1 / (k_max * wall):.2f}",
        )


if __name__ == "__main__":
    main()
