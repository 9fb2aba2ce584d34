"""Seconds per training iteration of the diffusion samplers, and the pause local search costs the learner.

    python -m orchestrator.families.samplers.benchmark [--iters 20] [--ray-iters 300] [--targets 25GMM Manywell]
                                               [--device cpu|cuda]

TB + Expl. + LS (arXiv:2402.05098) at the paper's batch 300 and T = 100, with the settings of
sweeps/samplers_benchmark.yaml, on 25GMM and Manywell:

    in process      SamplerLearner.train(1, replay), one iteration at a time after `--warmup` forward
                    ones and one local-search round: the median over `--iters` iterations, alternately
                    forward (even steps: the SDE from x_0 = 0, with exploration) and backward (odd steps:
                    from local-search states), and both medians apart
    local search    one round (MALA, 200 steps on 300 states) of the replay-buffer role, in process
    Ray trial path  the trial's own driver (SamplerDriver: a learner actor and a replay-buffer actor that
                    runs local search) for `--ray-iters` iterations, in sub-chunks of 100 iterations, one
                    local-search round per sub-chunk; from Ray's task timeline, each sub-chunk's seconds
                    per iteration on the learner and the learner's idle gap before it: the serial pause a
                    round costs the learner (the reference stops training for each round). The same with
                    replay off (no local search, forward iterations only) for one sub-chunk.
                    Sub-chunks 0 and 1 train forward only: the buffer has no local-search states until
                    the first round ends; from sub-chunk 2 on, odd iterations replay them.

The default run takes 2-4 minutes on 2 cores (`--ray-iters 0`: under a minute); the Ray path needs
300 iterations to reach a sub-chunk with replayed iterations.
The reference figures are not measured by this command: they are the public reference code's
medians recorded in issue 4 for a machine of this class (2 cores). Compare on an otherwise idle
machine: the load average is printed, and the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch

from actors.replay_buffer import ReplayBufferRole
from orchestrator.families.samplers.driver import SamplerDriver
from orchestrator.placement import TrialContext
from orchestrator.spec import SweepSpec, load_sweep
from workloads.samplers.learner import SamplerLearner

SWEEP = Path(__file__).resolve().parents[3] / "sweeps" / "samplers_benchmark.yaml"
METHOD = "TB + Expl. + LS"
REFERENCE_S_PER_ITER = {"25GMM": 0.149, "Manywell": 0.180}
"""The public reference code's median seconds per training iteration of TB + Expl. + LS at batch 300 and
T = 100, as recorded in issue 4 (2 cores); not measured by this command."""
REFERENCE_PAUSE_S = "1-3 s"
"""The reference's serial pause per local-search round, as recorded in issue 4."""
TIMELINE_WAIT_S = 60.0
"""Ray's workers send their task events to the GCS about once a second, later under load: how long to wait."""


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class InProcess:
    forward_s: list[float] = field(default_factory=list)
    backward_s: list[float] = field(default_factory=list)
    local_search_s: float = float("nan")

    @property
    def median_s(self) -> float:
        return _median(self.forward_s + self.backward_s)


def in_process(spec: SweepSpec, target: str, iters: int, warmup: int, device: str) -> InProcess:
    """Time `iters` single training iterations of SamplerLearner, replaying one local-search round's states."""
    config = spec.resolved_config({"variants.method": METHOD, "variants.target": target})
    learner = SamplerLearner(config, seed=0, device=device)
    search = ReplayBufferRole(config.replay, config.target, seed=1)
    result = InProcess()
    for _ in range(warmup):  # the first iterations pay one-off costs (allocations, lazy initialisation)
        _, states = learner.train(1)
        search.add(states)
    start = time.perf_counter()
    search.local_search(learner.step)
    result.local_search_s = time.perf_counter() - start
    replay = search.sample(config.batch_size)  # train(1, replay) reads the first batch_size states
    for _ in range(iters):
        backward = learner.step % 2 == 1
        start = time.perf_counter()
        learner.train(1, replay)
        if device == "cuda":
            torch.cuda.synchronize()
        (result.backward_s if backward else result.forward_s).append(time.perf_counter() - start)
    return result


@dataclass
class RayTrial:
    sub_chunk_iters: int
    busy_s: list[float]
    """Learner time of each sub-chunk (its `train` task, from start to stored result)."""
    idle_before_s: list[float]
    """The learner's idle time between the end of sub-chunk k - 1 and the start of sub-chunk k (k >= 1)."""
    local_search_s: list[float]

    @property
    def s_per_iter(self) -> list[float]:
        return [busy / self.sub_chunk_iters for busy in self.busy_s]

    @property
    def idle_share(self) -> float:
        """Idle / (busy + idle) of the learner while it trains (evaluation excluded)."""
        idle = sum(self.idle_before_s)
        return idle / (idle + sum(self.busy_s))


def _task_spans(since_us: float, expected: dict[str, int]) -> dict[str, list[tuple[float, float]]]:
    """(start, end) in seconds of the tasks of each category ('task::Class.method') started after `since_us`,
    by start, from Ray's timeline once it shows at least `expected[category]` of each."""
    deadline = time.monotonic() + TIMELINE_WAIT_S
    while True:
        events = [e for e in ray.timeline() if e.get("ph") == "X" and e.get("ts", 0) >= since_us]
        spans = {
            category: sorted((e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6) for e in events if e.get("cat") == category)
            for category in expected
        }
        missing = {category: n for category, n in expected.items() if len(spans[category]) < n}
        if not missing:
            return spans
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Ray's task timeline lacks tasks after {TIMELINE_WAIT_S:.0f} s (expected {missing}): "
                "are task events turned off (RAY_task_events_report_interval_ms)?"
            )
        time.sleep(0.5)


