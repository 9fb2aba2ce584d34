"""Each family's trial, at a small size and a fixed seed, gives the metrics recorded before the layout
change (tests/golden/behaviour.json): moving code between packages must not move a number.

Every trial runs through its family's driver on a real local Ray, as `orchestrator run` runs it, for its whole
budget. Timing metrics (seconds, backpressure) are left out. To record anew after a change that is meant to
change the figures: `python -m tests.test_behaviour_unchanged --record [NAME ...]`, and say why in the commit.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from orchestrator.trial import stop_actors
from tests.conftest import family_driver
from workloads.rtb.config import SMOKE_MODEL, SMOKE_RUN

GOLDEN = Path(__file__).parent / "golden" / "behaviour.json"
TIMING = ("_s", "backpressure_s", "epoch_s")

SAMPLER_CONFIG = {"num_steps": 5, "batch_size": 16, "hidden_dim": 16, "time_embedding_dim": 8, "eval_samples": 100,
                  "eval_backward_trajectories": 2, "total_iters": 20, "eval_every": 20}  # fmt: skip
SAMPLER_REPLAY = {"enabled": True, "local_search_every": 10, "local_search_batch": 32, "mala_steps": 10,
                  "mala_burn_in": 5}  # fmt: skip
SAMPLER_RESOURCES = {"learner": {"cpus": 1}, "workers": {"replay_buffer": {"cpus": 0.5}}}


def _samplers(**config) -> dict:
    return {"workload": "samplers", "config": {**SAMPLER_CONFIG, **config}, "resources": SAMPLER_RESOURCES}


def _torsional(energy_actors: int, **config) -> dict:
    workers = {"energy": {"count": energy_actors, "cpus": 0.5 / energy_actors}, "replay_buffer": {"cpus": 0.25}}
    return {"workload": "torsional", "smoke": True, "config": config,
            "resources": {"learner": {"cpus": 1}, "workers": workers}}  # fmt: skip


RUNS = {
    "samplers-tb-replay": _samplers(total_iters=40, replay=SAMPLER_REPLAY),
    "samplers-subtb-lp": _samplers(loss="subtb", langevin=True, target="manywell", sigma2=1.0),
    "samplers-fl_subtb": _samplers(loss="fl_subtb", langevin=True),
    "samplers-vargrad": _samplers(loss="vargrad"),
    "torsional-vargrad": _torsional(2),
    "torsional-tb": _torsional(1, loss="tb"),
    "sed": {
        "workload": "sed",
        "smoke": True,
        "config": {"dataset": "digits", "architecture": "mlp", "resolution": 8},
        "resources": {"learner": {"cpus": 0.5}, "workers": {"ensemble_member": {"count": 2, "cpus": 0.5}}},
    },
    "rtb-replay": {
        "workload": "rtb",
        "config": {"toy2d": SMOKE_MODEL | SMOKE_RUN | {"batch_size": 32, "replay": {"enabled": True, "draw_every": 5}}},
        "resources": {"learner": {"cpus": 1}, "workers": {"replay_buffer": {"cpus": 0.5}}},
    },
    "wcst": {
        "workload": "wcst",
        "smoke": True,
        "config": {"architecture": "mlp"},
        "resources": {"learner": {"cpus": 1}},
    },
}
"""Trial name -> its family, config (on top of the family's smoke config where `smoke`) and resources."""


def build_driver(name: str, trial_id: str, run: dict | None = None):
    """The trial driver of `RUNS[name]`, or of `run` in the same form (small, fixed seed 7), its actors started on the
    running Ray."""
    run = run or RUNS[name]
    return family_driver(name, run["workload"], run.get("config", {}), "train/loss", resources=run["resources"],
                         seed=7, smoke=bool(run.get("smoke")), trial_id=trial_id)  # fmt: skip


def run_family(name: str) -> dict[str, float]:
    """The trial's metrics at every report, {'<step>/<metric>': value}, timing left out."""
    driver = build_driver(name, f"{name}_00000")
    found: dict[str, float] = {}
    try:
        while not driver.finished:
            metrics, _ = driver.advance()
            for key, value in metrics.items():
                if not key.endswith(TIMING) and isinstance(value, (int, float)):
                    found[f"{driver.step}/{key}"] = float(value)
    finally:
        stop_actors(driver)
    return found


@pytest.mark.parametrize("name", list(RUNS))
def test_metrics_as_recorded(ray_cluster, name):
    recorded = json.loads(GOLDEN.read_text())[name]
    found = run_family(name)
    assert sorted(found) == sorted(recorded), set(found) ^ set(recorded)
    wrong = {
        k: (found[k], v)
        for k, v in recorded.items()
        if not (math.isclose(found[k], v, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(v) and math.isnan(found[k])))
    }
    assert not wrong, wrong


if __name__ == "__main__" and sys.argv[1:2] == ["--record"]:
    import os
    import tempfile

    import ray

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    names = sys.argv[2:] or list(RUNS)
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    for name in names:
        recorded[name] = run_family(name)
        print(name, len(recorded[name]), "metrics", flush=True)
    GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
