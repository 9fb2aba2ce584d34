"""Trained priors, shared: each distinct prior of a sweep (the 2-D toy's fitted drift, keyed by
`RTBConfig.prior_key()`; the digits DDPM, keyed by its training fields and seed) is trained once, before the trials
start, and kept in the sweep's MLflow store (`orchestrator/model_cache.py`); every trial, of this sweep and of later
ones, loads it from there instead of training its own.

Prior fields sampled from a continuous domain cannot be listed before the trials start: such trials train their
own prior (the learner trains on first use) and do not cache it.
"""

from __future__ import annotations

import io
import time
from typing import Any

import ray
import torch

from orchestrator import model_cache
from orchestrator.errors import OrchestratorError
from orchestrator.families.rtb import REWARD_ROLE
from orchestrator.spec import SweepSpec
from workloads.diffusion.config import NOT_TRAINING_FIELDS, VAE_NOT_TRAINING_FIELDS
from workloads.inverse.image_posterior import ImageInverseLearner
from workloads.rtb.config import PRIOR_FIELDS
from workloads.rtb.image_learner import ImageRTBLearner, trained_prior_state
from workloads.rtb.learner import RTBLearner
from workloads.rtb.prior import fitted_prior_state
from workloads.rtb.trial_config import RTBTrialConfig

PRIOR_KINDS = {"toy2d": "rtb-toy-prior", "digits": "ddpm-prior", "latent": "latent-ddpm-prior"}
"""The cached model kind (the LoggedModel's name) of each prior: the toy's, a pixel DDPM's (digits and pixel inverse
problems), a VAE with the DDPM of its latents (latent inverse problems)."""
LEARNERS = {"toy2d": RTBLearner, "digits": ImageRTBLearner, "inverse": ImageInverseLearner}
"""The plain learner class of each task."""
PRIOR_FILE = "prior.pt"
"""The cached model's one file: torch.save of the prior state ({'key', 'policy', 'fit'} of the toy,
{'key', 'unet', 'fit'} of a DDPM)."""


def torch_bytes(state: dict) -> bytes:
    """torch.save of a state (tensors, numbers, strings) as bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def prior_from_bytes(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


def prior_kind_and_key(config: RTBTrialConfig) -> tuple[str, dict[str, Any]]:
    """(the model kind, the key) of the trial's prior: the fields that determine it, with their values. A pixel
    prior of an inverse problem is the digits task's kind and key when their DDPMs agree: one entry serves both."""
    if config.task == "toy2d":
        return PRIOR_KINDS["toy2d"], config.toy2d.prior_key()
    block = getattr(config, config.task)
    if config.task == "inverse" and block.prior_space == "latent":
        vae = block.vae.model_dump(mode="json", exclude=set(VAE_NOT_TRAINING_FIELDS))
        latent = block.latent_prior.model_dump(mode="json", exclude=set(NOT_TRAINING_FIELDS))
        return PRIOR_KINDS["latent"], {"vae": vae, "latent_prior": latent, "prior_seed": block.prior_seed}
    prior = block.prior.model_dump(mode="json", exclude=set(NOT_TRAINING_FIELDS))
    return PRIOR_KINDS["digits"], prior | {"prior_seed": block.prior_seed}


def prior_digest(config: RTBTrialConfig) -> str:
    return model_cache.content_hash(*prior_kind_and_key(config))


def cached_prior_learner(
    config: RTBTrialConfig,
    seed: int,
    device: str = "cpu",
    tracking_uri: str | None = None,
    prior_model_id: str | None = None,
    **learner_kwargs: Any,
) -> RTBLearner | ImageRTBLearner | ImageInverseLearner:
    """The trial's learner (of its task), its prior a cached model of the sweep's MLflow store (None: it trains its
    own). Built from the model's id, so a restarted actor fetches the prior again. `learner_kwargs`: the task's
    learner's own (digits: reward_pool)."""
    prior_state = None
    if prior_model_id is not None:
        prior_state = prior_from_bytes(model_cache.load_files(tracking_uri, prior_model_id)[PRIOR_FILE])
    learner_class = LEARNERS[config.task]
    return learner_class(config.learner_config, seed=seed, device=device, prior_state=prior_state, **learner_kwargs)


