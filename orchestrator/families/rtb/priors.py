"""Fitted priors, shared: each distinct prior key of a sweep (`RTBConfig.prior_key()`) is fitted once, before the
trials start, and kept in the sweep's MLflow store (`orchestrator/model_cache.py`); every trial, of this sweep and
of later ones, loads it from there instead of fitting its own.

Prior fields sampled from a continuous domain cannot be listed before the trials start: such trials fit their own
prior (the learner fits on first use) and do not cache it.
"""

from __future__ import annotations

import io
import time

import ray
import torch

from orchestrator import model_cache
from orchestrator.errors import OrchestratorError
from orchestrator.spec import SweepSpec
from workloads.rtb.config import PRIOR_FIELDS, RTBConfig
from workloads.rtb.learner import RTBLearner
from workloads.rtb.prior import fitted_prior_state

PRIOR_KIND = "rtb-toy-prior"
"""The cached model kind (the LoggedModel's name)."""
PRIOR_FILE = "prior.pt"
"""The cached model's one file: torch.save of the prior state {'key', 'policy', 'fit'}."""


def torch_bytes(state: dict) -> bytes:
    """torch.save of a state (tensors, numbers, strings) as bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def prior_from_bytes(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


class CachedPriorLearner(RTBLearner):
    """An RTBLearner whose prior is a cached model of the sweep's MLflow store (None: it fits its own). Built from
    the model's id, so a restarted actor fetches the prior again."""

    def __init__(
        self,
        config: RTBConfig,
        seed: int,
        device: str = "cpu",
        tracking_uri: str | None = None,
        prior_model_id: str | None = None,
    ):
        prior_state = None
        if prior_model_id is not None:
            prior_state = prior_from_bytes(model_cache.load_files(tracking_uri, prior_model_id)[PRIOR_FILE])
        super().__init__(config, seed=seed, device=device, prior_state=prior_state)


def cached_prior(tracking_uri: str | None, config: RTBConfig) -> model_cache.CachedModel | None:
    return None if tracking_uri is None else model_cache.find(tracking_uri, PRIOR_KIND, config.prior_key())


def sweep_priors(spec: SweepSpec) -> list[RTBConfig]:
    """One config per distinct prior key the sweep's trials can have (none when a prior field is continuous)."""
    continuous = {key for key, domain in spec.search_space.items() if domain.kind not in ("choice", "grid")}
    if continuous & set(PRIOR_FIELDS):
        return []
    by_key = {}
    for config in spec.discrete_configs():
        by_key.setdefault(model_cache.content_hash(PRIOR_KIND, config.prior_key()), config)
    return list(by_key.values())


def _fit(config: RTBConfig) -> bytes:
    """A Ray task: the prior state fitted on this worker's device, as bytes."""
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    start, digest = time.monotonic(), model_cache.content_hash(PRIOR_KIND, config.prior_key())

    def progress(iteration: int, nll_bound: float) -> None:
        elapsed = time.monotonic() - start
        print(f"prior {digest}: iteration {iteration}/{config.prior_iters}, nll bound {nll_bound:.3f}, {elapsed:.0f} s")

    return torch_bytes(fitted_prior_state(config, device, progress))


def prepare(spec: SweepSpec, tracking_uri: str) -> None:
    """Fits (on the learner's resources) and caches every prior of the sweep that the store lacks; with
    `prior_missing: fail`, stops instead, naming the prior."""
    learner = spec.resources.learner
    fit_task = ray.remote(_fit).options(num_cpus=learner.cpus, num_gpus=learner.gpus, resources=learner.custom or None)
    for config in sweep_priors(spec):
        key, digest = config.prior_key(), model_cache.content_hash(PRIOR_KIND, config.prior_key())
        found = model_cache.find(tracking_uri, PRIOR_KIND, key)
        if found is not None:
            print(f"prior {digest}: cached (MLflow model {found.model_id})", flush=True)
            continue
        if config.prior_missing == "fail":
            raise OrchestratorError(
                f"config.prior_missing: the MLflow store {tracking_uri} has no fitted prior {digest} "
                f"({', '.join(f'{k}={v}' for k, v in key.items())}), and prior_missing is 'fail'. Run the sweep once "
                "with prior_missing: fit (the default), or point --tracking-uri at the store that has it."
            )
        print(f"prior {digest}: not cached, fitting it ({config.prior_iters} iterations) before the trials", flush=True)
        data = ray.get(fit_task.remote(config))
        state = prior_from_bytes(data)
        stored = model_cache.store(tracking_uri, PRIOR_KIND, key, {PRIOR_FILE: data}, state["fit"])
        print(f"prior {digest}: fitted in {state['fit']['fit_s']:.0f} s, MLflow model {stored.model_id}", flush=True)
