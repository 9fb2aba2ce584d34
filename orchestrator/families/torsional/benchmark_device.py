"""The Torsional-GFN learner on each device: seconds per training iteration and the JSD it reaches there.

    python -m orchestrator.families.torsional.benchmark_device [--iters 50] [--devices cpu cuda] [--smoke]

One TorsionalLearner per device, in this process (no Ray; energies from RDKit in process, as `run_local`),
with the same config and seed. On each device: where every parameter and buffer of the policy, the log Z
network and the score lives (all must be on that device), one warm-up iteration, then `--iters` timed
training iterations, then one evaluation (mean JSD per split, its seconds). The learner actor picks cuda
when Ray gives its bundle a GPU (`actors/learner.py`); this runs the same learner without the actor, so a
GPU machine without Ray can check it. `cluster/gpu_check.sh` is the command for a lent GPU machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from workloads.torsional.config import TorsionalConfig
from workloads.torsional.learner import TorsionalLearner


def tensors_off_device(learner: TorsionalLearner) -> list[str]:
    """Names of the tensors of the learner's networks, torch energy and score that are not on its device: the
    modules' parameters and buffers, and the tensors the other objects hold as attributes."""
    holders = {
        "policy": learner.policy,
        "log_z_net": getattr(learner, "log_z_net", None),
        "torch_energy": learner.torch_energy,
        "score": learner.score,
    }
    wrong = []
    for name, holder in holders.items():
        if isinstance(holder, torch.nn.Module):
            tensors = [*holder.named_parameters(), *holder.named_buffers()]
        else:
            tensors = [(k, v) for k, v in getattr(holder, "__dict__", {}).items() if isinstance(v, torch.Tensor)]
        wrong += [f"{name}.{k} on {v.device}" for k, v in tensors if v.device.type != learner.device.type]
    return wrong


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="default: cpu, and cuda where there is one; a device named here must exist",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="the smoke config: a whole-path check in seconds")
    args = parser.parse_args()
    config = TorsionalConfig().smoke() if args.smoke else TorsionalConfig()
    print(
        f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
        + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""),
        flush=True,
    )
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit(
            "cuda was asked for, but torch sees no GPU on this machine (torch.cuda.is_available() is False)"
        )
    rows = []
    for device in devices:
        start = time.perf_counter()
        learner = TorsionalLearner(config, args.seed, device=device)
        built_s = time.perf_counter() - start
        wrong = tensors_off_device(learner)
        if wrong:
            raise SystemExit(f"{device}: {len(wrong)} tensors are not on the learner's device, e.g. {wrong[:5]}")
        learner.train(1)  # warm-up: first kernels, caches of the score
        synchronize(device)
        start = time.perf_counter()
        metrics, _ = learner.train(args.iters)
        synchronize(device)
        per_iter_s = (time.perf_counter() - start) / args.iters
        start = time.perf_counter()
        evaluation = learner.evaluate()
        eval_s = time.perf_counter() - start
        jsd = {k.split("/")[1]: v for k, v in evaluation.metrics.items() if k.endswith("/jsd") and k.count("/") == 2}
        loss = metrics.get("train/loss", float("nan"))
        rows.append((device, built_s, per_iter_s, eval_s, loss, jsd))
        print(
            f"{device}: built in {built_s:.1f} s, {per_iter_s:.3f} s per iteration, evaluation {eval_s:.1f} s, "
            f"loss {loss:.3f}, mean JSD {' '.join(f'{k} {v:.3f}' for k, v in sorted(jsd.items()))}",
            flush=True,
        )
        if not np.isfinite(loss):
            raise SystemExit(f"{device}: the training loss is not finite ({loss})")
    if len(rows) == 2:
        (a, _, a_s, _, _, _), (b, _, b_s, _, _, _) = rows
        print(f"{b} vs {a}: {a_s / b_s:.2f}x the iterations per second")


if __name__ == "__main__":
    main()
