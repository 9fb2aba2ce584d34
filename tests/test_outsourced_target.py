"""The outsourced family's generators and noise-space target: the RealNVP flow's inverse, log-determinant and
density against autograd and a quadrature, its maximum-likelihood fit, and the noise-space posterior of an affine
generator under a log-linear r against its closed form."""

import math

import pytest
import torch
from torch import nn

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.flow import RealNVP, fit_flow, standard_normal_log_prob
from workloads.outsourced.learner import noise_space_problem
from workloads.outsourced.noise_target import NoiseSpaceTarget
from workloads.outsourced.toy import GridToy
from workloads.rtb.toy import Toy2D


def _random_flow(seed: int = 0, output_scale: float = 1.0) -> RealNVP:
    torch.manual_seed(seed)
    flow = RealNVP(2, num_couplings=4, hidden_dim=16, output_scale=output_scale)
    for coupling in flow.couplings:
        nn.init.normal_(coupling.net[-1].weight, std=0.5)  # not the identity
    return flow


def test_flow_inverts_and_its_log_det_is_the_jacobians():
    flow = _random_flow(1, output_scale=3.0)
    z = torch.randn(64, 2)
    x, log_det = flow.forward_with_log_det(z)
    z_back, log_det_inverse = flow.inverse(x)
    torch.testing.assert_close(z_back, z, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_det_inverse, -log_det, atol=1e-5, rtol=0)
    for i in range(4):
        jacobian = torch.autograd.functional.jacobian(lambda u: flow(u[None])[0], z[i])  # [2, 2]
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(jacobian).logabsdet.item(), abs=1e-4)
    assert (x - z).abs().max() > 0.5  # a non-trivial map


