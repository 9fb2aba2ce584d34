"""An amortized posterior p_phi(x | y) of the linear-Gaussian toy (linear_gaussian.py), trained with relative
trajectory balance (RTB, arXiv:2405.20971; amortized over y as in arXiv:2503.09746), and its calibration.

Posterior model: the prior's exact noise prediction plus a y-conditioned correction, zero at the start (so that
p_phi = p_prior exactly, for every y), sampled and scored by DDPM's strided chain (y enters as extra channels):

    eps_phi(x_t, t, y) = eps*(x_t, t) + g_phi([x_t, y], e(t / T))        (g_phi: StateTimeMLP, zero output layer)
    log Z_psi(y)       = an MLP of y, starting at 0

One iteration: B pairs x ~ N(m_K, S_K) (the chain's prior), y = A x + sigma_y n; one trajectory tau_b ~ p_phi(. | y_b)
each (states detached, exploration std sigma_e added to the sampling std only), re-scored with gradient; Adam, both
learning rates on a cosine to 0 at total_iters:

    delta_b = log Z_psi(y_b) + sum_j log p_phi(x_{j-1} | x_j, y_b) - sum_j log p_prior(x_{j-1} | x_j) - log r_{y_b}(x_0)
    L       = mean_b delta_b^2                                            (objectives.relative_tb_loss, beta = 1)

At the optimum p_phi(x_0 | y) ~ N(x_0; m_K, S_K) r_y(x_0): the reference is the closed-form posterior of the chain's
own prior (linear_gaussian.chain_prior), not of N(m, S), since RTB cannot see past the prior it is given.

Evaluation, over P pairs (x*_p, y_p) of the same joint (a fixed seed), N posterior samples each, with their sample mean
mu^_p and unbiased sample covariance S^_p, against the closed form (mu_post(y_p), S_post):

    mean_error       = sqrt(mean_p |mu^_p - mu_post(y_p)|^2)          (RMS over pairs)
    mean_error_floor = sqrt(tr(S_post) / N)                            (its expected value for exact samples)
    cov_error        = |mean_p S^_p - S_post|_F / |S_post|_F          (S_post does not depend on y: pooled)
    cov_error_per_pair = mean_p |S^_p - S_post|_F / |S_post|_F         (includes each pair's sampling noise)
    cov_error_mean_only = |S_mo - S_post|_F / |S_post|_F, S_mo of linear_gaussian.mean_only_posterior_cov: what a
                       posterior that only shifts the prior steps' means may be expected to reach (a yardstick)
    coverage         = mean_p 1[(x*_p - mu^_p)^T S^_p^{-1} (x*_p - mu^_p) <= chi2_d(level)]
    coverage_exact   = the same with (mu_post(y_p), S_post): a level-accurate ellipsoid, up to the binomial noise
                       sqrt(level (1 - level) / P)
    log_z_error      = mean_p |log Z_psi(y_p) - log Z(y_p)|

coverage is the calibration check: x*_p | y_p is a draw from the true posterior, so the posterior's own credible
ellipsoid contains it with probability `level` when p_phi is right (slightly less for finite N: mu^, S^ are noisy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import chi2
from torch import Tensor, nn

from workloads.diffusion.ddpm import DDPM
from workloads.inverse.config import LinearGaussianConfig
from workloads.inverse.linear_gaussian import (
    AnalyticPriorEps,
    LinearGaussianProblem,
    as_image,
    as_vector,
    chain_prior,
    chain_steps,
    mean_only_posterior_cov,
    sample_chain,
)
from workloads.objectives import relative_tb_loss
from workloads.samplers.policy import FourierTimeEmbedding, StateTimeMLP

EVAL_SEED_OFFSET = 9_000_011
"""Evaluation pairs and samples use seed + this: the same pairs at every evaluation of a learner."""
TIME_EMBEDDING_DIM = 16
"""Fourier features of t / T in the correction's time embedding."""


