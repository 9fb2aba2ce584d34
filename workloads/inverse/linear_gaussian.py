"""The linear-Gaussian inverse problem: a posterior in closed form, and a DDPM prior whose noise prediction is exact,
to check the calibration of amortized posteriors (amortized.py).

Prior, measurement and likelihood, x in R^d, y in R^n:

    x ~ N(m, S),    y = A x + sigma_y n,  n ~ N(0, I_n),    log r_y(x) = -|y - A x|^2 / (2 sigma_y^2)

Posterior p(x | y) ~ N(x; m, S) r_y(x) = N(mu_post, S_post) and its normaliser Z(y) = int N(x; m, S) r_y(x) dx:

    S_post  = (S^{-1} + A^T A / sigma_y^2)^{-1}
    mu_post = S_post (S^{-1} m + A^T y / sigma_y^2)
    log Z(y) = log N(y; A m, A S A^T + sigma_y^2 I) + (n / 2) log(2 pi sigma_y^2)

The prior's diffusion model. Under DDPM's forward process x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps the marginal
is x_t ~ N(sqrt(abar_t) m, Sigma_t), Sigma_t = abar_t S + (1 - abar_t) I, and Cov(eps, x_t) = sqrt(1 - abar_t) I, so
the minimiser of the epsilon loss is, exactly,

    eps*(x_t, t) = E[eps | x_t] = sqrt(1 - abar_t) Sigma_t^{-1} (x_t - sqrt(abar_t) m)

`AnalyticPriorEps` is that function as a module with the UNet's call signature, so workloads/diffusion/ddpm.py's DDPM
samples and scores its strided reverse chain as it would a trained UNet's. A vector x [N, d] travels through DDPM as
an "image" of d channels and 1 x 1 pixels, [N, d, 1, 1] (`as_image`, `as_vector`).

The chain's own prior. Each reverse step of that chain is affine-Gaussian, x_{j-1} = P_j x_j + b_j + sqrt(var_j) z,
since eps* is affine in x_t; so x_0 of the chain is exactly Gaussian, N(m_K, S_K), with

    m_{j-1} = P_j m_j + b_j,    C_{j-1} = P_j C_j P_j^T + var_j I,    from x_T ~ N(0, I) at level K.

`chain_prior` reads P_j, b_j off DDPM.reverse_mean_var (the mean at 0 and at the unit vectors) rather than restating
the schedule's formulas. (m_K, S_K) differ from (m, S) by the strided discretisation (fixed variances that ignore
Var(x_0 | x_t), K steps). Measured on the default problem (d = 4), |S_K - S|_F / |S|_F is 33 %, 16 %, 9 % for
fixed_small and 7.5 %, 2.8 %, 1.4 % for fixed_large at K = 20, 50, 100; |m_K - m| ~ 3e-5 (x_T ~ N(0, I) while abar_T
is 4e-5, not 0).
A posterior trained against this chain targets N(m_K, S_K) r_y(x), so that is the reference it is measured against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from workloads.diffusion.ddpm import DDPM
from workloads.inverse.operators import gaussian_log_likelihood


def as_image(x: Tensor) -> Tensor:
    """[N, d] -> [N, d, 1, 1]: d channels of one pixel, DDPM's layout."""
    return x[:, :, None, None]


def as_vector(x: Tensor) -> Tensor:
    """[N, d, 1, 1] -> [N, d]."""
    return x.flatten(1)


