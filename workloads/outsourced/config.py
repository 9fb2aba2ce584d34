"""Typed configuration of the outsourced workload (arXiv:2502.06999); defaults in one place.

The 2-d case: a RealNVP fitted to the 9-mode grid (toy.py), the noise-space posterior N(z) r(f(z))^beta, and the
diffusion sampler of workloads/samplers trained on it with sigma^2 = 1 (its reference process ends in N(0, I)).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workloads.samplers.config import SamplerConfig
from workloads.typed_config import StrictConfig


class FlowConfig(StrictConfig):
    """The generator of the 2-d case and its maximum-likelihood fit (deterministic in `seed`)."""

    num_couplings: int = Field(8, gt=0)
    hidden_dim: int = Field(64, gt=0)
    output_scale: float = Field(3.0, gt=0)
    """a of x = a v: the grid's spacing, so the couplings work at unit scale."""
    fit_iters: int = Field(3_000, ge=0)
    batch_size: int = Field(512, gt=0)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0


NOISE_SAMPLER = SamplerConfig(
    target="gmm25",  # unused: the learner passes its noise-space target
    sigma2=1.0,
    num_steps=50,
    exploration_factor=0.2,
    exploration_decay_fraction=0.5,
    log_variance_range=1.0,
)
"""The noise-space sampler's defaults: sigma^2 = 1 (the reference process is N(0, I) at t = 1), T = 50, TB with a
learned log Z, exploration 0.2 decaying to 0 at half of training, a learned step variance."""


class OutsourcedConfig(StrictConfig):
    """A diffusion sampler in the noise space of a generator, towards p_f(x) r(x)^beta."""

    generator: Literal["flow2d"] = "flow2d"
    """flow2d: RealNVP on the 9-mode grid, r keeping 4 of its modes (toy.py)."""
    flow: FlowConfig = FlowConfig()
    beta: float = Field(1.0, gt=0)
    reference_samples: int = Field(100_000, gt=1)
    """M: N(0, I) draws behind the exact answers (log Z_MC, resampled exact posterior samples)."""
    sampler: SamplerConfig = NOISE_SAMPLER
    """The noise-space sampler (workloads/samplers/config.py); its total_iters and eval_every are this config's."""
    total_iters: int = Field(6_000, gt=0)
    eval_every: int = Field(1_000, gt=0)
    eval_samples: int = Field(4_000, gt=1)
    """N: samples of each evaluation (mode masses, W2 in data space, the sampler's own metrics)."""

    def sampler_config(self) -> SamplerConfig:
        """`sampler` with this config's iteration budget and evaluation size."""
        return self.sampler.model_copy(
            update={"total_iters": self.total_iters, "eval_every": self.eval_every, "eval_samples": self.eval_samples}
        )

    def smoke(self) -> OutsourcedConfig:
        """The same, tiny: a barely fitted flow and a few iterations."""
        sampler = self.sampler.model_copy(update={"num_steps": 10, "batch_size": 64})
        flow = self.flow.model_copy(update={"fit_iters": 50})
        update = {"flow": flow, "sampler": sampler, "total_iters": 20, "eval_every": 10, "eval_samples": 200}
        return self.model_copy(update=update | {"reference_samples": 5_000})
