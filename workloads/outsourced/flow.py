"""RealNVP (Dinh et al. 2017, arXiv:1605.08803): an invertible generator x = f(z), z ~ N(0, I), whose data-space
density is exact, for the outsourced sampler's 2-d case.

Affine coupling k with a binary mask m_k (alternating halves of the coordinates), u -> v:
    v = m u + (1 - m) (u exp(s_k(m u)) + t_k(m u)),         s_k = c tanh(NN_k^s),   log |det dv/du| = sum (1 - m) s_k
f is the couplings in order, then a fixed scale a (z -> x = a v_K: the couplings work at unit scale whatever the
data's); f^{-1} undoes them in reverse. Change of variables:
    log p_f(x) = log N(z; 0, I) - log |det df/dz|,          z = f^{-1}(x)
Fitted by maximum likelihood on exact data samples (`fit_flow`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from workloads.samplers.sde import LOG_2PI


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) for z [B, D] -> [B]."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


class AffineCoupling(nn.Module):
    """v = m u + (1 - m) (u exp(s(m u)) + t(m u)), s = c tanh(.): bounded scales keep the fit stable."""

    def __init__(self, mask: Tensor, hidden_dim: int, scale_bound: float):
        super().__init__()
        self.register_buffer("mask", mask)  # [D]
        D = mask.numel()
        self.net = nn.Sequential(
            nn.Linear(D, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, 2 * D),
        )
        nn.init.zeros_(self.net[-1].weight)  # the identity at init
        nn.init.zeros_(self.net[-1].bias)
        self.scale_bound = scale_bound

    def _scale_shift(self, u_fixed: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(u_fixed).chunk(2, dim=-1)  # [B, D] each
        free = 1 - self.mask
        return self.scale_bound * torch.tanh(s) * free, t * free

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """(v [B, D], log |det dv/du| [B])."""
        s, t = self._scale_shift(u * self.mask)
        return u * s.exp() + t, s.sum(-1)

    def inverse(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(u [B, D], log |det du/dv| [B]); the fixed half of v is that of u."""
        s, t = self._scale_shift(v * self.mask)
        return (v - t) * (-s).exp(), -s.sum(-1)


class RealNVP(nn.Module):
    """x = f(z) for z [B, D]; `log_prob(x)` is the exact density of f(z), z ~ N(0, I)."""

    def __init__(
        self,
        dim: int = 2,
        num_couplings: int = 8,
        hidden_dim: int = 64,
        scale_bound: float = 2.0,
        output_scale: float = 1.0,
    ):
        super().__init__()
        self.dim = dim
        self.output_scale = output_scale
        self.latent_shape = (dim,)
        masks = [(torch.arange(dim) + k) % 2 for k in range(num_couplings)]  # alternating halves
        self.couplings = nn.ModuleList(AffineCoupling(m.float(), hidden_dim, scale_bound) for m in masks)

    def forward(self, z: Tensor) -> Tensor:
        """x = f(z), [B, D] -> [B, D] (differentiable in z and in the weights)."""
        return self.forward_with_log_det(z)[0]

    def forward_with_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(x = f(z), log |det df/dz| [B])."""
        log_det = torch.full((z.shape[0],), self.dim * math.log(self.output_scale), device=z.device)
        for coupling in self.couplings:
            z, ld = coupling(z)
            log_det = log_det + ld
        return self.output_scale * z, log_det

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z = f^{-1}(x), log |det df^{-1}/dx| [B])."""
        x = x / self.output_scale
        log_det = torch.full((x.shape[0],), -self.dim * math.log(self.output_scale), device=x.device)
        for coupling in reversed(self.couplings):
            x, ld = coupling.inverse(x)
            log_det = log_det + ld
        return x, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_f(x) = log N(f^{-1}(x); 0, I) + log |det df^{-1}/dx|, [B, D] -> [B]."""
        z, log_det = self.inverse(x)
        return standard_normal_log_prob(z) + log_det


def fit_flow(
    flow: RealNVP,
    sample_data: Callable[[int, int], Tensor],
    iters: int,
    batch_size: int,
    lr: float,
    progress: Callable[[int, float], None] | None = None,
    progress_every: int = 500,
) -> dict[str, float]:
    """Maximum likelihood: `iters` Adam steps on -mean log p_f(x), x = sample_data(batch_size, seed = step) exact
    data; {"nll": mean NLL of the last tenth of the steps, "fit_s"}. `progress(step, nll)` every progress_every."""
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    nlls: list[Tensor] = []
    t0 = time.time()
    for step in range(iters):
        loss = -flow.log_prob(sample_data(batch_size, step)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        nlls.append(loss.detach())
        if progress is not None and (step + 1) % progress_every == 0:
            progress(step + 1, loss.item())
    tail = nlls[-max(1, len(nlls) // 10) :]
    return {"nll": torch.stack(tail).mean().item() if nlls else math.nan, "fit_s": time.time() - t0}
