"""The samplers' local search overlaps training in wall-clock time, not only in step numbers: in a real local Ray
run of the samplers driver, each local-search round on the replay-buffer actor runs while the learner actor trains
the next sub-chunk (see orchestrator/driver.py: LocalSearchReplayDriver).

The intervals are Ray's own record of when each actor method ran (`ray.timeline()`: the task events every worker
reports), so the roles' code is measured as it ships. The check can fail: a round the driver waited for before the
next training call, or a local search run inside the learner's `train`, overlaps no training at all (0 %)."""

from __future__ import annotations

import time

import ray

from orchestrator.trial import stop_actors
from tests.conftest import family_driver

SUB_CHUNKS = 4
# Sizes chosen so that, on 2 cores, a training sub-chunk (~0.3 s) outlasts a local-search round (~0.1 s): the round
# then lies inside the training call it overlaps, and Ray's scheduling (milliseconds) is small beside both.
REPLAY = {"enabled": True, "local_search_every": 100, "local_search_batch": 300, "mala_steps": 100, "mala_burn_in": 5}
CONFIG = {
    "num_steps": 10,
    "batch_size": 64,
    "hidden_dim": 32,
    "time_embedding_dim": 8,
    "eval_samples": 100,
    "eval_backward_trajectories": 2,
    "total_iters": SUB_CHUNKS * REPLAY["local_search_every"],
    "eval_every": SUB_CHUNKS * REPLAY["local_search_every"],
    "replay": REPLAY,
}
TRAIN, SEARCH = "task::Learner.train", "task::ReplayBufferRole.local_search"
MIN_OVERLAP = 0.5
"""Share of the local search's time during which the learner trained; asynchronous rounds give ~1, synchronous 0."""


def _intervals(since_s: float, timeout_s: float = 60.0) -> dict[str, list[tuple[float, float]]]:
    """{TRAIN: [(start, end)], SEARCH: [...]} in seconds, sorted, of the calls that started after `since_s`; waits
    for all of them, as workers report their task events about once a second."""
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, list[tuple[float, float]]] = {TRAIN: [], SEARCH: []}
        for event in ray.timeline():
            start = event.get("ts", 0) / 1e6  # Chrome trace format: microseconds since the epoch
            if event.get("cat") in found and start >= since_s:
                found[event["cat"]].append((start, start + event["dur"] / 1e6))
        if all(len(calls) == SUB_CHUNKS for calls in found.values()) or time.monotonic() > deadline:
            return {name: sorted(calls) for name, calls in found.items()}
        time.sleep(0.5)


def _overlap_s(interval: tuple[float, float], others: list[tuple[float, float]]) -> float:
    """Seconds of `interval` during which one of `others` (disjoint: one actor's calls) ran."""
    return sum(max(0.0, min(interval[1], end) - max(interval[0], start)) for start, end in others)


def test_local_search_rounds_run_while_the_learner_trains(ray_cluster):
    driver = family_driver("overlap", "samplers", CONFIG, "eval/delta_log_z_rw")
    started = time.time()
    try:
        metrics, _ = driver.advance()
        calls = _intervals(started)  # before the actors end: a killed worker's unreported events are lost
    finally:
        stop_actors(driver)
    assert driver.step == CONFIG["total_iters"] and metrics["train/mala_acceptance"] > 0
    trains, searches = calls[TRAIN], calls[SEARCH]
    # One training call per sub-chunk, each followed by a round on the buffer actor (none inside `train`).
    assert len(trains) == len(searches) == SUB_CHUNKS, calls
    # Every round but the last has a training call after it (the next sub-chunk) to overlap.
    overlapped = [_overlap_s(search, trains) for search in searches[:-1]]
    searching = [end - start for start, end in searches[:-1]]
    share = sum(overlapped) / sum(searching)
    detail = {"overlap_s": overlapped, "search_s": searching, "train_s": [end - start for start, end in trains]}
    assert share >= MIN_OVERLAP, detail
    assert all(seconds > 0 for seconds in overlapped), detail  # each round, not one long one
