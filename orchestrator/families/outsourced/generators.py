"""Fitted generators, shared: each distinct generator of a sweep (keyed by `OutsourcedConfig.generator_key()`: the
flow, the VAE or the DDPM with its seed, and the digits classifier that comes with them) is fitted once, before
the trials start, and kept in the sweep's MLflow store (`orchestrator/model_cache.py`) as the LoggedModel
`outsourced-generator`; every trial, of this sweep and of later ones, loads it from there.

Generator fields sampled from a continuous domain cannot be listed before the trials start: such trials fit their
own generator (the learner fits it on construction) and do not cache it.
"""

from __future__ import annotations

import io

import ray
import torch

from orchestrator import model_cache
from orchestrator.spec import SweepSpec
from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.learner import NoiseReward, OutsourcedLearner, generator_state, noise_space_problem
from workloads.outsourced.mcmc_learner import MCMCLearner
from workloads.outsourced.noise_target import NoiseSpaceTarget

GENERATOR_KIND = "outsourced-generator"
GENERATOR_FILE = "generator.pt"
"""The cached model's one file: torch.save of `generator_state(config)`."""
GENERATOR_PATHS = ("generator", "flow.", "vae.", "color_dsprites_vae.", "vae_seed", "prior.", "prior_seed")
"""Sweep keys (dotted config paths, or their prefixes) that change the fitted generator."""


def cached_generator(tracking_uri: str | None, config: OutsourcedConfig) -> model_cache.CachedModel | None:
    return None if tracking_uri is None else model_cache.find(tracking_uri, GENERATOR_KIND, config.generator_key())


def cached_generator_learner(
    config: OutsourcedConfig,
    seed: int,
    device: str = "cpu",
    tracking_uri: str | None = None,
    generator_model_id: str | None = None,
    **pools: object,
) -> OutsourcedLearner | MCMCLearner:
    """The trial's learner (the sampler's, or the MCMC chains' with method: mcmc), its generator a cached model of
    the sweep's store (None: it fits its own). Built from the model's id, so a restarted actor fetches the
    generator again. `pools`: reward_pool (the sampler's) or chains (MCMC's)."""
    state = cached_state(tracking_uri, generator_model_id)
    learner_class = MCMCLearner if config.method == "mcmc" else OutsourcedLearner
    return learner_class(config, seed=seed, device=device, generator_state=state, **pools)


def cached_noise_target(
    config: OutsourcedConfig, tracking_uri: str | None, generator_model_id: str | None
) -> NoiseSpaceTarget:
    """The trial's noise-space target on the CPU, for the replay-buffer actor's local search (a `ReplayBufferRole`
    target builder: functools.partial of this is small and picklable)."""
    return noise_space_problem(config, cached_state(tracking_uri, generator_model_id))[1]


def cached_noise_reward(
    config: OutsourcedConfig, tracking_uri: str | None, generator_model_id: str | None
) -> NoiseReward:
    """r(f(z)) on the CPU, for a reward actor (a `RewardWorker` builder, as small as `cached_noise_target`)."""
    return NoiseReward(config, cached_state(tracking_uri, generator_model_id))


def cached_state(tracking_uri: str | None, generator_model_id: str | None) -> dict | None:
    """The generator state of a cached model; None without one."""
    if generator_model_id is None:
        return None
    data = model_cache.load_files(tracking_uri, generator_model_id)[GENERATOR_FILE]
    return torch.load(io.BytesIO(data), weights_only=True)


def sweep_generators(spec: SweepSpec) -> list[OutsourcedConfig]:
    """One config per distinct generator the sweep's trials can have (none when a generator field is continuous)."""
    continuous = [key for key, domain in spec.search_space.items() if domain.kind not in ("choice", "grid")]
    if any(key == path or key.startswith(path) for key in continuous for path in GENERATOR_PATHS):
        return []
    by_key = {}
    for config in spec.discrete_configs():
        by_key.setdefault(model_cache.content_hash(GENERATOR_KIND, config.generator_key()), config)
    return list(by_key.values())


def _fit(config: OutsourcedConfig) -> bytes:
    """A Ray task: the generator state fitted on this worker's device, as bytes."""
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    buffer = io.BytesIO()
    torch.save(generator_state(config, device), buffer)
    return buffer.getvalue()


def prepare(spec: SweepSpec, tracking_uri: str) -> None:
    """Fits (on the learner's resources) and caches every generator of the sweep that the store lacks; with
    `generator_missing: fail`, stops instead, naming it."""
    learner = spec.resources.learner
    fit_task = ray.remote(_fit).options(num_cpus=learner.cpus, num_gpus=learner.gpus, resources=learner.custom or None)
    for config in sweep_generators(spec):

        def fit(config: OutsourcedConfig = config) -> tuple[dict[str, bytes], dict[str, float]]:
            data = ray.get(fit_task.remote(config))
            return {GENERATOR_FILE: data}, torch.load(io.BytesIO(data), weights_only=True)["fit"]

        model_cache.fit_if_missing(
            tracking_uri,
            GENERATOR_KIND,
            config.generator_key(),
            fit,
            label=f"generator {config.generator}",
            missing=config.generator_missing,
            missing_field="config.generator_missing",
        )
