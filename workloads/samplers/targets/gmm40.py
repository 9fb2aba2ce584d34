"""40GMM, the FAB / DEM definition (arXiv:2208.01893, arXiv:2402.06121): 40 equal-weight Gaussians in 2-d.

    mu_k = (U_k - 0.5) * 2 * 40,  U ~ torch.rand((40, 2)) after seed 0,    s = softplus(1) ~ 1.3133
    R(x) = (1/40) sum_k N(x; mu_k, s^2 I),    log Z = 0

Checked against `fab/target_distributions/gmm.py` (lollcat/fab-torch) and DEM's `gmm_energy.py`
(which calls `torch.manual_seed(0)` before building it): means `(torch.rand((n_mixes, dim)) - 0.5) * 2
* loc_scaling`, `log_var = ones * log_var_scaling`, `scale_trils = diag_embed(softplus(log_var))`, so
the std (not the variance) is softplus(1) in each dimension. A local generator seeded 0 draws the same
numbers as the seeded global one and leaves the global RNG alone. Unlike FAB, log R is not masked to
-inf below -1e4 (it stays finite and differentiable). The arXiv:2402.05098 code instead loads its means
from a file and uses unit scale; we follow FAB / DEM.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import softplus

from workloads.samplers.targets.base import Target
from workloads.samplers.targets.gaussian_mixture import mixture_log_density, mixture_sample


class GMM40(Target):
    dim = 2
    log_z = 0.0

    def __init__(self, num_modes: int = 40, loc_scaling: float = 40.0, log_var_scaling: float = 1.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        mu = (torch.rand((num_modes, self.dim), generator=g) - 0.5) * 2 * loc_scaling  # [K, 2]
        self.register_buffer("mu", mu)
        self.std = softplus(torch.tensor(log_var_scaling, dtype=torch.float64)).item()  # FAB's scale_tril diagonal
        self.variance = self.std**2
        self.num_modes = num_modes

    def log_reward(self, x: Tensor) -> Tensor:
        return mixture_log_density(x, self.mu, self.variance)

    def sample(self, n: int, seed: int) -> Tensor:
        return mixture_sample(self.mu, self.variance, n, seed)
