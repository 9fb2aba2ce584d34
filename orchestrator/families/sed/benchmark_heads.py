"""Time and memory per training step of a head ensemble (SED's second scale) for M = 5, 20, 50 heads.

    python -m orchestrator.families.sed.benchmark_heads [--members 5 20 50] [--steps 30] [--dataset colordsprites]
                                            [--architecture convnet] [--batch-size 128] [--device cpu|cuda]

M linear heads on one frozen extractor (workloads/ensembles/members.py: HeadEnsemble, the active heads as one
einsum), trained in process by the coordinator's step (draw, forward, hard-sample weights and pairs, backward,
Adam), three ways:

    random pair     every head active, one random pair disagreeing (SED with all members training)
    2 active        two random heads active, and they are the pair (the reference's random_select: 2)
    all pairs       every head active, every pair disagreeing (the exhaustive baseline: M (M - 1) / 2 A2D terms)

Each (M, way) runs in a fresh process. After building the data and the host (the extractor is not pretrained:
its weights do not change its cost) it resets the kernel's peak-RSS mark (/proc/self/clear_refs), runs 3
warm-up steps and --steps timed ones, and reports the median seconds per timed step, the peak RSS above the RSS
before the first step (what the steps need, allocator caching included; on cuda: torch's peak allocated bytes
above those allocated before), and the bytes the heads hold: parameters, gradients and Adam's two moments,
4 M (C D + C) floats.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import time
from typing import Any

WAYS = {
    "random pair": {"pair_selection": "random_pair"},
    "2 active": {"pair_selection": "random_pair", "active_members": 2},
    "all pairs": {"pair_selection": "all_pairs"},
}


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1))


def measure(num_members: int, way: str, args: dict[str, Any]) -> dict[str, float]:
    """One (M, way) in this process: seconds per step and step memory."""
    import torch

    from workloads.ensembles.config import SEDConfig
    from workloads.ensembles.coordinator import Coordinator
    from workloads.ensembles.data import train_set
    from workloads.ensembles.members import HeadEnsemble

    torch.set_num_threads(1)
    config = SEDConfig(
        dataset=args["dataset"],
        architecture=args["architecture"],
        mode="heads",
        num_members=num_members,
        batch_size=args["batch_size"],
        pretrain_iters=0,
        num_train=2000,
        **WAYS[way],
    )
    train = train_set(config)
    host = HeadEnsemble(config, list(range(num_members)), seed=0, device=args["device"], train=train)
    coordinator = Coordinator(config, train, seed=0)

    def step() -> None:
        coordinator.run_step(
            lambda draw: dict(zip(draw.active, host.forward(draw.batch, draw.active))),
            lambda updates: host.backward(list(updates.values())),
        )

    cuda = args["device"] == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS (VmHWM) := current RSS
    for _ in range(3):
        step()
    seconds = []
    for _ in range(args["steps"]):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    dim = host.extractor.feature_dim
    return {
        "s_per_step": statistics.median(seconds),
        "peak_above_base_mib": (peak - base) / 2**20,
        "head_state_mib": 4 * num_members * (config.num_classes * dim + config.num_classes) * 4 / 2**20,
    }


def main() -> None:
    # Before Ray starts: its workers inherit these. Ray starts them at niceness 15, and on a shared machine they
    # would lose the CPU to every other process while the in-process baseline runs at 0.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dataset", default="colordsprites", choices=["colordsprites", "digits"])
    parser.add_argument("--architecture", default="convnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = vars(parser.parse_args())
    print(
        f"heads on a frozen {args['architecture']} ({args['dataset']}), batch {args['batch_size']}, "
        f"{args['device']}, median of {args['steps']} steps; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(f"{'way':<12} {'M':>4} {'ms/step':>9} {'peak MiB':>9} {'heads MiB':>10}", flush=True)
    context = multiprocessing.get_context("spawn")
    for way in WAYS:
        for num_members in args["members"]:
            with context.Pool(1) as pool:  # a fresh process: its peak memory is this run's alone
                row = pool.apply(measure, (num_members, way, args))
            print(
                f"{way:<12} {num_members:>4} {1000 * row['s_per_step']:>9.1f} {row['peak_above_base_mib']:>9.2f} "
                f"{row['head_state_mib']:>10.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
