"""OutsourcedLearner: a diffusion sampler trained in the noise space of a generator (arXiv:2502.06999).

    z ~ sampler (workloads/samplers, sigma^2 = 1, T steps)  ->  x = f(z)
    trained on R(z) = N(z; 0, I) r(f(z))^beta (noise_target.py): TB with sigma^2 = 1 is RTB against the Brownian
    reference process, whose terminal marginal is N(0, I)

The problem (f, r and the data-space evaluation) is the config's generator: flow2d (grid.py: a RealNVP on the 9-mode
grid), vae_digits, ddim_digits or vae_color_dsprites (digits.py: a VAE decoder or the DDIM ODE, r a classifier).
Its models are fitted on first use (deterministic in their seeds) or given as `generator_state`; they never train
afterwards. Evaluation adds to the
sampler's own metrics (log Z estimates against log Z_MC, W2 in z) the problem's, of f(z) against f of the exact
noise-space posterior samples (the M reference draws resampled by r^beta), and log Z_MC with its effective sample size.

A plain class (no Ray): `train`, `evaluate`, `state_dict` as the family layout asks (docs/adding-a-family.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.digits import ImageProblem, trained_image_state
from workloads.outsourced.grid import GridProblem, fitted_flow_state
from workloads.outsourced.noise_target import NoiseSpaceTarget
from workloads.samplers.learner import EXACT_SAMPLES_SEED_OFFSET, SamplerLearner
from workloads.samplers.replay import TerminalBatch

PROBLEMS = {
    "flow2d": (GridProblem, fitted_flow_state),
    "vae_digits": (ImageProblem, trained_image_state),
    "ddim_digits": (ImageProblem, trained_image_state),
    "vae_color_dsprites": (ImageProblem, trained_image_state),
}
"""generator -> (the problem class, the function that fits its models' state)."""


@dataclass
class OutsourcedEvaluation:
    metrics: dict[str, float]
    samples: np.ndarray
    """[N, d] noise-space samples z of the sampler."""
    figures: dict[str, Figure]
    """'noise_samples' (2-d: z over the contours of log R; else 'noise_marginals'), and the problem's."""
    files: dict[str, bytes] = field(default_factory=dict)
    """The problem's (flow2d: 'mode_masses.json'; vae_digits: 'images.npz')."""


def generator_state(config: OutsourcedConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The fitted models of the config's problem (deterministic in their seeds)."""
    return PROBLEMS[config.generator][1](config, device)


def noise_space_problem(
    config: OutsourcedConfig, state: dict[str, Any] | None, device: torch.device | str = "cpu"
) -> tuple[GridProblem | ImageProblem, NoiseSpaceTarget]:
    """(the problem: generator, reward, data-space evaluation; its noise-space target) from a fitted generator
    state (None: fitted here). The learner and a replay-buffer actor's local search build the same pair."""
    state = state if state is not None else generator_state(config, device)
    expected = config.latent_shape()
    if list(state.get("latent_shape", expected)) != expected:
        raise ValueError(
            f"generator_state: its generator has latent shape {list(state['latent_shape'])}, the config's "
            f"{config.generator} has {expected} (vae.latent_channels, vae.image_size, vae.hidden_channels; "
            "prior.image_size): load a generator trained with this config, or let the learner train one"
        )
    problem = PROBLEMS[config.generator][0](config, state, torch.device(device))
    target = NoiseSpaceTarget(
        problem.generator,
        problem.log_r,
        config.beta,
        config.reference_samples,
        reference_seed=config.generator_seed,
        beta_start=config.beta_start,
        anneal_iters=config.beta_anneal_iters,
    )
    return problem, target


@torch.no_grad()
def evaluate_noise(
    problem: GridProblem | ImageProblem, target: NoiseSpaceTarget, z: Tensor, seed: int, title: str
) -> tuple[dict[str, float], dict[str, Figure], dict[str, bytes]]:
    """The problem's data-space evaluation of noise samples z [N, d] (a sampler's, or MCMC chains'), against as
    many exact posterior samples: the same for every method of a trial seed (seed + EXACT_SAMPLES_SEED_OFFSET)."""
    x = target.decode(z.to(target.device))
    exact_x = target.decode(target.sample(len(z), seed=seed + EXACT_SAMPLES_SEED_OFFSET))
    if isinstance(problem, GridProblem):  # its mode masses are exact from the weighted reference draws
        return problem.evaluate(x, exact_x, title, problem.exact_mode_masses(target))
    return problem.evaluate(x, exact_x, title)


def reference_metrics(target: NoiseSpaceTarget) -> dict[str, float]:
    """log Z_MC and the effective sample size of the M reference draws behind the exact answers."""
    return {"eval/log_z_mc": target.log_z, "eval/reference_ess": target.effective_sample_size()}


class NoiseReward:
    """r(f(z)) as a reward of z, for a pool of reward actors (actors/reward.py: `log_r(x, targets)`, the targets
    unused: the config fixes r's class)."""

    def __init__(self, config: OutsourcedConfig, generator_state: dict | None):
        self.problem, self.target = noise_space_problem(config, generator_state)

    def log_r(self, z: Tensor, targets: Tensor) -> Tensor:
        return self.problem.log_r(self.target.decode(z))


class OutsourcedLearner:
    def __init__(
        self,
        config: OutsourcedConfig,
        seed: int,
        device: str = "cpu",
        generator_state: dict | None = None,
        reward_pool: Any = None,
    ):
        """reward_pool: a reward over z (`log_r(z, targets)`, e.g. actors.reward.PooledReward of `NoiseReward`s)
        that evaluates r(f(z)) wherever no gradient is needed: the sampler's terminal states, replayed states
        re-scored, evaluation and the reference draws."""
        self.config, self.seed, self.device = config, seed, torch.device(device)
        self.problem, self.target = noise_space_problem(config, generator_state, self.device)
        if reward_pool is not None:
            self.target.value_pool = lambda z: reward_pool.log_r(z, torch.zeros(len(z), dtype=torch.long))
        self.sampler = SamplerLearner(config.sampler_config(), seed, device, target=self.target)
        self.reward_evaluations = 0
        """r(f(z)) evaluated in training: a batch per forward or reference iteration, and per replay iteration
        when beta anneals (replayed states are re-scored then); evaluation's are not counted."""

    @property
    def step(self) -> int:
        return self.sampler.step

    @property
    def generator_fit(self) -> dict[str, float]:
        return self.problem.fit

    def generator_state_dict(self) -> dict[str, Any]:
        """What another learner with the same generator config takes as `generator_state` (no refit)."""
        return self.problem.state_dict()

    def train(self, num_iters: int, replay: TerminalBatch | None = None) -> tuple[dict[str, float], TerminalBatch]:
        """`num_iters` iterations of the noise-space sampler (replay: z states with their log R)."""
        metrics, terminals = self.sampler.train(num_iters, replay)
        scored = [kind != "replay" or self.target.anneals for kind in self.sampler.last_kinds]
        self.reward_evaluations += sum(scored) * self.sampler.config.batch_size
        return metrics, terminals

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> OutsourcedEvaluation:
        n = num_samples or self.config.eval_samples
        inner = self.sampler.evaluate(n)
        metrics, figures, files = self.evaluate_noise(torch.as_tensor(inner.samples), f"step {self.step}")
        metrics = inner.metrics | metrics | reference_metrics(self.target)
        metrics["eval/reward_evaluations"] = float(self.reward_evaluations)
        noise_figures = {f"noise_{name}": figure for name, figure in inner.figures.items()}
        return OutsourcedEvaluation(metrics, inner.samples, noise_figures | figures, files)

    def evaluate_noise(self, z: Tensor, title: str) -> tuple[dict[str, float], dict[str, Figure], dict[str, bytes]]:
        """The problem's data-space evaluation of any noise samples z [N, d] (`evaluate_noise` below)."""
        return evaluate_noise(self.problem, self.target, z, self.seed, title)

    def replay_seeds(self) -> None:
        """None: a replay buffer fills from training."""

    def state_dict(self) -> dict:
        """The sampler's training state and the generator (restoring needs no refit)."""
        return {
            "sampler": self.sampler.state_dict(),
            "generator": self.generator_state_dict(),
            "reward_evaluations": self.reward_evaluations,
        }

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.reward_evaluations = state["reward_evaluations"]

    @classmethod
    def from_state_dict(cls, state: dict, config: OutsourcedConfig, device: str = "cpu") -> OutsourcedLearner:
        learner = cls(config, seed=state["sampler"]["seed"], device=device, generator_state=state["generator"])
        learner.load_state_dict(state)
        return learner