def cached_prior(tracking_uri: str | None, config: RTBTrialConfig) -> model_cache.CachedModel | None:
    return None if tracking_uri is None else model_cache.find(tracking_uri, *prior_kind_and_key(config))


def sweep_priors(spec: SweepSpec) -> list[RTBTrialConfig]:
    """One config per distinct prior the sweep's trials can have (none when a prior field is continuous)."""
    continuous = {key for key, domain in spec.search_space.items() if domain.kind not in ("choice", "grid")}
    prior_paths = {f"toy2d.{name}" for name in PRIOR_FIELDS} | {"task", "digits.prior_seed", "inverse.prior_seed"}
    prior_blocks = ("digits.prior.", "inverse.prior.", "inverse.vae.", "inverse.latent_prior.")
    if any(key in prior_paths or key.startswith(prior_blocks) for key in continuous):
        return []
    by_key = {}
    for config in spec.discrete_configs():
        by_key.setdefault(prior_digest(config), config)
    return list(by_key.values())


def _train(config: RTBTrialConfig) -> bytes:
    """A Ray task: the prior state of the trial's task trained on this worker's device, as bytes."""
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    start, digest = time.monotonic(), prior_digest(config)
    inverse = ImageInverseLearner(config.inverse, seed=0, device=device) if config.task == "inverse" else None
    totals = {"toy2d": config.toy2d.prior_iters, "digits": config.digits.prior.train_iters}
    total = inverse.prior_train_steps() if inverse else totals[config.task]

    def progress(iteration: int, loss: float) -> None:
        elapsed = time.monotonic() - start
        print(f"prior {digest}: iteration {iteration}/{total}, loss {loss:.3f}, {elapsed:.0f} s", flush=True)

    if config.task == "toy2d":
        return torch_bytes(fitted_prior_state(config.toy2d, device, progress))
    if config.task == "digits":
        return torch_bytes(trained_prior_state(config.digits, device, progress))
    return torch_bytes(inverse.trained_prior_state(progress))


REWARD_POOL_TASKS = ("digits",)
"""The tasks whose learner can evaluate r on reward actors (resources.workers.reward)."""


def check_reward_pool(spec: SweepSpec) -> None:
    """A reward pool (resources.workers.reward) only for tasks whose learner uses one."""
    if REWARD_ROLE not in spec.resources.workers:
        return
    tasks = sorted({config.task for config in spec.discrete_configs()} - set(REWARD_POOL_TASKS))
    if tasks:
        raise OrchestratorError(
            f"resources.workers.reward: sweep {spec.name} asks for reward actors, but its trials of task "
            f"{', '.join(tasks)} evaluate r on the learner (only {', '.join(REWARD_POOL_TASKS)} can use a pool of "
            "reward actors): remove resources.workers.reward, or run those tasks in a sweep of their own."
        )


def prepare(spec: SweepSpec, tracking_uri: str) -> None:
    """Trains (on the learner's resources) and caches every prior of the sweep that the store lacks; with
    `prior_missing: fail`, stops instead, naming the prior."""
    check_reward_pool(spec)
    learner = spec.resources.learner
    train_task = ray.remote(_train).options(
        num_cpus=learner.cpus, num_gpus=learner.gpus, resources=learner.custom or None
    )
    for config in sweep_priors(spec):
        kind, key = prior_kind_and_key(config)

        def fit(config: RTBTrialConfig = config) -> tuple[dict[str, bytes], dict[str, float]]:
            data = ray.get(train_task.remote(config))
            return {PRIOR_FILE: data}, prior_from_bytes(data)["fit"]

        model_cache.fit_if_missing(
            tracking_uri,
            kind,
            key,
            fit,
            label="prior",
            missing=config.prior_missing,
            missing_field="config.prior_missing",
        )
