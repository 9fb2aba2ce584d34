"""Networks of the diffusion sampler (PIS-style Fourier MLPs, arXiv:2111.15141 / 2402.05098):
the drift f_theta(x, t) of the forward SDE and the flow log F_theta(x, t) of (FL-)SubTB.

Time embedding (shared style of both networks, each with its own weights):
    gamma(t) = [sin(omega t), cos(omega t)],   omega = linspace(0.1, 100, E)     (fixed Fourier features)
    e(t) = MLP_t(gamma(t))                                                        [H]
State-time MLP:
    h_0 = W_x x + e(t)
    h_l = W_l GELU(h_{l-1}),  l = 1..L
    out = W_out GELU(h_L)                                                         (W_out zero-initialized)

Drift, plain:               f_theta(x, t) = NN1(x, t)
Drift, Langevin (LP):       f_theta(x, t) = NN1(x, t) + NN2(t) * clip(grad_x log R(x), -100, 100)
    NN2(t) = W_2 GELU(W_1 e(t)) is a scalar per time (zero-initialized last layer); the gradient of
    log R is an input, not differentiated through (`Target.grad_log_reward` detaches x).
Flow:                       log F_theta(x, t) = out of a state-time MLP with its own e(t), [...]
Learned variance (optional): PF's step variance sigma^2 dt exp(s_theta(x, t)), s_theta = c tanh(NN_var(x, t)) per
    dimension, NN_var a one-layer state-time MLP sharing e(t) (zero-initialized output: the fixed variance at init)

The zero-initialized outputs make the initial sampler the pure Brownian motion x_1 ~ N(0, sigma^2 I)
and the initial learned flow 0. The time embedding depends on t only, so trajectories compute it once
for the T time points (`time_embedding`) and call `drift` per step, with NN1's weights looked up once per
trajectory (`StateTimeMLP.weights`: a step of batch 300 is short enough for the module and attribute
look-ups to cost a quarter of it); `forward(x, t)` broadcasts x [..., D] against t [...].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LANGEVIN_GRAD_CLIP = 100.0
"""|grad log R| is clipped to this in the Langevin drift (arXiv:2402.05098, Sec. 3)."""


class FourierTimeEmbedding(nn.Module):
    """e(t) = MLP_t([sin(omega t), cos(omega t)]), omega = linspace(0.1, 100, E)."""

    def __init__(self, time_embedding_dim: int, hidden_dim: int):
        super().__init__()
        self.register_buffer("omega", torch.linspace(0.1, 100.0, time_embedding_dim))  # [E]
        self.mlp = nn.Sequential(
            nn.Linear(2 * time_embedding_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        """t [...] -> [..., H]."""
        wt = t[..., None] * self.omega  # [..., E]
        return self.mlp(torch.cat([wt.sin(), wt.cos()], dim=-1))  # [..., H]


def state_time_mlp(weights: Sequence[tuple[Tensor, Tensor]], x: Tensor, t_emb: Tensor) -> Tensor:
    """out = W_out GELU(h_L), h_l = W_l GELU(h_{l-1}), h_0 = W_x x + e(t), for the (W, b) pairs
    weights = [(W_x, b_x), (W_1, b_1), .., (W_L, b_L), (W_out, b_out)]; x [..., D] and a time embedding
    broadcastable to [..., H] -> [..., out_dim]."""
    (w_x, b_x), *hidden, (w_out, b_out) = weights
    h = F.linear(x, w_x, b_x) + t_emb  # h_0, [..., H]
    for w, b in hidden:
        h = F.linear(F.gelu(h), w, b)  # h_l, [..., H]
    return F.linear(F.gelu(h), w_out, b_out)  # [..., out_dim]


class StateTimeMLP(nn.Module):
    """out = W_out GELU(h_L), h_0 = W_x x + e(t), h_l = W_l GELU(h_{l-1}); W_out zero-initialized."""

    def __init__(self, dim: int, out_dim: int, hidden_dim: int, num_layers: int):
        super().__init__()
        self.state_embed = nn.Linear(dim, hidden_dim)
        # W_x [H, D] with the same values, stored column-major: autograd then forms its gradient as x^T grad
        # ([D, N] x [N, H]), which MKL runs ~10x faster than grad^T x ([H, N] x [N, D]) for D = 2 (same numbers).
        self.state_embed.weight = nn.Parameter(self.state_embed.weight.detach().t().contiguous().t())
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
        self.trunk = nn.Sequential(*layers, nn.GELU())
        self.out = nn.Linear(hidden_dim, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def weights(self) -> list[tuple[Tensor, Tensor]]:
        """The (W, b) pairs of `state_time_mlp`: state embedding, the L hidden layers, output."""
        hidden = [layer for layer in self.trunk if isinstance(layer, nn.Linear)]
        return [(layer.weight, layer.bias) for layer in (self.state_embed, *hidden, self.out)]

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        """x [..., D] and a time embedding broadcastable to [..., H] -> [..., out_dim]."""
        return state_time_mlp(self.weights(), x, t_emb)


class DriftPolicy(nn.Module):
    """f_theta(x, t); Langevin-parameterized (LP) iff `grad_log_reward` (the target's) is given."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int = 64,
        time_embedding_dim: int = 64,
        num_layers: int = 2,
        grad_log_reward: Callable[[Tensor], Tensor] | None = None,
        log_variance_range: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.time_embed = FourierTimeEmbedding(time_embedding_dim, hidden_dim)
        self.nn1 = StateTimeMLP(dim, dim, hidden_dim, num_layers)
        self.grad_log_reward = grad_log_reward
        self.nn2 = None if grad_log_reward is None else self._langevin_scale(hidden_dim)
        self.log_variance_range = log_variance_range
        # A head of its own (not extra outputs of nn1), so a fixed-variance policy's state dict loads into it as is.
        self.nn_var = StateTimeMLP(dim, dim, hidden_dim, 1) if log_variance_range > 0 else None

    @staticmethod
    def _langevin_scale(hidden_dim: int) -> nn.Sequential:
        """NN2(t) = W_2 GELU(W_1 e(t)), a scalar; W_2 zero-initialized (the LP drift starts at 0)."""
        nn2 = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1))
        nn.init.zeros_(nn2[-1].weight)
        nn.init.zeros_(nn2[-1].bias)
        return nn2

    @property
    def langevin(self) -> bool:
        return self.nn2 is not None

    def time_embedding(self, t: Tensor) -> Tensor:
        """e(t) for t [...] -> [..., H]."""
        return self.time_embed(t)

    def clipped_grad_log_reward(self, x: Tensor) -> Tensor:
        """clip(grad_x log R(x), -100, 100) for x [..., D] (the target takes [B, D], so flatten)."""
        grad = self.grad_log_reward(x.reshape(-1, self.dim)).reshape(x.shape)  # [..., D]
        return grad.clamp(-LANGEVIN_GRAD_CLIP, LANGEVIN_GRAD_CLIP)

    def drift(self, x: Tensor, t_emb: Tensor, nn1_weights: Sequence[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """f_theta for x [..., D] and a precomputed time embedding broadcastable to [..., H]; `nn1_weights`:
        `self.nn1.weights()`, looked up once by a caller that steps through a trajectory."""
        f = state_time_mlp(self.nn1.weights() if nn1_weights is None else nn1_weights, x, t_emb)  # [..., D]
        if self.langevin:
            f = f + self.nn2(t_emb) * self.clipped_grad_log_reward(x)  # [..., 1] * [..., D]
        return f

    def log_variance_scale(self, x: Tensor, t_emb: Tensor) -> Tensor | None:
        """s_theta(x, t) = c tanh(NN_var(x, t)) [..., D], c = log_variance_range: the step variance is
        sigma^2 dt exp(s_theta), per dimension (0 at init: NN_var's output is zero-initialized). None when the
        variance is fixed (c = 0)."""
        if self.nn_var is None:
            return None
        return self.log_variance_range * torch.tanh(self.nn_var(x, t_emb))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.drift(x, self.time_embedding(t))


class FlowNetwork(nn.Module):
    """log F_theta(x, t), a scalar per state (the learned flow of SubTB, the correction F~ of FL-SubTB)."""

    def __init__(self, dim: int, hidden_dim: int = 64, time_embedding_dim: int = 64, num_layers: int = 2):
        super().__init__()
        self.time_embed = FourierTimeEmbedding(time_embedding_dim, hidden_dim)
        self.mlp = StateTimeMLP(dim, 1, hidden_dim, num_layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x [..., D], t broadcastable to [...] -> [...]."""
        return self.mlp(x, self.time_embed(t)).squeeze(-1)
