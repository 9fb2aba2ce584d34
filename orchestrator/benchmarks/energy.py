"""Energy throughput (conformers per second) on the Torsional-GFN reference molecules.

    python -m orchestrator.benchmarks.energy [--conformers 2000] [--workers 1 2]

Measured in one run, on the same random-torsion conformers: the reference's way (a new RDKit
molecule and MMFF force field per conformer), our RDKit backend, our OpenMM backend (one
in-process worker each, one thread), and the Ray energy pool with k actors. Prints per-core
throughput, the pool's efficiency (k actors vs. k x one in-process worker) and the speed-up over
the reference's way. Targets (issue 3): efficiency >= 0.85, per-core >= 5x the reference's way.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import ray  # noqa: E402

from actors.energy import EnergyPool, EnergyRequest, EnergyWorker, Structure  # noqa: E402
from workloads.torsional.energy_rdkit import reference_energy  # noqa: E402
from workloads.torsional.conformer import set_torsions  # noqa: E402
from workloads.torsional.molecule import load_molecule  # noqa: E402

REFERENCE_MOLECULES = (
    "C1C=CC[C@@H]2[C@@H]1C(=O)N(C2=O)SC(Cl)(Cl)Cl", "COC=O", "c1ccc2c(c1)C(=O)c3c(ccc(c3C2=O)N)N",
    "C[C@@H]1CCCC[C@@H]1C", "COc1ccccc1", "CCC", "CCc1cccc2c1cccc2", "c1ccc(c(c1)C(F)(F)F)C(F)(F)F",
)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conformers", type=int, default=2000, help="per molecule")
    parser.add_argument("--reference-conformers", type=int, default=300, help="per molecule, for the slow way")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk-size", type=int, default=1000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    molecules = {s: load_molecule(s) for s in REFERENCE_MOLECULES}
    structures = {s: Structure(s, m.positions()) for s, m in molecules.items()}
    requests = [EnergyRequest(s, rng.uniform(0, 2 * np.pi, (args.conformers, m.num_torsions)))
                for s, m in molecules.items()]
    total = args.conformers * len(requests)

    def reference_way() -> None:
        for request in requests:
            molecule = molecules[request.key]
            angles = request.angles[:args.reference_conformers]
            reference_energy(molecule, set_torsions(molecule.positions(), molecule, angles))

    reference_rate = args.reference_conformers * len(requests) / _timed(reference_way)
    print(f"{'method':<28}{'conformers/s':>14}{'per core':>12}{'vs reference':>14}{'efficiency':>12}")
    print(f"{'reference way (1 core)':<28}{reference_rate:>14,.0f}{reference_rate:>12,.0f}{1.0:>14.1f}{'':>12}")

    in_process: dict[str, float] = {}
    for backend in ("rdkit", "openmm"):
        worker = EnergyWorker(backend, "MMFF94s", 1e4)
        worker.register(structures)
        rate = total / _timed(lambda: [worker.energies(r.key, r.angles) for r in requests])
        in_process[backend] = rate
        print(f"{backend + ' backend (1 core)':<28}{rate:>14,.0f}{rate:>12,.0f}{rate / reference_rate:>14.1f}{'':>12}")

    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    for k in args.workers:
        actor = ray.remote(EnergyWorker).options(num_cpus=1, max_restarts=-1)
        pool = EnergyPool([actor.remote("rdkit", "MMFF94s", 1e4) for _ in range(k)], chunk_size=args.chunk_size)
        pool.register(structures)
        pool.evaluate(requests[:1])  # warm up the workers
        rate = total / _timed(lambda: pool.evaluate(requests))
        efficiency = rate / (k * in_process["rdkit"])
        print(f"{f'pool, {k} rdkit actor(s)':<28}{rate:>14,.0f}{rate / k:>12,.0f}{rate / k / reference_rate:>14.1f}"
              f"{efficiency:>12.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
