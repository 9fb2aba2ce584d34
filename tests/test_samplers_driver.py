"""The samplers driver on a real local Ray: local search runs on the replay-buffer actor while the
learner trains, and the learner reports how stale the replay batches were. Slow (~30 s with Ray's
start and two actor processes): `pytest -m slow tests/test_samplers_driver.py`."""

import math

import pytest

from tests.conftest import family_driver, one_report

REPLAY = {"enabled": True, "local_search_every": 10, "local_search_batch": 32, "mala_steps": 10, "mala_burn_in": 5}
CONFIG = {
    "num_steps": 5,
    "batch_size": 16,
    "hidden_dim": 16,
    "time_embedding_dim": 8,
    "eval_samples": 100,
    "eval_backward_trajectories": 2,
    "total_iters": 40,
    "eval_every": 40,
    "replay": REPLAY,
}


@pytest.mark.slow
def test_one_report_with_asynchronous_local_search_and_staleness(ray_cluster):
    """Sub-chunks [0, 10), [10, 20), [20, 30), [30, 40); round k starts at step 10 (k + 1) while the
    learner trains sub-chunk k + 1, and its states first serve sub-chunk k + 2. Sub-chunk 2 trains on
    round 0's states at odd steps 21..29 (staleness 25 - 10 = 15); sub-chunk 3 on rounds 0 and 1
    (staleness 35 - 10 = 25 or 35 - 20 = 15). The reported mean over those two sub-chunks is in [15, 20]."""
    driver = family_driver("staleness", "samplers", CONFIG, "eval/delta_log_z_rw")
    metrics, artifacts = one_report(driver)
    assert driver.step == 40 and driver.finished
    assert 15.0 <= metrics["train/replay_staleness_iters"] <= 20.0, metrics["train/replay_staleness_iters"]
    assert 0.0 < metrics["train/mala_acceptance"] <= 1.0
    assert all(math.isfinite(metrics[key]) for key in ("eval/eubo", "eval/w1", "eval/exact_log_likelihood"))
    assert set(artifacts) == {"samples.parquet", "samples.png"}
