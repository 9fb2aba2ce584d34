"""The 2-d case of the outsourced sampler: f a RealNVP fitted to the 9-mode grid (toy.py), r keeping 4 of its modes.
f is invertible, so the data-space posterior of the fitted flow is known; evaluation compares f(z) with it:

    eval/tv_to_exact        TV between the mode masses of f(z) and the exact posterior's, the latter from all M
                            reference draws weighted by r^beta (not from N resampled ones: that would add the
                            histogram noise of N samples, ~0.015 in TV at N = 4,000, to the sampler's)
    eval/tv_to_target       the same against N4, the posterior of the true data density
    eval/w2_data            W2 between f(z) and exact posterior samples (N of each)
    eval/mean_log_r         mean log r(f(z)), beside eval/exact_mean_log_r
"""

from __future__ import annotations

import copy
import json
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.flow import RealNVP, fit_flow
from workloads.outsourced.noise_target import REFERENCE_CHUNK, NoiseSpaceTarget
from workloads.outsourced.plots import data_space_samples
from workloads.outsourced.toy import GridToy
from workloads.rtb.metrics import mode_masses, total_variation
from workloads.rtb.plots import mode_mass_bars
from workloads.samplers.metrics import w2

FLOW_DATA_STRIDE = 1_000_003
"""The flow's data of fitting step s have seed flow.seed * this + s: data of different flow seeds never overlap."""


def new_flow(config: OutsourcedConfig, device: torch.device | str) -> RealNVP:
    """The generator's architecture, seeded without touching the global RNG (the identity map at init)."""
    fc = config.flow
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fc.seed)
        flow = RealNVP(2, fc.num_couplings, fc.hidden_dim, output_scale=fc.output_scale)
    return flow.to(device)


def fitted_flow_state(config: OutsourcedConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """{'flow': state dict, 'fit': {'nll', 'fit_s'}} of the flow fitted to the grid's data (deterministic)."""
    flow, toy = new_flow(config, device), GridToy().to(device)
    data_seed = config.flow.seed * FLOW_DATA_STRIDE
    fc = config.flow
    fit = fit_flow(flow, lambda n, s: toy.sample_data(n, seed=data_seed + s), fc.fit_iters, fc.batch_size, fc.lr)
    return {"flow": flow.state_dict(), "fit": fit}


class GridProblem:
    """Generator, reward and data-space evaluation of the 2-d case (the learner's `problem`)."""

    def __init__(self, config: OutsourcedConfig, state: dict[str, Any], device: torch.device):
        self.toy = GridToy().to(device)
        self.generator = new_flow(config, device)
        self.generator.load_state_dict(state["flow"])
        self.fit = dict(state["fit"])
        self._exact_masses: Tensor | None = None

    def log_r(self, x: Tensor) -> Tensor:
        return self.toy.log_r(x)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({"flow": self.generator.state_dict(), "fit": self.fit})

    @torch.no_grad()
    def exact_mode_masses(self, target: NoiseSpaceTarget) -> Tensor:
        """[num_modes] float64: the self-normalized weights r(f(z_m))^beta of the M reference draws, summed by the
        mode their f(z_m) falls in (computed once per target)."""
        if self._exact_masses is None:
            z, log_w = target.reference()
            modes = torch.cat([self.toy.mode_of(target.decode(chunk)) for chunk in z.split(REFERENCE_CHUNK)])
            self._exact_masses = mode_masses(modes, self.toy.num_modes, torch.softmax(log_w.double(), 0))
        return self._exact_masses

    @torch.no_grad()
    def evaluate(
        self, x: Tensor, exact_x: Tensor, title: str, exact_masses: Tensor
    ) -> tuple[dict, dict[str, Figure], dict[str, bytes]]:
        """(metrics, figures, files) of samples x = f(z) [N, 2] against exact posterior samples exact_x [N, 2] and
        the exact posterior's mode masses (`exact_mode_masses`)."""
        toy = self.toy
        masses = {
            "sampler": mode_masses(toy.mode_of(x), toy.num_modes),
            "exact posterior (fitted flow)": exact_masses.to(x.device),
            "N4": toy.target_mode_masses.double(),
        }
        metrics = {
            "eval/tv_to_exact": total_variation(masses["sampler"], masses["exact posterior (fitted flow)"]),
            "eval/tv_to_target": total_variation(masses["sampler"], masses["N4"]),
            "eval/w2_data": w2(x, exact_x),
            "eval/mean_log_r": toy.log_r(x).double().mean().item(),
            "eval/exact_mean_log_r": toy.log_r(exact_x).double().mean().item(),
            "eval/exact_tv_to_target": total_variation(masses["exact posterior (fitted flow)"], masses["N4"]),
            "eval/generator_nll": self.fit["nll"],
        }
        title = f"{title}: TV {metrics['eval/tv_to_exact']:.3f}"
        bars = {label: m.cpu().numpy() for label, m in masses.items()}
        means = toy.means.cpu().numpy()
        figures = {
            "data_samples": data_space_samples(x.cpu().numpy(), exact_x.cpu().numpy(), means, title),
            "mode_masses": mode_mass_bars(bars, means, title),
        }
        mode_file = {"means": means.tolist()} | {label: m.tolist() for label, m in bars.items()}
        return metrics, figures, {"mode_masses.json": json.dumps(mode_file).encode()}
