"""The outsourced sampler's 2-d case: a flow fitted to a 9-mode grid mixture, and a constraint r keeping 4 of its
modes with given weights, so that the data-space posterior is known (for the flow actually fitted: its exact
density, or its samples reweighted by r).

    p(x)      = (1/9) sum_{k=1}^{9} N(x; mu_k, 0.5 I),       mu_k on the grid {-3, 0, 3}^2
    N4(x)     = sum_{j=1}^{4} w_j N(x; nu_j, 0.5 I),         nu = mu_0, mu_2, mu_4, mu_8;  w ~ 1, 2, 3, 4
    log r(x)  = log N4(x) - log p(x)

The modes overlap (4.2 std apart), so a RealNVP fits p closely and the cells of the modes in noise space are broad
regions of N(0, I); with 25 separated modes (the RTB toy) the fitted flow folds them into thin bands
(docs/outsourced.md). With the true prior at beta = 1 the posterior is N4 exactly (log Z = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workloads.rtb.toy import weighted_mixture_log_density
from workloads.samplers.targets.gaussian_mixture import mixture_log_density, mixture_sample

GRID_SPACING = 3.0
MODE_VARIANCE = 0.5
KEPT_MODES = (0, 2, 4, 8)
"""Indices into the 9 grid means (row-major over x_1, then x_2) of the modes r keeps."""
KEPT_WEIGHTS = (1.0, 2.0, 3.0, 4.0)
"""w_j, unnormalized."""


class GridToy(nn.Module):
    """Data, constraint and mode bookkeeping of the 2-d case (a module, so `.to(device)` moves its constants)."""

    dim = 2
    num_modes = 9

    def __init__(self):
        super().__init__()
        axis = torch.tensor([-GRID_SPACING, 0.0, GRID_SPACING])
        self.register_buffer("means", torch.cartesian_prod(axis, axis))  # [9, 2]
        w = torch.tensor(KEPT_WEIGHTS)
        self.register_buffer("kept_log_weights", (w / w.sum()).log())  # [4]
        self.register_buffer("kept", torch.tensor(KEPT_MODES))  # [4]
        masses = torch.zeros(self.num_modes)
        masses[list(KEPT_MODES)] = w / w.sum()
        self.register_buffer("target_mode_masses", masses)  # [9]: N4's weights on the grid

    def log_prior(self, x: Tensor) -> Tensor:
        """log p(x) of the true data density, x [B, 2] -> [B]."""
        return mixture_log_density(x, self.means, MODE_VARIANCE)

    def log_r(self, x: Tensor) -> Tensor:
        """log r(x) = log N4(x) - log p(x), x [B, 2] -> [B]; differentiable in x."""
        kept = weighted_mixture_log_density(x, self.means[self.kept], self.kept_log_weights, MODE_VARIANCE)
        return kept - self.log_prior(x)

    def sample_data(self, n: int, seed: int) -> Tensor:
        """n exact samples of p, [n, 2]."""
        return mixture_sample(self.means, MODE_VARIANCE, n, seed).to(self.means.device)

    def mode_of(self, x: Tensor) -> Tensor:
        """Index of the nearest grid mean, x [N, 2] -> [N] int64."""
        return torch.cdist(x, self.means).argmin(-1)