def test_flow_density_integrates_to_one():
    flow = _random_flow(2, output_scale=2.0)
    u = torch.linspace(-14, 14, 701)
    grid = torch.cartesian_prod(u, u)  # [N, 2]
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum().item() * (u[1] - u[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=0.01)


def test_flow_fit_raises_the_likelihood_of_the_data():
    task = Toy2D()
    torch.manual_seed(0)
    flow = RealNVP(2, num_couplings=4, hidden_dim=32, output_scale=5.0)
    held_out = task.sample_prior(2_000, seed=10**6)
    with torch.no_grad():
        before = -flow.log_prob(held_out).mean().item()
    fit = fit_flow(flow, lambda n, s: task.sample_prior(n, seed=s), iters=300, batch_size=256, lr=3e-3)
    with torch.no_grad():
        after = -flow.log_prob(held_out).mean().item()
    assert after < before - 0.4, (before, after)  # recorded: 7.08 -> 6.47
    assert abs(fit["nll"] - after) < 0.5  # the fit's own figure is the held-out one, not the initial one


class Affine(nn.Module):
    """x = A z + b, z of A's column count (also the MCMC tests' generator)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.latent_shape = (a.shape[1],)
        self.register_buffer("a", a)
        self.register_buffer("b", b)

    def forward(self, z):
        return z @ self.a.T + self.b


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_noise_space_posterior_of_an_affine_generator_is_closed_form(beta):
    """log r(x) = c . x and x = A z + b: R(z) = N(z; 0, I) exp(beta c . (A z + b)), so
    Z = exp(beta c . b + beta^2 |A^T c|^2 / 2) and R / Z = N(beta A^T c, I)."""
    a, b, c = torch.tensor([[1.0, 0.5], [-0.3, 2.0]]), torch.tensor([0.2, -1.0]), torch.tensor([0.4, -0.3])
    target = NoiseSpaceTarget(Affine(a, b), lambda x: x @ c, beta=beta, reference_samples=200_000)
    assert target.dim == 2
    shift = beta * a.T @ c
    assert target.log_z == pytest.approx(beta * (c @ b).item() + 0.5 * (shift @ shift).item(), abs=0.01)
    z = target.sample(20_000, seed=3)
    torch.testing.assert_close(z.mean(0), shift, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), torch.eye(2), atol=0.05, rtol=0)
    assert 0.3 * 200_000 < target.effective_sample_size() < 200_000
    probe = torch.randn(8, 2)
    expected = standard_normal_log_prob(probe) + beta * (probe @ a.T + b) @ c
    torch.testing.assert_close(target.log_reward(probe), expected)
    torch.testing.assert_close(target.grad_log_reward(probe), -probe + shift, atol=1e-5, rtol=0)  # through f


def test_noise_space_target_through_a_flow_matches_the_data_space_posterior():
    """Exact samples pushed through an invertible f are the data-space posterior p_f r / Z: their mean of a test
    function matches quadrature of p_f(x) r(x) on a grid."""
    flow = _random_flow(3, output_scale=2.0)
    task_log_r = lambda x: -0.5 * ((x - torch.tensor([1.0, -1.0])) ** 2).sum(-1)  # noqa: E731
    target = NoiseSpaceTarget(flow, task_log_r, beta=1.0, reference_samples=100_000)
    u = torch.linspace(-14, 14, 561)
    grid = torch.cartesian_prod(u, u)
    with torch.no_grad():
        log_density = flow.log_prob(grid) + task_log_r(grid)
        cell = (u[1] - u[0]).item() ** 2
        log_z = (torch.logsumexp(log_density, 0) + math.log(cell)).item()
        posterior = torch.softmax(log_density, 0)
        mean = posterior @ grid  # [2]
        x = flow(target.sample(20_000, seed=4))
    assert target.log_z == pytest.approx(log_z, abs=0.02)
    torch.testing.assert_close(x.mean(0), mean, atol=0.05, rtol=0)


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="must be > 0"):
        NoiseSpaceTarget(Affine(torch.eye(2), torch.zeros(2)), lambda x: x.sum(-1), beta=0.0)


def test_grid_toy_posterior_of_the_true_prior_is_the_kept_mixture():
    """Under the true prior, E_p[r] = int N4 = 1 and p r reweights data samples into N4's mode masses."""
    toy = GridToy()
    x = toy.sample_data(200_000, seed=0)
    log_w = toy.log_r(x)
    assert (torch.logsumexp(log_w, 0) - math.log(len(x))).item() == pytest.approx(0.0, abs=0.01)
    g = torch.Generator().manual_seed(1)
    resampled = x[torch.multinomial(torch.softmax(log_w, 0), 50_000, replacement=True, generator=g)]
    j = torch.multinomial(toy.kept_log_weights.exp(), 50_000, replacement=True, generator=g)
    n4 = toy.means[toy.kept[j]] + math.sqrt(0.5) * torch.randn(50_000, 2, generator=g)  # exact N4 samples
    masses = lambda s: torch.bincount(toy.mode_of(s), minlength=9).double() / len(s)  # noqa: E731
    assert 0.5 * (masses(resampled) - masses(n4)).abs().sum().item() < 0.02
    assert 0.5 * (masses(n4) - toy.target_mode_masses.double()).abs().sum().item() < 0.08  # the modes overlap
    assert 0.5 * (masses(x) - masses(n4)).abs().sum().item() > 0.3  # the prior's are far from them


def test_beta_anneals_over_training_and_the_exact_answers_keep_beta():
    a, b, c = torch.eye(2), torch.zeros(2), torch.tensor([1.0, 0.0])
    target = NoiseSpaceTarget(
        Affine(a, b), lambda x: x @ c, beta=2.0, reference_samples=50_000, beta_start=0.5, anneal_iters=100
    )
    z = torch.ones(3, 2)
    base = standard_normal_log_prob(z)
    for step, beta in [(0, 0.5), (50, 1.25), (100, 2.0), (500, 2.0), (None, 2.0)]:
        target.at_step(step)
        torch.testing.assert_close(target.log_reward(z), base + beta * z[:, 0])
    target.at_step(0)
    assert target.log_z == pytest.approx(0.5 * 2.0**2, abs=0.02)  # Z at beta, not at beta_0
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSpaceTarget(Affine(a, b), lambda x: x @ c, anneal_iters=10)


def test_grid_problems_exact_mode_masses_are_the_quadrature_posteriors():
    """eval/tv_to_exact's reference: the M weighted reference draws' mode masses equal those of p_f(x) r(x) by
    quadrature on a grid, for a (briefly) fitted flow."""
    config = OutsourcedConfig(reference_samples=100_000).smoke()
    config = config.model_copy(update={"reference_samples": 100_000})
    problem, target = noise_space_problem(config, None)
    masses = problem.exact_mode_masses(target)
    u = torch.linspace(-12, 12, 481)
    grid = torch.cartesian_prod(u, u)
    with torch.no_grad():
        posterior = torch.softmax(problem.generator.log_prob(grid) + problem.log_r(grid), 0).double()
    quadrature = torch.zeros(9, dtype=torch.float64).index_add_(0, problem.toy.mode_of(grid), posterior)
    assert masses.sum().item() == pytest.approx(1.0)
    assert 0.5 * (masses - quadrature).abs().sum().item() < 0.02  # 0.011 at M = 100,000 (ESS 45,000)
    assert 0.5 * (masses - torch.full((9,), 1 / 9, dtype=torch.float64)).abs().sum().item() > 0.2  # not uniform
