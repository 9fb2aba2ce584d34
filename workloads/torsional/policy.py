"""Torsion policy mu_theta(x, k | G, L) and conditional log Z_phi(G, L) of the Torsional-GFN (arXiv:2507.11759).

Message passing (plain PyTorch, sum aggregation by index_add_) over the molecular graph G whose edges are
the bonds and the 1-3 pairs of bond angles, conditioned on the local structure L through the edge
features (bond lengths, bond angles, 1-3 distances; `features.py`). One layer, for node states h [..., N, H]
and edge embeddings e_ij [E', H] (computed once):
    agg_i = W_o sum_{j -> i} SiLU(A h_j + e_ij)           (W_o after the sum: linear, so it commutes)
    h_i  <- LayerNorm(h_i + MLP([h_i, agg_i]))

Encoder, once per batch:  h^enc = MP^{L_enc}(Embed(a_i)) over bonds and 1-3 pairs.
Drift, at step k with torsion angles x [P, M] (P rows: steps or replicas sharing the graphs):
    phi(x_m) = [sin n x_m, cos n x_m]_{n=1..3}                                       torsion geometry
    h_i^0 = h_i^enc + gamma(k) + sum_{m, r: atom r of torsion m is i} W_r phi(x_m)   (r = a, b, c, d)
    h = MP^{L_step}(h^0) over bonds only             (neighbours' angles reach each torsion; the static
                                                      1-3 pairs are already in h^enc, and cost 2-3x the bonds)
    u_m^0 = W_u [h_a, h_b, h_c, h_d] + W_phi phi(x_m) + gamma(k)                        one row per torsion
    u_m <- LN(u_m + MLP([u_m, sum_{m' in G(m), m' != m} u_m']))  x L_tor    (torsions of a molecule couple)
    f_m  = MLP_out([u_m, W_phi phi(x_m), gamma(k)])
The atom-level step layers cost ~N/K (about 10) times the torsion-level ones, since they update every atom
at each of the S steps; with L_step = 0 the torsions couple only through the torsion-level layers.
    mu_m = pi tanh( sigma_k f_m / pi )                                   bounded (|mu| < pi) mean shift
Score drift (score_drift=True): the reversal of the noising kernel PB has (Tweedie) the drift sigma_k^2 grad log p_k,
with p_k the target smoothed by the noise still to come, c_k = sum_{j >= k} sigma_j^2. The score s is given by the
learner at the current angles and step: grad log p_k itself, exact for the target's Laplace mixture of basins
(basins.py, the default) or estimated by probes (smoothed_score.py), or the local
s = grad_x log R(x) = -dE/dx / kT, smoothed as a basin of R of variance v0 would be (grad log p_k = s v0 / (v0 + c_k)).
Clipped so that its step moves at most one sigma_k,
    s^_m = clip(s_m, -1 / sigma_k, 1 / sigma_k),
    mu_m = pi tanh( (sigma_k f_m + lambda_k sigma_k^2 a_k s^_m) / pi ),    lambda_k = exp(w . gamma(k))  (init 1)
with a_k = v0 / (v0 + c_k) for the local score (v0 = basin_variance, config.basin_variance_rad2) and a_k = 1 for a
smoothed one (basin_variance None). The untrained policy is then an annealed Langevin-type sampler of the target,
and f learns what the score does not say; sigma_k s^_m also enters u_m^0 (W_s), so f can modulate it. Because s is
the structure's own, held-out local structures and zero-shot molecules start from it.
Forward std (std_basin_variance v0 set): the reversal of a noising step from a Gaussian basin of variance v0 is
narrower than the step, std sigma_k r_k with r_k = sqrt((v0 + c_{k+1}) / (v0 + c_k)); with learn_std, times
exp(tanh(g_m)) from one more zero-initialized output (the drift function then returns (mu, r), torus.py).
gamma(k) = MLP(Fourier(k / (S-1))). MLP_out's last layer is zero-initialized: the untrained policy is the
zero-drift noising process (terminal torsions uniform).
Why sigma_k f: the time reversal of the noising kernel has drift ~ sigma_k^2 grad log p_{k+1} = O(sigma_k), and
d log PF / d f = sigma_k (x_{k+1} - x_k - mu) / sigma_k^2 = eps_k is O(1) at every step, whereas with mu = f the
last steps (sigma = 0.01 pi) would carry ~100x larger, noisier gradients than the first
(scale_by_sigma=False gives mu = pi tanh(f / pi)).

ConditionalLogZ: a small separate encoder, then sum- and mean-pooling per graph and the number of torsions
    log Z_phi(G, L) = MLP([sum_i h_i, mean_i h_i, sum_m z_m, K]).
(The reference trained one scalar log Z per molecule and structure; a learned conditional one was left
"not implemented yet".)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from workloads.torsional.features import ANGLE_DIM, ATOM_DIM, BOND_DIM, MolecularGraph
from workloads.torsional.torus import DriftFn, remaining_noise_variance, sigma_schedule

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""(x [P, M] angles, k [P] steps) -> the score [P, M] that guides step k (no graph attached): grad_x log R(x),
or that of the target smoothed by the noise still to come (smoothed_score.py)."""
SCORE_CLIP_SIGMAS = 1.0
"""|s^| <= SCORE_CLIP_SIGMAS / sigma_k: the score step sigma_k^2 s^ moves at most one sigma_k (near clashes)."""
LOG_STD_RANGE = 1.0
"""A learned std multiplier stays within exp(+-1) of its analytic value."""
NUM_HARMONICS = 3
"""phi(x) = [sin n x, cos n x], n = 1..3 (MMFF torsion terms have periods 1, 2, 3)."""