@dataclass(frozen=True)
class LinearGaussianProblem:
    """x ~ N(m, S), y = A x + sigma_y n; every tensor float64."""

    prior_mean: Tensor
    """m [d]."""
    prior_cov: Tensor
    """S [d, d], symmetric positive definite."""
    operator: Tensor
    """A [n, d]."""
    sigma_y: float

    @property
    def dim(self) -> int:
        """d."""
        return len(self.prior_mean)

    @property
    def num_measurements(self) -> int:
        """n."""
        return len(self.operator)

    @classmethod
    def random(cls, dim: int, num_measurements: int, sigma_y: float, seed: int) -> LinearGaussianProblem:
        """m ~ N(0, 0.5^2 I); S = Q diag(lambda) Q^T with a random rotation Q and lambda log-uniform in [0.1, 1]
        (correlated, well conditioned); A_ij ~ N(0, 1 / d), so that A x has entries of order |x|."""
        g = torch.Generator().manual_seed(seed)
        mean = 0.5 * torch.randn(dim, generator=g, dtype=torch.float64)
        rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        eigenvalues = 10 ** -torch.rand(dim, generator=g, dtype=torch.float64)  # in [0.1, 1]
        cov = rotation @ torch.diag(eigenvalues) @ rotation.T
        cov = (cov + cov.T) / 2  # exactly symmetric
        operator = torch.randn(num_measurements, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
        return cls(mean, cov, operator, sigma_y)

    def with_prior(self, mean: Tensor, cov: Tensor) -> LinearGaussianProblem:
        """The same measurement under another Gaussian prior N(mean, cov)."""
        return replace(self, prior_mean=mean.to(torch.float64), prior_cov=((cov + cov.T) / 2).to(torch.float64))

    def sample_prior(self, n: int, generator: torch.Generator) -> Tensor:
        """x ~ N(m, S): [n, d]."""
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.prior_mean + z @ torch.linalg.cholesky(self.prior_cov).T

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """y = A x + sigma_y n: [N, d] -> [N, n]."""
        noise = torch.randn(len(x), self.num_measurements, generator=generator, dtype=x.dtype)
        return x @ self.operator.T + self.sigma_y * noise

    def log_r(self, x: Tensor, y: Tensor) -> Tensor:
        """log r_y(x) = -|y - A x|^2 / (2 sigma_y^2): x [N, d], y [N, n] -> [N]."""
        return gaussian_log_likelihood(y, x @ self.operator.T.to(x.dtype), self.sigma_y)

    def posterior(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(mu_post [N, d], S_post [d, d]) of p(x | y) for y [N, n] (module docstring)."""
        prior_precision = torch.linalg.inv(self.prior_cov)
        A, s2 = self.operator, self.sigma_y**2
        post_cov = torch.linalg.inv(prior_precision + A.T @ A / s2)
        post_cov = (post_cov + post_cov.T) / 2
        post_mean = (prior_precision @ self.prior_mean + y @ A / s2) @ post_cov  # [N, d]; S_post is symmetric
        return post_mean, post_cov

    def log_z(self, y: Tensor) -> Tensor:
        """log Z(y) = log int N(x; m, S) r_y(x) dx: y [N, n] -> [N] (module docstring)."""
        A, s2, n = self.operator, self.sigma_y**2, self.num_measurements
        marginal = torch.distributions.MultivariateNormal(
            A @ self.prior_mean, A @ self.prior_cov @ A.T + s2 * torch.eye(n)
        )
        return marginal.log_prob(y) + n / 2 * math.log(2 * math.pi * s2)


class AnalyticPriorEps(nn.Module):
    """eps*(x_t, t) = sqrt(1 - abar_t) Sigma_t^{-1} (x_t - sqrt(abar_t) m), the exact noise prediction of the
    prior N(m, S), with a UNet's signature: (x_t [N, d, 1, 1], t [N] int64 timesteps) -> [N, d, 1, 1]."""

    def __init__(self, problem: LinearGaussianProblem, alphas_cumprod: Tensor):
        super().__init__()
        abar = alphas_cumprod.to(torch.float64)[:, None, None]  # [T, 1, 1]
        eye = torch.eye(problem.dim, dtype=torch.float64)
        sigma_t = abar * problem.prior_cov + (1 - abar) * eye  # [T, d, d]
        self.register_buffer("eps_gain", (1 - abar).sqrt() * torch.linalg.inv(sigma_t))  # [T, d, d]
        self.register_buffer("mean_t", abar[:, :, 0].sqrt() * problem.prior_mean)  # [T, d]: sqrt(abar_t) m

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        centred = as_vector(x_t) - self.mean_t[t].to(x_t.dtype)  # [N, d]
        eps = torch.einsum("nij,nj->ni", self.eps_gain[t].to(x_t.dtype), centred)  # [N, d]
        return as_image(eps)


def sample_chain(
    ddpm: DDPM, model: nn.Module, n: int, dim: int, generator: torch.Generator, **sample_kwargs
) -> tuple[Tensor, Tensor]:
    """n reverse chains of `model` (a prior or posterior eps model of vectors in R^dim) from x_T ~ N(0, I):
    (states [n, K + 1, d] from x_T to x_0, log_prob_steps [n, K]); `sample_kwargs` go to DDPM.sample
    (extra, exploration_std, with_grad)."""
    x_T = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    trajectory = ddpm.sample(model, None, generator, start=as_image(x_T), **sample_kwargs)
    return trajectory.states.flatten(2), trajectory.log_prob_steps


@dataclass(frozen=True)
class AffineStep:
    """One reverse step x_{j-1} = P_j x_j + b_j + sqrt(var_j) z of a chain whose eps model is affine in x_t."""

    gain: Tensor
    """P_j [d, d]."""
    offset: Tensor
    """b_j [d]."""
    var: float


@torch.no_grad()
def chain_steps(ddpm: DDPM, model: nn.Module, dim: int) -> list[AffineStep]:
    """The K steps of `model`'s reverse chain, from level K down to 1, read off DDPM.reverse_mean_var: its mean at 0
    is b_j, at the unit vector e_i it is P_j e_i + b_j."""
    points = torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)])  # [1 + d, d]
    steps = []
    for level in range(ddpm.num_steps, 0, -1):
        step_mean, var = ddpm.reverse_mean_var(model, as_image(points), torch.full((dim + 1,), level))
        step_mean = as_vector(step_mean)  # [1 + d, d]
        steps.append(AffineStep((step_mean[1:] - step_mean[0]).T, step_mean[0], var[0].item()))
    return steps


