"""OutsourcedLearner: a diffusion sampler trained in the noise space of a generator (arXiv:2502.06999), on the 2-d
case (toy.py): f a RealNVP fitted to the 9-mode grid, r keeping 4 of its modes.

    z ~ sampler (workloads/samplers, sigma^2 = 1, T steps)  ->  x = f(z)
    trained on R(z) = N(z; 0, I) r(f(z))^beta (noise_target.py): TB with sigma^2 = 1 is RTB against the Brownian
    reference process, whose terminal marginal is N(0, I)

The generator is fitted on first use (deterministic in flow.seed) or given as `generator_state`; it never trains
afterwards. Evaluation adds to the sampler's own metrics (log Z estimates against log Z_MC, W2 in z) the data-space
ones against the exact posterior of the fitted flow (its M reference draws resampled by r^beta):

    eval/tv_to_exact        TV between the mode masses of f(z) and of the exact posterior samples
    eval/tv_to_target       the same against N4, the posterior of the true data density
    eval/w2_data            W2 between f(z) and exact posterior samples (N of each)
    eval/mean_log_r         mean log r(f(z)), beside eval/exact_mean_log_r

A plain class (no Ray): `train`, `evaluate`, `state_dict` as the family layout asks (docs/adding-a-family.md).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.flow import RealNVP, fit_flow
from workloads.outsourced.noise_target import NoiseSpaceTarget
from workloads.outsourced.plots import data_space_samples
from workloads.outsourced.toy import GridToy
from workloads.rtb.metrics import mode_masses, total_variation
from workloads.rtb.plots import mode_mass_bars
from workloads.samplers.learner import EXACT_SAMPLES_SEED_OFFSET, SamplerLearner
from workloads.samplers.metrics import w2
from workloads.samplers.replay import TerminalBatch

FLOW_DATA_STRIDE = 1_000_003
"""The flow's data of fitting step s have seed flow.seed * this + s: data of different flow seeds never overlap."""


@dataclass
class OutsourcedEvaluation:
    metrics: dict[str, float]
    samples: np.ndarray
    """[N, d] noise-space samples z of the sampler."""
    figures: dict[str, Figure]
    """'noise_samples' (z over the contours of log R), 'data_samples' (f(z) over exact ones), 'mode_masses'."""
    files: dict[str, bytes] = field(default_factory=dict)
    """'mode_masses.json': the sampler's, the exact posterior's and N4's masses on the 9 means."""


def fitted_flow_state(config: OutsourcedConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """{'flow': state dict, 'fit': {'nll', 'fit_s'}} of the flow fitted to the grid's data (deterministic)."""
    flow, toy = new_flow(config, device), GridToy().to(device)
    data_seed = config.flow.seed * FLOW_DATA_STRIDE
    fc = config.flow
    fit = fit_flow(flow, lambda n, s: toy.sample_data(n, seed=data_seed + s), fc.fit_iters, fc.batch_size, fc.lr)
    return {"flow": flow.state_dict(), "fit": fit}


def new_flow(config: OutsourcedConfig, device: torch.device | str) -> RealNVP:
    """The generator's architecture, seeded without touching the global RNG (the identity map at init)."""
    fc = config.flow
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fc.seed)
        flow = RealNVP(2, fc.num_couplings, fc.hidden_dim, output_scale=fc.output_scale)
    return flow.to(device)


class OutsourcedLearner:
    def __init__(self, config: OutsourcedConfig, seed: int, device: str = "cpu", generator_state: dict | None = None):
        self.config, self.seed, self.device = config, seed, torch.device(device)
        self.toy = GridToy().to(self.device)
        state = generator_state if generator_state is not None else fitted_flow_state(config, self.device)
        self.flow = new_flow(config, self.device)
        self.flow.load_state_dict(state["flow"])
        self.generator_fit = dict(state["fit"])
        self.target = NoiseSpaceTarget(
            self.flow, self.toy.log_r, config.beta, config.reference_samples, reference_seed=config.flow.seed
        )
        self.sampler = SamplerLearner(config.sampler_config(), seed, device, target=self.target)

    @property
    def step(self) -> int:
        return self.sampler.step

    def generator_state_dict(self) -> dict[str, Any]:
        """What another learner with the same flow config takes as `generator_state` (no refit)."""
        return copy.deepcopy({"flow": self.flow.state_dict(), "fit": self.generator_fit})

    def train(self, num_iters: int, replay: TerminalBatch | None = None) -> tuple[dict[str, float], TerminalBatch]:
        """`num_iters` iterations of the noise-space sampler (replay: z states with their log R)."""
        return self.sampler.train(num_iters, replay)

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> OutsourcedEvaluation:
        n = num_samples or self.config.eval_samples
        inner = self.sampler.evaluate(n)
        toy = self.toy
        x = self.flow(torch.as_tensor(inner.samples, device=self.device))  # [N, 2]
        # the exact z of the sampler's own evaluation (same seed), pushed through f
        exact_x = self.flow(self.target.sample(n, seed=self.seed + EXACT_SAMPLES_SEED_OFFSET))  # [N, 2]
        masses = {
            "sampler": mode_masses(toy.mode_of(x), toy.num_modes),
            "exact posterior (fitted flow)": mode_masses(toy.mode_of(exact_x), toy.num_modes),
            "N4": toy.target_mode_masses.double(),
        }
        metrics = inner.metrics | {
            "eval/tv_to_exact": total_variation(masses["sampler"], masses["exact posterior (fitted flow)"]),
            "eval/tv_to_target": total_variation(masses["sampler"], masses["N4"]),
            "eval/w2_data": w2(x, exact_x),
            "eval/mean_log_r": toy.log_r(x).double().mean().item(),
            "eval/exact_mean_log_r": toy.log_r(exact_x).double().mean().item(),
            "eval/exact_tv_to_target": total_variation(masses["exact posterior (fitted flow)"], masses["N4"]),
            "eval/log_z_mc": self.target.log_z,
            "eval/reference_ess": self.target.effective_sample_size(),
            "eval/generator_nll": self.generator_fit["nll"],
        }
        title = f"step {self.step}: TV {metrics['eval/tv_to_exact']:.3f}"
        bars = {label: m.cpu().numpy() for label, m in masses.items()}
        means = toy.means.cpu().numpy()
        figures = {
            "noise_samples": inner.figures["samples"],
            "data_samples": data_space_samples(x.cpu().numpy(), exact_x.cpu().numpy(), means, title),
            "mode_masses": mode_mass_bars(bars, means, title),
        }
        mode_file = {"means": means.tolist()} | {label: m.tolist() for label, m in bars.items()}
        return OutsourcedEvaluation(
            metrics, inner.samples, figures, {"mode_masses.json": json.dumps(mode_file).encode()}
        )

    def replay_seeds(self) -> None:
        """None: a replay buffer fills from training."""

    def state_dict(self) -> dict:
        """The sampler's training state and the generator (restoring needs no refit)."""
        return {"sampler": self.sampler.state_dict(), "generator": self.generator_state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.flow.load_state_dict(state["generator"]["flow"])
        self.generator_fit = dict(state["generator"]["fit"])
        self.sampler.load_state_dict(state["sampler"])

    @classmethod
    def from_state_dict(cls, state: dict, config: OutsourcedConfig, device: str = "cpu") -> OutsourcedLearner:
        learner = cls(config, seed=state["sampler"]["seed"], device=device, generator_state=state["generator"])
        learner.load_state_dict(state)
        return learner
