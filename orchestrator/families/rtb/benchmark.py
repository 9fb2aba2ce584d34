"""RTB on images: posterior training iterations per second and peak memory for a full copy, LoRA and LoRA with the
gradient through a subset of steps; prior samples per second.

    python -m orchestrator.families.rtb.benchmark [--iters 10] [--device cpu|cuda] [--prior-iters N]
                                                  [--set key=value ...]

ImageRTBLearner (workloads/rtb/image_learner.py) with the settings of sweeps/rtb.yaml's digits block (batch 16,
K = 20 strided steps, the 8 x 8 digits UNet prior, the classifier reward). `--set` overrides any field of that
config, dotted, the value read as YAML: `--set batch_size=32 --set prior.sampling_steps=50 --set reward=mean_intensity`.

    prior sampling   DDPM.sample(prior, n) without gradient, at n = the config's batch and n = 128 (the evaluation's
                     chunk): the median of `--repeats` draws after one untimed, as samples per second
    posterior        ImageRTBLearner.train(1), forward RTB iterations (no replay), at the config's batch and K: the
                     median seconds over `--iters` iterations after `--warmup` untimed ones, for
                        copy     parameterization=copy: a full fine-tune of a copy of the prior
                        lora     parameterization=lora: the frozen prior with LoRA adapters (the config's rank)
                        subset   lora with grad_steps_fraction=0.25: log p_post's gradient through a random quarter
                                 of the K steps (its value through all of them, from the sampler)
    peak memory      each variant in a fresh process (multiprocessing, 'spawn'). CPU: the process's peak resident set
                     (VmHWM) after training, and its increment over the resident set once the learner is built (the
                     training's own memory: activations kept for the backward pass, gradients, Adam's state). CUDA:
                     torch.cuda.max_memory_allocated, and its increment over the memory allocated once it is built.

Peak memory is VmHWM, not getrusage's ru_maxrss: a spawned child's ru_maxrss starts at its parent's peak (Linux
carries the peak over through exec), so it would show the parent's prior training instead of the variant's.

The prior is trained once, in this process, before anything is timed (the default 2,000 steps take about 5 min on one
thread; `--prior-iters 50` for a quick look: speed and memory do not depend on how well the prior fits), and so is the
classifier reward (a few seconds); both go to every variant's process. How to read it: it/s is a trial learner's rate
on forward iterations (backtracking on replay samples is not timed); `increment MB` is what a variant needs beyond the
model and the process (on the CPU the process alone, torch included, is most of `peak MB`); the ratios copy / lora and
subset / lora say what LoRA and the subset gradient save. One torch thread on the CPU. Compare on an otherwise idle
machine: the load average is printed, and the figures move with it.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel
from torch import nn

from orchestrator.spec import load_sweep
from workloads.rtb.image_config import ImagePosteriorConfig
from workloads.rtb.image_learner import EVAL_CHUNK, ImageReward, ImageRTBLearner

VARIANTS = {
    "copy": {"parameterization": "copy"},
    "lora": {"parameterization": "lora"},
    "subset": {"parameterization": "lora", "grad_steps_fraction": 0.25},
}
"""What each variant changes in the config (`--set` applies to all three first)."""
MB = 2**20
SWEEP = Path(__file__).resolve().parents[3] / "sweeps" / "rtb.yaml"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def with_overrides(config: BaseModel, overrides: dict[str, Any]) -> Any:
    """`config` (a pydantic config) with dotted-path values set, validated again."""
    data = config.model_dump()
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"{path}: no such field of {type(config).__name__}")
        node[leaf] = value
    return type(config).model_validate(data)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> {key: value}, each value read as YAML (`1e-3` as a number too)."""
    overrides = {}
    for item in items:
        path, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected dotted.key=value")
        value = yaml.safe_load(text)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        overrides[path.strip()] = value
    return overrides


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def prior_samples_per_s(learner: ImageRTBLearner, n: int, repeats: int, device: str) -> float:
    """Samples per second of DDPM.sample(prior, n) without gradient: the median of `repeats` draws after one."""
    generator = torch.Generator(device=device).manual_seed(0)
    seconds = []
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        learner.ddpm.sample(learner.prior, n, generator)
        _sync(device)
        if i:  # the first draw pays one-off costs
            seconds.append(time.perf_counter() - start)
    return n / _median(seconds)


def _proc_status_mb(key: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak since exec) in MB; NaN off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return float("nan")


@dataclass
class VariantResult:
    seconds: list[float]
    """Seconds of each timed train(1)."""
    peak_mb: float
    """CPU: the process's peak resident set; CUDA: max_memory_allocated."""
    built_mb: float
    """The same measure once the learner is built, before training: CPU the resident set, CUDA memory_allocated."""
    trainable: int
    """Trainable parameters of the posterior (log Z excluded)."""

    @property
    def s_per_iter(self) -> float:
        return _median(self.seconds)

    @property
    def increment_mb(self) -> float:
        return self.peak_mb - self.built_mb


