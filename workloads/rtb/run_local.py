"""Trains one RTB config in one process, no Ray, no MLflow: a debugger-friendly reference of what the orchestrator
runs. The prior is fitted first (or loaded with --load-prior, e.g. one saved by --save-prior of an earlier run);
each evaluation prints one JSON line.

    OMP_NUM_THREADS=2 python -m workloads.rtb.run_local --iters 5000 --method rtb
    python -m workloads.rtb.run_local --method classifier_guidance --load-prior prior.pt
    python -m workloads.rtb.run_local --smoke-test
"""

from __future__ import annotations

import argparse
import json
import time
from typing import get_args

import torch
from pydantic import ValidationError

from workloads.rtb.config import RTBConfig
from workloads.rtb.learner import RTBLearner
from workloads.rtb.prior import fitted_prior_state

CLI_FIELDS = ("method", "total_iters", "eval_every", "batch_size", "loss", "beta", "prior_iters")
"""Config fields with an option of their own; --set reaches the others."""


def print_prior_progress(iteration: int, nll_bound: float) -> None:
    print(json.dumps({"prior_iteration": iteration, "nll_bound": round(nll_bound, 4)}), flush=True)


def run(config: RTBConfig, seed: int, prior_state: dict | None = None, log=print) -> list[dict[str, float]]:
    """Trains to total_iters, evaluating at step 0 and every eval_every; returns the evaluation rows."""
    t0 = time.time()
    if prior_state is None:
        prior_state = fitted_prior_state(config, progress=print_prior_progress)
    learner = RTBLearner(config, seed=seed, prior_state=prior_state)
    history, metrics = [], {}
    while True:
        ev = learner.evaluate()
        row = {"step": learner.step, "time_s": round(time.time() - t0, 1)} | metrics | ev.metrics
        history.append(row)
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
        if learner.step >= config.total_iters:
            return history
        metrics, _ = learner.train(min(config.eval_every, config.total_iters - learner.step))


def main() -> None:
    defaults = RTBConfig()
    field_values = lambda name: get_args(RTBConfig.model_fields[name].annotation)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", choices=field_values("method"), default=defaults.method)
    ap.add_argument("--iters", dest="total_iters", type=int, default=defaults.total_iters, help="posterior iterations")
    ap.add_argument("--eval-every", type=int, default=defaults.eval_every)
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--loss", choices=field_values("loss"), default=defaults.loss)
    ap.add_argument("--beta", type=float, default=defaults.beta)
    ap.add_argument("--prior-iters", type=int, default=defaults.prior_iters)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="any other config field, e.g. lr=3e-3")
    ap.add_argument("--load-prior", help="a prior saved by --save-prior (skips the fit)")
    ap.add_argument("--save-prior", help="save the fitted prior here (torch.save)")
    ap.add_argument("--smoke-test", action="store_true")
    ap.add_argument("--out", help="write the evaluation rows as JSON here")
    a = ap.parse_args()
    fields = {name: getattr(a, name) for name in CLI_FIELDS}
    fields |= {key: json.loads(value) for key, value in (item.split("=", 1) for item in a.set)}
    try:
        config = RTBConfig(**fields)
    except ValidationError as error:
        ap.error(str(error))
    if a.smoke_test:
        config = config.smoke()
    prior_state = torch.load(a.load_prior, weights_only=True) if a.load_prior else None
    if a.save_prior:
        prior_state = prior_state or fitted_prior_state(config, progress=print_prior_progress)
        torch.save(prior_state, a.save_prior)
        print(json.dumps({"prior_fit": prior_state["fit"]}))
    history = run(config, a.seed, prior_state)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(history, f, indent=1)


if __name__ == "__main__":
    main()
