"""The speed benchmark's measurements, on a shrunk model: one iteration at a time in process, and the
learner's sub-chunks, idle gaps and local-search rounds read back from Ray's task timeline."""

from __future__ import annotations

import math

from orchestrator.families.samplers.benchmark import SWEEP, in_process, ray_trial
from orchestrator.spec import load_sweep

SMALL = [
    "config.batch_size=16",
    "config.num_steps=10",
    "config.replay.local_search_every=5",
    "config.replay.local_search_batch=16",
    "config.replay.mala_steps=10",
    "config.replay.mala_burn_in=5",
]


def test_in_process_times_forward_and_backward_iterations():
    result = in_process(load_sweep(SWEEP, SMALL), "Manywell", iters=4, warmup=1, device="cpu")
    assert len(result.forward_s) == len(result.backward_s) == 2  # steps 1..4 alternate, odd ones replay
    assert all(s > 0 for s in result.forward_s + result.backward_s) and result.local_search_s > 0
    assert result.median_s > 0


def test_ray_trial_path_reads_the_learner_timeline(ray_cluster):
    replayed = ray_trial(load_sweep(SWEEP, SMALL), "25GMM", iters=15, replay=True)
    assert replayed.sub_chunk_iters == 5 and len(replayed.busy_s) == 3  # one train task per sub-chunk
    assert len(replayed.idle_before_s) == 2 and len(replayed.local_search_s) == 3  # a round per sub-chunk
    assert all(s > 0 for s in replayed.s_per_iter) and 0 <= replayed.idle_share < 1
    plain = ray_trial(load_sweep(SWEEP, SMALL), "25GMM", iters=5, replay=False)
    assert plain.sub_chunk_iters == 5 and len(plain.busy_s) == 1 and plain.local_search_s == []
    assert plain.idle_before_s == [] and math.isclose(plain.idle_share, 0.0)