class PosteriorEps(nn.Module):
    """eps_phi(x_t, t, y) = eps*(x_t, t) + g_phi([x_t, y], e(t / T)), with a UNet's signature: x_in = [x_t, y] as
    channels [N, d + n, 1, 1] (DDPM's `extra`), t [N] int64 -> [N, d, 1, 1]."""

    def __init__(
        self, prior_eps: AnalyticPriorEps, dim: int, num_measurements: int, hidden_dim: int, num_timesteps: int
    ):
        super().__init__()
        self.prior_eps, self.dim, self.num_timesteps = prior_eps, dim, num_timesteps
        self.time_embedding = FourierTimeEmbedding(TIME_EMBEDDING_DIM, hidden_dim)
        self.correction = StateTimeMLP(dim + num_measurements, dim, hidden_dim, num_layers=2)  # zero output layer

    def forward(self, x_in: Tensor, t: Tensor) -> Tensor:
        x_t = x_in[:, : self.dim]  # [N, d, 1, 1]
        t_emb = self.time_embedding(t.to(x_in.dtype) / self.num_timesteps)  # [N, H]
        correction = self.correction(as_vector(x_in), t_emb)  # [N, d]
        return self.prior_eps(x_t, t) + as_image(correction)


def log_z_network(num_measurements: int, hidden_dim: int) -> nn.Module:
    """log Z_psi(y): y [N, n] -> [N, 1]; its output layer starts at 0."""
    out = nn.Linear(hidden_dim, 1)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(
        nn.Linear(num_measurements, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(), out
    )


@dataclass
class CalibrationReport:
    """`AmortizedPosterior.evaluate`'s metrics (module docstring) and the tensors behind them."""

    metrics: dict[str, float]
    """eval/mean_error, eval/mean_error_floor, eval/cov_error, eval/cov_error_per_pair, eval/cov_error_mean_only,
    eval/coverage, eval/coverage_exact, eval/log_z_error, eval/mean_log_r, eval/chain_prior_cov_gap
    (|S_K - S|_F / |S|_F)."""
    sample_means: Tensor
    """[P, d] mu^_p."""
    sample_covs: Tensor
    """[P, d, d] S^_p."""
    posterior_means: Tensor
    """[P, d] mu_post(y_p)."""
    posterior_cov: Tensor
    """[d, d] S_post."""


class AmortizedPosterior:
    """The y-conditioned posterior of the linear-Gaussian toy and its RTB training: `train(num_iters)`, `evaluate()`.
    A plain class; it owns its torch.Generator, so evaluation never perturbs training randomness. float64 throughout."""

    def __init__(self, config: LinearGaussianConfig, seed: int):
        c = self.config = config
        self.seed, self.step = seed, 0
        self.problem = LinearGaussianProblem.random(c.dim, c.num_measurements, c.sigma_y, c.problem_seed)
        self.ddpm = DDPM(c.ddpm_config())
        self.prior_eps = AnalyticPriorEps(self.problem, self.ddpm.schedule.alphas_cumprod)
        self.reference = self.problem.with_prior(*chain_prior(self.ddpm, self.prior_eps, c.dim))
        """The problem under the chain's own prior N(m_K, S_K): the posterior RTB targets."""
        self.mean_only_cov = mean_only_posterior_cov(chain_steps(self.ddpm, self.prior_eps, c.dim), self.problem)
        """The covariance of the exact posterior chain's means with the prior's variances (a yardstick)."""
        with torch.random.fork_rng():  # the networks' initialisation, without touching the caller's global RNG
            torch.manual_seed(seed)
            self.posterior_eps = PosteriorEps(
                self.prior_eps, c.dim, c.num_measurements, c.hidden_dim, c.num_train_timesteps
            ).double()
            self.log_z = log_z_network(c.num_measurements, c.hidden_dim).double()
        self.optimizer = torch.optim.Adam(
            [
                {"params": [p for p in self.posterior_eps.parameters() if p.requires_grad], "lr": c.lr},
                {"params": list(self.log_z.parameters()), "lr": c.lr_log_z},
            ]
        )
        self.generator = torch.Generator().manual_seed(seed)

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x [n, d] ~ N(m_K, S_K), y [n, n_obs] = A x + sigma_y noise)."""
        x = self.reference.sample_prior(n, generator)
        return x, self.reference.measure(x, generator)

    def sample(self, y: Tensor, generator: torch.Generator, exploration_std: float = 0.0) -> Tensor:
        """One posterior trajectory per row of y [B, n_obs], without gradient: states [B, K + 1, d]."""
        states, _ = sample_chain(
            self.ddpm,
            self.posterior_eps,
            len(y),
            self.config.dim,
            generator,
            extra=as_image(y),
            exploration_std=exploration_std,
        )
        return states

    def trajectory_log_probs(self, states: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(sum_j log p_phi(x_{j-1} | x_j, y) [B] with gradient, sum_j log p_prior(x_{j-1} | x_j) [B] without),
        both re-scored by the same batched DDPM.log_prob_steps."""
        images = states[..., None, None]  # [B, K + 1, d, 1, 1]
        log_p_post = self.ddpm.log_prob_steps(self.posterior_eps, images, as_image(y)).sum(1)
        with torch.no_grad():
            log_p_prior = self.ddpm.log_prob_steps(self.prior_eps, images).sum(1)
        return log_p_post, log_p_prior

    def train(self, num_iters: int) -> dict[str, float]:
        """`num_iters` RTB iterations (module docstring); chunk means of train/loss, train/log_z, train/mean_log_r."""
        c = self.config
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        logs = []
        for _ in range(num_iters):
            _, y = self.sample_pairs(c.batch_size, self.generator)
            states = self.sample(y, self.generator, c.exploration_std)
            log_p_post, log_p_prior = self.trajectory_log_probs(states, y)
            log_r = self.problem.log_r(states[:, -1], y)  # [B]
            log_z = self.log_z(y).squeeze(1)  # [B]
            loss = relative_tb_loss(log_p_post, log_p_prior, log_r, log_z)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, c.grad_clip)
            for group, lr in zip(self.optimizer.param_groups, (c.lr, c.lr_log_z)):
                group["lr"] = lr * c.lr_factor(self.step)
            self.optimizer.step()
            logs.append(torch.stack([loss, log_z.mean(), log_r.mean()]).detach())
            self.step += 1
        mean = torch.stack(logs).mean(0).tolist() if logs else [math.nan] * 3
        return {"train/loss": mean[0], "train/log_z": mean[1], "train/mean_log_r": mean[2]}

    @torch.no_grad()
    def evaluate(self) -> CalibrationReport:
        """Calibration against the closed form over `eval_pairs` pairs (module docstring); deterministic per seed."""
        c, P, N = self.config, self.config.eval_pairs, self.config.eval_samples_per_pair
        g = torch.Generator().manual_seed(self.seed + EVAL_SEED_OFFSET)
        x_true, y = self.sample_pairs(P, g)  # [P, d], [P, n_obs]
        x = self.sample(y.repeat_interleave(N, 0), g)[:, -1].view(P, N, c.dim)  # [P, N, d]
        sample_means = x.mean(1)  # [P, d]
        centred = x - sample_means[:, None]  # [P, N, d]
        sample_covs = centred.transpose(1, 2) @ centred / (N - 1)  # [P, d, d]
        post_means, post_cov = self.reference.posterior(y)  # [P, d], [d, d]
        threshold = chi2.ppf(c.credible_level, c.dim)
        cov_norm = torch.linalg.matrix_norm(post_cov)
        prior_cov = self.problem.prior_cov
        metrics = {
            "eval/mean_error": (sample_means - post_means).pow(2).sum(1).mean().sqrt().item(),
            "eval/mean_error_floor": math.sqrt(post_cov.trace().item() / N),
            "eval/cov_error": (torch.linalg.matrix_norm(sample_covs.mean(0) - post_cov) / cov_norm).item(),
            "eval/cov_error_per_pair": (torch.linalg.matrix_norm(sample_covs - post_cov) / cov_norm).mean().item(),
            "eval/cov_error_mean_only": (torch.linalg.matrix_norm(self.mean_only_cov - post_cov) / cov_norm).item(),
            "eval/coverage": _inside(x_true, sample_means, sample_covs, threshold),
            "eval/coverage_exact": _inside(x_true, post_means, post_cov.expand(P, -1, -1), threshold),
            "eval/log_z_error": (self.log_z(y).squeeze(1) - self.reference.log_z(y)).abs().mean().item(),
            "eval/mean_log_r": self.problem.log_r(x.flatten(0, 1), y.repeat_interleave(N, 0)).mean().item(),
            "eval/chain_prior_cov_gap": (
                torch.linalg.matrix_norm(self.reference.prior_cov - prior_cov) / torch.linalg.matrix_norm(prior_cov)
            ).item(),
        }
        return CalibrationReport(metrics, sample_means, sample_covs, post_means, post_cov)


def _inside(x: Tensor, means: Tensor, covs: Tensor, threshold: float) -> float:
    """Fraction of rows x [P, d] with (x - mean)^T cov^{-1} (x - mean) <= threshold, means [P, d], covs [P, d, d]."""
    diff = x - means  # [P, d]
    mahalanobis2 = (diff * torch.linalg.solve(covs, diff)).sum(1)  # [P]
    return (mahalanobis2 <= threshold).double().mean().item()
