"""The training-free baselines of RTB's 2-D toy: classifier guidance (CG, the reference's
`get_trajectory_fwd_classifier_guidance`) and diffusion posterior sampling (DPS, Chung et al. 2023,
arXiv:2209.14687). Both sample the prior with a guided drift

    f_guided(x, t_i) = f_prior(x, t_i) + lambda_i g(x, t_i),      lambda_i = s sigma^2 i / (i + 1),  t_i = i / T

and differ only in where the clean-space constraint r is evaluated:

    CG:   g(x, t) = grad_x log r(x)                                       (at the noisy state x = x_t)
    DPS:  g(x, t) = grad_x log r(x1_hat(x, t))
                  = (I + (1 - t) d f_prior / dx)^T grad log r(x1_hat),    x1_hat(x, t) = x + (1 - t) f_prior(x, t)

x1_hat is the clean sample x_1 estimated by one Euler step of the prior's drift over the remaining time; DPS takes
the gradient through it (autograd through f_prior). Neither samples p r exactly: grad log p_t(x_t | constraint) is
neither grad log r(x_t) nor grad log r(x1_hat(x_t)).

`GuidedPolicy` has the surface of `DriftPolicy` that the rollouts and log-probs of sde.py use (`time_embedding`,
`nn1`, `drift`, `log_variance_scale`), so they sample and score it unchanged: t rides along the time embedding as
one extra last column, since `drift` receives the embedding and not t.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from workloads.samplers.policy import DriftPolicy, StateTimeMLP

Guidance = Callable[[Tensor, Tensor], Tensor]
"""g(x, t): x [..., D] and t broadcastable to [...] -> [..., D], without gradient."""


def classifier_guidance(grad_log_r: Callable[[Tensor], Tensor]) -> Guidance:
    """CG's g(x, t) = grad log r(x)."""
    return lambda x, t: grad_log_r(x)


def dps_guidance(prior: DriftPolicy, grad_log_r: Callable[[Tensor], Tensor]) -> Guidance:
    """DPS's g(x, t) = J^T grad log r(x1_hat), J = d x1_hat / dx, x1_hat = x + (1 - t) f_prior(x, t) (also under an
    outer no_grad); x is detached."""

    def guidance(x: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # [..., D]
            x1_hat = x + (1 - t)[..., None] * prior(x, t)  # [..., D]
            (g,) = torch.autograd.grad(x1_hat, x, grad_outputs=grad_log_r(x1_hat))  # J^T grad log r, [..., D]
        return g

    return guidance


class GuidedPolicy(nn.Module):
    def __init__(self, prior: DriftPolicy, guidance: Guidance, scale: float, sigma2: float, num_steps: int):
        super().__init__()
        self.prior = prior
        self.guidance = guidance
        self.scale, self.sigma2, self.num_steps = scale, sigma2, num_steps

    @property
    def nn1(self) -> StateTimeMLP:
        """The prior's state-time MLP (sde.py looks its weights up once per rollout)."""
        return self.prior.nn1

    def guidance_weight(self, t: Tensor) -> Tensor:
        """lambda(t_i) = s sigma^2 i / (i + 1), i = t T; t [...] -> [...]."""
        i = torch.round(t * self.num_steps)
        return self.scale * self.sigma2 * i / (i + 1)

    def time_embedding(self, t: Tensor) -> Tensor:
        """[e_prior(t), t], t [...] -> [..., H + 1]."""
        return torch.cat([self.prior.time_embedding(t), t[..., None]], dim=-1)

    def log_variance_scale(self, x: Tensor, t_emb: Tensor) -> None:
        """None: the prior's fixed step variance."""
        return None

    def drift(self, x: Tensor, t_emb: Tensor, nn1_weights: Sequence[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """f_prior(x, t) + lambda(t) g(x, t) for x [..., D] and `time_embedding` output broadcastable to [..., H + 1];
        the guidance term carries no gradient."""
        f = self.prior.drift(x, t_emb[..., :-1], nn1_weights)  # [..., D]
        t = t_emb[..., -1]  # [...]
        return f + self.guidance_weight(t)[..., None] * self.guidance(x, t)  # [..., 1] * [..., D]