def _push(mean: Tensor, cov: Tensor, gain: Tensor, offset: Tensor, var: float) -> tuple[Tensor, Tensor]:
    """The law of gain x + offset + sqrt(var) z for x ~ N(mean, cov)."""
    return gain @ mean + offset, gain @ cov @ gain.T + var * torch.eye(len(mean), dtype=cov.dtype)


def chain_prior(ddpm: DDPM, model: nn.Module, dim: int) -> tuple[Tensor, Tensor]:
    """(m_K [d], S_K [d, d]): the exact law of x_0 of the reverse chain of `model`, an eps model affine in x_t
    (module docstring); float64."""
    mean, cov = torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)  # x_T ~ N(0, I)
    for step in chain_steps(ddpm, model, dim):
        mean, cov = _push(mean, cov, step.gain, step.offset, step.var)
    return mean, (cov + cov.T) / 2


def mean_only_posterior_cov(steps: list[AffineStep], problem: LinearGaussianProblem) -> Tensor:
    """[d, d]: the covariance of x_0 under the chain that takes the exact posterior transition's mean and the prior
    step's variance, a yardstick for what a posterior that only corrects eps (the mean) can reach.

    The posterior chain of the prior chain `steps` given y is its h-transform, with h_j(x) = E[r_y(x_0) | x_j = x]
    ~ exp(-x^T Q_j x / 2 + ..), Q_0 = A^T A / sigma_y^2, Q_j = P_j^T Q_{j-1} (I + var_j Q_{j-1})^{-1} P_j. Its step
    j -> j - 1 is Gaussian with precision I / var_j + Q_{j-1} and the gain (I + var_j Q_{j-1})^{-1} P_j on x_j; a
    fixed-variance chain cannot take the narrower variance, so this one keeps var_j with that gain. Neither the
    covariance nor the gain depends on y.
    """
    dim = problem.dim
    eye = torch.eye(dim, dtype=torch.float64)
    precision = problem.operator.T @ problem.operator / problem.sigma_y**2  # Q_0
    messages = []  # Q_{j-1} for the steps in chain order (level K first)
    for step in reversed(steps):  # level 1 up to K
        messages.append(precision)
        precision = step.gain.T @ precision @ torch.linalg.inv(eye + step.var * precision) @ step.gain
    cov = eye  # x_T ~ N(0, I); h_K is all but flat (abar_T ~ 4e-5)
    for step, q in zip(steps, reversed(messages)):
        gain = torch.linalg.solve(eye + step.var * q, step.gain)
        _, cov = _push(torch.zeros(dim, dtype=torch.float64), cov, gain, step.offset, step.var)
    return (cov + cov.T) / 2