def measure_variant(
    config: ImagePosteriorConfig,
    prior_state: dict,
    reward: ImageReward,
    iters: int,
    warmup: int,
    device: str,
) -> VariantResult:
    """Seconds of `iters` single posterior iterations after `warmup` and the memory they took. Meant for a fresh
    process: on the CPU the peak resident set is the process's."""
    torch.set_num_threads(1)
    learner = ImageRTBLearner(config, seed=0, device=device, prior_state=prior_state)
    learner.reward = reward.to(device) if isinstance(reward, nn.Module) else reward
    trainable = sum(p.numel() for p in learner.posterior.parameters() if p.requires_grad)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        built = torch.cuda.memory_allocated() / MB
    else:
        built = _proc_status_mb("VmRSS")
    for _ in range(warmup):
        learner.train(1)
    seconds = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        learner.train(1)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / MB
    else:
        peak = _proc_status_mb("VmHWM")
        if math.isnan(peak):  # no /proc (macOS): ru_maxrss, in bytes there (kB on Linux)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (MB if sys.platform == "darwin" else 1024)
    return VariantResult(seconds, peak, built, trainable)


def _in_fresh_process(*args: Any) -> VariantResult:
    """measure_variant(*args) in a new spawned process (nothing of this one's memory or allocator state)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_variant, args)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before any spawned process starts: they inherit it
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10, help="timed posterior iterations per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed posterior iterations before them")
    parser.add_argument("--repeats", type=int, default=5, help="timed prior draws per batch size")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--prior-iters", type=int, help="prior.train_iters (default: the config's)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of ImagePosteriorConfig (dotted; the value read as YAML); repeatable",
    )
    args = parser.parse_args(argv)
    overrides = parse_sets(args.sets)
    if args.prior_iters is not None:
        overrides["prior.train_iters"] = args.prior_iters
    try:
        config = with_overrides(load_sweep(SWEEP).config.digits, overrides)
    except (KeyError, TypeError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        parser.error(str(error))

    torch.set_num_threads(1)
    p = config.prior
    print(
        f"RTB on images: batch {config.batch_size}, K = {p.sampling_steps}, {p.dataset} {p.image_size} x "
        f"{p.image_size}, UNet {tuple(p.block_out_channels)}, LoRA rank {config.lora_rank}, reward {config.reward}, "
        f"{len(config.targets)} target(s); device {args.device}, torch threads {torch.get_num_threads()}; {_load()}"
    )
    start = time.perf_counter()
    learner = ImageRTBLearner(config, seed=0, device=args.device)
    prior_state = learner.prior_state_dict()
    prior_s = time.perf_counter() - start
    start = time.perf_counter()
    reward = learner.reward
    reward_s = time.perf_counter() - start
    print(f"prior trained in {prior_s:.0f} s ({p.train_iters} steps), reward in {reward_s:.1f} s: not timed below")

    print(f"\nprior samples, no gradient, K = {p.sampling_steps} (median of {args.repeats} draws)")
    for n in dict.fromkeys([config.batch_size, EVAL_CHUNK]):
        print(f"  batch {n:>4}: {prior_samples_per_s(learner, n, args.repeats, args.device):,.0f} samples/s")

    # To the CPU before pickling: a CUDA tensor would go to the child by CUDA IPC.
    prior_state["unet"] = {name: value.cpu() for name, value in prior_state["unet"].items()}
    reward = reward.cpu() if isinstance(reward, nn.Module) else reward
    del learner
    results = {}
    for name, change in VARIANTS.items():
        variant = with_overrides(config, change)
        results[name] = _in_fresh_process(variant, prior_state, reward, args.iters, args.warmup, args.device)

    memory = "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS of the variant's process"
    print(
        f"\nposterior training, batch {config.batch_size}, K = {p.sampling_steps}: median of {args.iters} iterations "
        f"after {args.warmup} untimed; peak MB = {memory}, increment MB = over the learner once built"
    )
    print("| variant | it/s | s/it | peak MB | increment MB | trainable parameters |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {1 / r.s_per_iter:.2f} | {r.s_per_iter:.3f} | {r.peak_mb:.0f} | {r.increment_mb:.1f} | "
            f"{r.trainable:,} |"
        )
    lora = results["lora"]
    for name in ("copy", "subset"):
        r = results[name]
        print(
            f"{name} / lora: s/it {r.s_per_iter / lora.s_per_iter:.2f}x, increment MB "
            f"{r.increment_mb / lora.increment_mb:.2f}x, peak MB {r.peak_mb / lora.peak_mb:.2f}x"
        )
    print(f"\n{_load()}")


if __name__ == "__main__":
    main()
