"""Typed configuration of one trial of the rtb family: which task it runs (the 2-D toy, class-conditional image
posteriors, or image inverse problems), by which method, and each task's own settings in a block of its own;
defaults in one place (RTBConfig, ImagePosteriorConfig, ImageInverseConfig).

A sweep crosses tasks and methods through variants (`task: digits`, `method: dps`); the settings of a task live in
its block (`config.toy2d.*`, `config.digits.*`), so that one sweep file holds both and `--smoke` shrinks both.
`method` is set here only: a block's own `method` is overwritten by it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from workloads.inverse.config import ImageInverseConfig
from workloads.rtb.config import RTBConfig
from workloads.rtb.image_config import ImagePosteriorConfig
from workloads.typed_config import StrictConfig

TASK_METHODS = {
    "toy2d": ("rtb", "classifier_guidance", "dps", "rl", "rl_kl"),
    "digits": ("rtb", "classifier_guidance", "dps", "rl", "rl_kl"),
    "inverse": ("rtb", "dps"),
}
"""The methods each task's learner runs."""


class RTBTrialConfig(StrictConfig):
    """One trial: a task, a method, and the settings of every task (only the trial's task is used)."""

    task: Literal["toy2d", "digits", "inverse"] = "toy2d"
    """toy2d: the paper's 2-D toy (workloads/rtb/learner.py: a diffusion prior fitted to 25GMM, r keeping 9 modes);
    digits: class-conditional posteriors of a DDPM prior on scikit-learn's digits under a classifier trained here
    (workloads/rtb/image_learner.py); inverse: a posterior p(x | y) of a DDPM prior amortized over measurements
    y = A(x) + sigma_y n (workloads/inverse/image_posterior.py)."""
    method: Literal["rtb", "classifier_guidance", "dps", "rl", "rl_kl"] = "rtb"
    """rtb: relative trajectory balance; classifier_guidance and dps: training-free guidance of the prior; rl:
    reward-only REINFORCE (DDPO-like); rl_kl: REINFORCE with the centred KL advantage (DPOK-like)."""
    prior_missing: Literal["fit", "fail"] = "fit"
    """When the sweep's MLflow store has no trained prior of the trial's prior key: fit it before the trials start
    (and cache it for later sweeps), or fail before the sweep starts, naming the prior."""
    toy2d: RTBConfig = RTBConfig()
    """The 2-D toy's settings (used when task is toy2d)."""
    digits: ImagePosteriorConfig = ImagePosteriorConfig()
    """The image posteriors' settings (used when task is digits)."""
    inverse: ImageInverseConfig = ImageInverseConfig()
    """The inverse problem's settings (used when task is inverse): operator, pixel or latent prior, posterior."""

    @model_validator(mode="after")
    def _method_of_the_task(self) -> RTBTrialConfig:
        if self.method not in TASK_METHODS[self.task]:
            raise ValueError(f"method {self.method!r} is not one of task {self.task}'s: {TASK_METHODS[self.task]}")
        return self

    @property
    def learner_config(self) -> RTBConfig | ImagePosteriorConfig | ImageInverseConfig:
        """The trial's task block with the trial's method: what its learner takes."""
        block = getattr(self, self.task)
        return type(block).model_validate(block.model_dump() | {"method": self.method})

    @property
    def total_iters(self) -> int:
        return getattr(self, self.task).total_iters

    @property
    def eval_every(self) -> int:
        return getattr(self, self.task).eval_every

    def smoke(self) -> RTBTrialConfig:
        """Every task's block made tiny (a variant may switch the task after this)."""
        tiny = {"toy2d": self.toy2d.smoke(), "digits": self.digits.smoke(), "inverse": self.inverse.smoke()}
        return self.model_copy(update=tiny)