def ray_trial(spec: SweepSpec, target: str, iters: int, replay: bool) -> RayTrial:
    """One evaluation period of `iters` iterations through the trial's driver, timed from Ray's timeline."""
    config = spec.resolved_config(
        {
            "variants.method": METHOD,
            "variants.target": target,
            "replay.enabled": replay,
            "total_iters": iters,
            "eval_every": iters,
            "eval_samples": 200,  # the evaluation is not timed
        }
    )
    sub_chunk = config.replay.local_search_every if replay else iters
    trial_id = f"benchmark-{target}-{'replay' if replay else 'plain'}"
    context = TrialContext(spec=spec, config=config, seed=0, trial_id=trial_id)
    start_us = time.time() * 1e6
    driver = SamplerDriver(context)
    driver.advance()
    train, search = "task::Learner.train", "task::ReplayBufferRole.local_search"
    spans = _task_spans(start_us, {train: iters // sub_chunk, search: iters // sub_chunk if replay else 0})
    for actor in driver.actors():  # only now: a killed worker's unsent task events are lost
        ray.kill(actor)
    trains = spans[train]
    return RayTrial(
        sub_chunk_iters=sub_chunk,
        busy_s=[end - begin for begin, end in trains],
        idle_before_s=[begin - previous_end for (_, previous_end), (begin, _) in zip(trains, trains[1:])],
        local_search_s=[end - begin for begin, end in spans[search]],
    )


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    # Before Ray starts: its workers inherit these. Ray starts them at niceness 15, and on a shared machine they
    # would lose the CPU to every other process while the in-process baseline runs at 0.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=list(REFERENCE_S_PER_ITER), help="variant names of the sweep")
    parser.add_argument("--iters", type=int, default=20, help="timed in-process iterations per target")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forward iterations before them")
    parser.add_argument(
        "--ray-iters",
        type=int,
        default=300,
        help="iterations through the Ray trial path per target, a multiple of 100 (0: skip it)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="the learner's device (cuda: the Ray learner gets one GPU)",
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    spec = load_sweep(SWEEP, ["resources.learner.gpus=1"] if args.device == "cuda" else [])
    sub_chunk = spec.config.replay.local_search_every
    if args.ray_iters % sub_chunk:
        parser.error(f"--ray-iters must be a multiple of {sub_chunk} (iterations between local-search rounds)")
    print(
        f"{METHOD}, batch {spec.config.batch_size}, T = {spec.config.num_steps}, device {args.device}, "
        f"torch threads 1; {_load()}"
    )
    print(
        "reference: the public reference code's median s/iteration recorded in issue 4 on a machine of this "
        "class, NOT measured in this run; speed-up = reference / ours"
    )

    for target in args.targets:
        local = in_process(spec, target, args.iters, args.warmup, args.device)
        reference = REFERENCE_S_PER_ITER.get(target)
        versus = f"reference {reference:.3f} s -> speed-up {reference / local.median_s:.2f}x" if reference else ""
        print(
            f"\n{target}  in process, {args.iters} iterations: median {local.median_s:.3f} s/iteration (forward "
            f"{_median(local.forward_s):.3f}, backward {_median(local.backward_s):.3f}); {versus}"
        )
        print(
            f"{target}  one local-search round in process: {local.local_search_s:.2f} s "
            f"(reference: a serial pause of {REFERENCE_PAUSE_S} per round, recorded in issue 4)"
        )

    if args.ray_iters:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        learner, buffer = spec.resources.learner, spec.resources.workers["replay_buffer"]
        print(
            f"\nRay trial path (learner {learner.cpus:g} CPU {learner.gpus:g} GPU, replay buffer {buffer.cpus:g} CPU)"
        )
        for target in args.targets:
            with_replay = ray_trial(spec, target, args.ray_iters, replay=True)
            plain = ray_trial(spec, target, sub_chunk, replay=False)
            reference = REFERENCE_S_PER_ITER.get(target)
            replayed = with_replay.s_per_iter[2:]  # sub-chunks that alternate forward and replayed iterations
            versus = (
                f"; reference {reference:.3f} s -> speed-up {reference / _median(replayed):.2f}x"
                if (reference and replayed)
                else ""
            )
            print(
                f"{target}  with replay + local search, s/iteration per sub-chunk of {sub_chunk}: "
                + ", ".join(f"{s:.3f}" for s in with_replay.s_per_iter)
                + versus
            )
            print(
                f"{target}  learner idle before each sub-chunk (the serial pause per round): "
                + (", ".join(f"{s * 1e3:.1f} ms" for s in with_replay.idle_before_s) or "-")
                + f"; idle share while training {with_replay.idle_share:.2%}"
            )
            print(
                f"{target}  local-search rounds on the buffer actor, beside the learner: "
                + ", ".join(f"{s:.2f} s" for s in with_replay.local_search_s)
            )
            print(f"{target}  without replay (forward only, no local search): {plain.s_per_iter[0]:.3f} s/iteration")
        ray.shutdown()
    print(f"\n{_load()}")


if __name__ == "__main__":
    main()
