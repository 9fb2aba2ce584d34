"""Classifier guidance (CG), the training-free baseline of RTB's 2-D toy (the reference's
`get_trajectory_fwd_classifier_guidance`):

    f_CG(x, t_i) = f_prior(x, t_i) + lambda_i grad_x log r(x),      lambda_i = s sigma^2 i / (i + 1),  t_i = i / T

r is the clean-space constraint evaluated at the noisy state x_{t_i} (no estimate of the clean sample), which is
why CG does not sample p r exactly: grad log p_t(x_t | constraint) is not grad log r(x_t).

`ClassifierGuidedPolicy` has the surface of `DriftPolicy` that the rollouts and log-probs of sde.py use
(`time_embedding`, `nn1`, `drift`), so they sample and score it unchanged: lambda(t) rides along the time embedding
as one extra last column, since `drift` receives the embedding and not t.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from workloads.samplers.policy import DriftPolicy, StateTimeMLP


class ClassifierGuidedPolicy(nn.Module):
    def __init__(
        self, prior: DriftPolicy, grad_log_r: Callable[[Tensor], Tensor], scale: float, sigma2: float, num_steps: int
    ):
        super().__init__()
        self.prior = prior
        self.grad_log_r = grad_log_r
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
        """[e_prior(t), lambda(t)], t [...] -> [..., H + 1]."""
        return torch.cat([self.prior.time_embedding(t), self.guidance_weight(t)[..., None]], dim=-1)

    def drift(self, x: Tensor, t_emb: Tensor, nn1_weights: Sequence[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """f_prior(x, t) + lambda(t) grad log r(x) for x [..., D] and `time_embedding` output broadcastable to
        [..., H + 1]."""
        f = self.prior.drift(x, t_emb[..., :-1], nn1_weights)  # [..., D]
        return f + t_emb[..., -1:] * self.grad_log_r(x)  # [..., 1] * [..., D]