def torsion_harmonics(x: Tensor) -> Tensor:
    """[..., M] -> [..., M, 2 * NUM_HARMONICS]."""
    n = torch.arange(1, NUM_HARMONICS + 1, dtype=x.dtype, device=x.device)  # [3]
    nx = x[..., None] * n  # [..., M, 3]
    return torch.cat([nx.sin(), nx.cos()], dim=-1)  # [..., M, 6]


class MessagePassing(nn.Module):
    """agg_i = W_o sum_{j->i} SiLU(A h_j + e_ij);  h_i <- LN(h_i + MLP([h_i, agg_i])).  h [..., N, H]."""

    def __init__(self, hidden: int):
        super().__init__()
        self.source = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.update = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: Tensor, edge_index: Tensor, edge_emb: Tensor) -> Tensor:
        src, dst = edge_index  # [E'] each
        msg = nn.functional.silu(self.source(h).index_select(-2, src) + edge_emb)  # [..., E', H]
        agg = torch.zeros_like(h).index_add_(h.dim() - 2, dst, msg)  # [..., N, H]
        return self.norm(h + self.update(torch.cat([h, self.out(agg)], dim=-1)))  # [..., N, H]


class GraphEncoder(nn.Module):
    """h^enc [N, H] of a (batched) molecular graph by message passing over bonds and 1-3 pairs."""

    def __init__(self, hidden: int = 64, num_layers: int = 3):
        super().__init__()
        self.atom_embed = nn.Sequential(nn.Linear(ATOM_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.bond_embed = nn.Sequential(nn.Linear(BOND_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.angle_embed = nn.Sequential(nn.Linear(ANGLE_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.layers = nn.ModuleList(MessagePassing(hidden) for _ in range(num_layers))

    def forward(self, graph: MolecularGraph) -> tuple[Tensor, Tensor]:
        """h^enc [N, H] and the bond embeddings [E, H] (the first E of the E' = E + A edges)."""
        edge_index = torch.cat([graph.bond_index, graph.angle_index], dim=1)  # [2, E']
        bond_emb = self.bond_embed(graph.bond_features)  # [E, H]
        edge_emb = torch.cat([bond_emb, self.angle_embed(graph.angle_features)])  # [E', H]
        h = self.atom_embed(graph.atom_features)  # [N, H]
        for layer in self.layers:
            h = layer(h, edge_index, edge_emb)
        return h, bond_emb


class StepEmbedding(nn.Module):
    """gamma(k) = MLP([sin(w t), cos(w t)]),  t = k / (S-1),  w = pi * [1..F]."""

    def __init__(self, hidden: int, num_frequencies: int = 8):
        super().__init__()
        self.register_buffer("omega", math.pi * torch.arange(1, num_frequencies + 1, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, k: Tensor, num_steps: int) -> Tensor:
        t = k.float() / max(num_steps - 1, 1)  # [P]
        wt = t[:, None] * self.omega  # [P, F]
        return self.mlp(torch.cat([wt.sin(), wt.cos()], dim=-1))  # [P, H]


class TorsionCoupling(nn.Module):
    """u_m <- LN(u_m + MLP([u_m, sum_{m' in G(m), m' != m} u_m'])) for torsion states u [P, M, H]."""

    def __init__(self, hidden: int):
        super().__init__()
        self.update = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, u: Tensor, torsion_graph_index: Tensor, num_graphs: int) -> Tensor:
        per_graph = u.new_zeros(u.shape[0], num_graphs, u.shape[2]).index_add_(1, torsion_graph_index, u)
        others = per_graph.index_select(1, torsion_graph_index) - u  # [P, M, H]
        return self.norm(u + self.update(torch.cat([u, others], dim=-1)))


class TorsionPolicy(nn.Module):
    """Per-torsion mean shift mu_theta(x, k | G, L) of the forward wrapped-normal kernel (module docstring)."""

    def __init__(
        self,
        hidden: int = 64,
        encoder_layers: int = 3,
        step_layers: int = 2,
        torsion_layers: int = 0,
        max_shift: float = math.pi,
        scale_by_sigma: bool = True,
        score_drift: bool = False,
        basin_variance: float | None = 0.3,
        std_basin_variance: float | None = None,
        learn_std: bool = False,
    ):
        super().__init__()
        self.std_basin_variance = std_basin_variance
        self.learn_std = learn_std
        self.score_drift = score_drift
        self.basin_variance = basin_variance
        self.max_shift = max_shift
        self.scale_by_sigma = scale_by_sigma
        self.encoder = GraphEncoder(hidden, encoder_layers)
        self.step_embed = StepEmbedding(hidden)
        self.role_embed = nn.Linear(2 * NUM_HARMONICS, 4 * hidden, bias=False)  # W_a, W_b, W_c, W_d stacked
        self.torsion_embed = nn.Linear(2 * NUM_HARMONICS, hidden)
        self.layers = nn.ModuleList(MessagePassing(hidden) for _ in range(step_layers))
        self.torsion_in = nn.Linear(4 * hidden, hidden)
        self.torsion_layers = nn.ModuleList(TorsionCoupling(hidden) for _ in range(torsion_layers))
        self.head = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if learn_std:
            self.log_std_out = nn.Linear(hidden, 1)  # zero-initialized: r starts at its analytic value
            nn.init.zeros_(self.log_std_out.weight)
            nn.init.zeros_(self.log_std_out.bias)
        if score_drift:
            self.score_embed = nn.Linear(1, hidden, bias=False)  # W_s
            self.score_scale = nn.Linear(hidden, 1)  # log lambda_k = w . gamma(k), zero-initialized: lambda = 1
            nn.init.zeros_(self.score_scale.weight)
            nn.init.zeros_(self.score_scale.bias)

    def drift(
        self,
        encoding: tuple[Tensor, Tensor],
        graph: MolecularGraph,
        x: Tensor,
        k: Tensor,
        num_steps: int,
        score: Tensor | None = None,
    ) -> Tensor:
        """mu [P, M] for angles x [P, M] at steps k [P], given encoding = self.encoder(graph); score [P, M] =
        grad_x log R(x), required when score_drift."""
        h_enc, bond_emb = encoding
        P, M = x.shape
        H = h_enc.shape[1]
        quads = graph.torsions  # [M, 4]
        phi = torsion_harmonics(x)  # [P, M, 6]
        gamma = self.step_embed(k, num_steps)  # [P, H]
        roles = self.role_embed(phi).reshape(P, M * 4, H)  # [P, M*4, H], row m*4 + r: atom r of torsion m
        h = (h_enc + gamma[:, None]).index_add(1, quads.reshape(-1), roles)  # [P, N, H]
        for layer in self.layers:
            h = layer(h, graph.bond_index, bond_emb)  # over bonds only: the 1-3 pairs are static, in h_enc
        z = h.index_select(1, quads.reshape(-1)).reshape(P, M, 4 * H)  # [P, M, 4H]
        torsion_phi = self.torsion_embed(phi)  # [P, M, H]
        u = self.torsion_in(z) + torsion_phi + gamma[:, None]  # [P, M, H]
        sigma = sigma_schedule(num_steps).to(x)[k][:, None]  # [P, 1]
        if self.score_drift:
            assert score is not None, "score_drift needs the score grad_x log R at x"
            score = torch.maximum(torch.minimum(score, SCORE_CLIP_SIGMAS / sigma), -SCORE_CLIP_SIGMAS / sigma)
            u = u + self.score_embed((sigma * score)[..., None])  # [P, M, H]
        for layer in self.torsion_layers:
            u = layer(u, graph.torsion_graph_index, graph.num_graphs)
        z = torch.cat([u, torsion_phi, gamma[:, None].expand(P, M, H)], dim=-1)  # [P, M, 3H]
        head = self.head(z)  # [P, M, H]
        f = self.out(head).squeeze(-1)  # [P, M]
        if self.scale_by_sigma:
            f = f * sigma  # sigma_k f
        if self.score_drift:
            if self.basin_variance is not None:  # smooth the local score as a basin of variance v0
                c = remaining_noise_variance(num_steps).to(x)[k][:, None]  # [P, 1] c_k
                score = score * self.basin_variance / (self.basin_variance + c)
            f = f + self.score_scale(gamma).exp() * sigma.pow(2) * score  # lambda_k sigma_k^2 s^
        mu = self.max_shift * torch.tanh(f / self.max_shift)  # [P, M]
        if self.std_basin_variance is None and not self.learn_std:
            return mu
        r = torch.ones_like(sigma)  # [P, 1]
        if self.std_basin_variance is not None:  # the reversal's std for a basin of variance v0
            v0, c = self.std_basin_variance, remaining_noise_variance(num_steps).to(x)[k][:, None]  # [P, 1] c_k
            r = ((v0 + c - sigma.pow(2)).clamp_min(0) + 1e-12).div(v0 + c).sqrt()  # sqrt((v0 + c_{k+1}) / (v0 + c_k))
        if self.learn_std:
            r = r * torch.exp(LOG_STD_RANGE * torch.tanh(self.log_std_out(head).squeeze(-1) / LOG_STD_RANGE))
        return mu, r

    def drift_fn(self, graph: MolecularGraph, num_steps: int, score_fn: ScoreFn | None = None) -> DriftFn:
        """Encode the graphs once; the returned closure (x [P, M], k [P]) -> mu [P, M] reuses the encoding
        (and calls score_fn(x) when score_drift)."""
        encoding = self.encoder(graph)
        if not self.score_drift:
            return lambda x, k: self.drift(encoding, graph, x, k, num_steps)
        assert score_fn is not None, "score_drift needs a score_fn"
        return lambda x, k: self.drift(encoding, graph, x, k, num_steps, score_fn(x, k))

    def forward(self, graph: MolecularGraph, x: Tensor, k: Tensor, num_steps: int) -> Tensor:
        return self.drift(self.encoder(graph), graph, x, k, num_steps)


class ConditionalLogZ(nn.Module):
    """log Z_phi(G, L) per graph of a batch: [num_graphs]."""

    def __init__(self, hidden: int = 32, num_layers: int = 2):
        super().__init__()
        self.encoder = GraphEncoder(hidden, num_layers)
        self.mlp = nn.Sequential(nn.Linear(3 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, graph: MolecularGraph) -> Tensor:
        h, _ = self.encoder(graph)  # [N, H]
        B, H = graph.num_graphs, h.shape[1]
        ones = torch.ones_like(graph.atom_graph_index, dtype=h.dtype)  # [N]
        atoms = h.new_zeros(B).index_add_(0, graph.atom_graph_index, ones)  # [B]
        h_sum = h.new_zeros(B, H).index_add_(0, graph.atom_graph_index, h)  # [B, H]
        z = h.index_select(0, graph.torsions[:, 1]) + h.index_select(0, graph.torsions[:, 2])  # [K, H] bond atoms
        z_sum = h.new_zeros(B, H).index_add_(0, graph.torsion_graph_index, z)  # [B, H]
        k = h.new_zeros(B).index_add_(0, graph.torsion_graph_index, torch.ones_like(z[:, 0]))  # [B]
        feats = torch.cat([h_sum, h_sum / atoms.clamp(min=1)[:, None], z_sum, k[:, None]], dim=-1)  # [B, 3H+1]
        return self.mlp(feats).squeeze(-1)  # [B]
