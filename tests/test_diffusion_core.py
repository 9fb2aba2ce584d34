"""The DDPM core (workloads/diffusion/): the strided schedule's identities, per-step log-densities against a
hand computation and against diffusers' DDPMScheduler.step, exploration scored under the un-inflated policy, the
last step sampled and scored with one variance, forward noising marginals, gradients through a subset of steps,
the exact answer on Gaussian data, and training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from pydantic import ValidationError
from torch import Tensor, nn

from workloads.data.images import load_images
from workloads.diffusion.config import DDPMConfig
from workloads.diffusion.ddpm import DDPM, gaussian_log_prob, predict_eps
from workloads.diffusion.train import prior_key, train_ddpm
from workloads.diffusion.unet import LORA_TARGETS, build_unet

SMOKE = DDPMConfig().smoke()  # 1 x 8 x 8 digits, a (16, 32) UNet, K = 10


def tiny_unet(config: DDPMConfig = SMOKE, seed: int = 0, extra_in_channels: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_unet(config, extra_in_channels).eval().requires_grad_(False)


class GaussianDataEps(nn.Module):
    """The exact eps predictor E[eps | x_t] for data x_0 ~ N(mu, s^2 I):
    x_t ~ N(sqrt(abar_t) mu, (abar_t s^2 + 1 - abar_t) I), so E[eps | x_t] = sqrt(1 - abar_t) (x_t - sqrt(abar_t) mu)
    / (abar_t s^2 + 1 - abar_t)."""

    def __init__(self, mu: Tensor, s: float, alphas_cumprod: Tensor):
        super().__init__()
        self.mu, self.s, self.alphas_cumprod = mu, s, alphas_cumprod.to(torch.float64)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (1 - abar).sqrt() * (x_t - abar.sqrt() * self.mu) / (abar * self.s**2 + 1 - abar)
        return eps.to(x_t.dtype)


# ---------------------------------------------------------------- config and UNet


def test_config_errors_name_the_key():
    with pytest.raises(ValidationError, match="image_size=10 must be divisible by 4"):
        DDPMConfig(image_size=10, block_out_channels=(16, 32, 64))
    with pytest.raises(ValidationError, match="norm_num_groups=8"):
        DDPMConfig(block_out_channels=(12, 24))
    with pytest.raises(ValidationError, match="sampling_steps"):
        DDPMConfig(sampling_steps=1)
    with pytest.raises(ValidationError, match="image_size=8 is not one of"):
        DDPMConfig(dataset="color_dsprites", image_size=8)
    with pytest.raises(ValidationError, match="sampling_step"):
        DDPMConfig(sampling_step=20)  # unknown key
    assert DDPMConfig(dataset="cifar10").channels == 3 and SMOKE.channels == 1


def test_unet_shapes_attention_targets_and_lora():
    from peft import LoraConfig, inject_adapter_in_model

    with_attention = tiny_unet(extra_in_channels=2)
    x = torch.randn(3, 1 + 2, 8, 8)
    assert with_attention(x, torch.tensor([0, 5, 999])).sample.shape == (3, 1, 8, 8)
    names = [n for n, _ in with_attention.named_modules()]
    assert all(any(n.endswith(target) for n in names) for target in LORA_TARGETS)
    no_attention = build_unet(SMOKE.model_copy(update={"attention": False}))
    assert not any(n.endswith("to_q") for n, _ in no_attention.named_modules())
    lora = inject_adapter_in_model(LoraConfig(r=4, target_modules=list(LORA_TARGETS)), with_attention)
    assert any("lora_A" in n for n, _ in lora.named_parameters())


def test_prior_key_follows_what_trains_the_prior():
    key = prior_key(SMOKE, seed=0)
    assert len(key) == 64 and key == prior_key(DDPMConfig().smoke(), seed=0)
    assert key == prior_key(SMOKE.model_copy(update={"sampling_steps": 50, "variance": "fixed_large"}), seed=0)
    assert key != prior_key(SMOKE, seed=1)
    assert key != prior_key(SMOKE.model_copy(update={"lr": 1e-3}), seed=0)
    assert key != prior_key(SMOKE.model_copy(update={"image_size": 16}), seed=0)


# ---------------------------------------------------------------- (d) the strided schedule


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_strided_schedule_identities(variance):
    config = DDPMConfig(sampling_steps=20, variance=variance)
    s = DDPM(config).schedule
    K, T = 20, config.num_train_timesteps
    abar_t = DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02).alphas_cumprod.double()
    assert s.num_steps == K and s.timesteps[1] == 0 and s.timesteps[K] == T - 1
    assert (s.timesteps[1:].diff() > 0).all()
    torch.testing.assert_close(s.abar[1:], abar_t[s.timesteps[1:]])
    # abar_j = prod_{i <= j} a_i: the strided steps compose to the marginals.
    torch.testing.assert_close(torch.cumprod(s.step_alpha[1:], 0), s.abar[1:], rtol=1e-12, atol=0)
    j = torch.arange(2, K + 1)
    a, abar, abar_prev = s.step_alpha[j], s.abar[j], s.abar[j - 1]
    # The posterior q(x_{j-1} | x_j, x_0) keeps the marginal: mean sqrt(abar_{j-1}) x_0, variance 1 - abar_{j-1}.
    torch.testing.assert_close(s.reverse_coef_x0[j] + s.reverse_coef_xt[j] * abar.sqrt(), abar_prev.sqrt())
    posterior_var = 1 - abar_prev - s.reverse_coef_xt[j] ** 2 * (1 - abar)
    torch.testing.assert_close(s.reverse_var[j], posterior_var if variance == "fixed_small" else 1 - a)
    # The last step: mean x0_hat, variance 1 - abar_1 = beta_0 (nonzero) for both choices.
    assert s.reverse_coef_x0[1] == 1 and s.reverse_coef_xt[1] == 0
    torch.testing.assert_close(s.reverse_var[1], 1 - abar_t[0])


# ---------------------------------------------------------------- (a) log-densities of trajectories


def alphas_cumprod(T: int) -> Tensor:
    return DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02).alphas_cumprod.double()


def kept_timesteps(config: DDPMConfig) -> list[int]:
    """t_1 = 0 < .. < t_K = T - 1, evenly spaced."""
    T, K = config.num_train_timesteps, config.sampling_steps
    return [round(i * (T - 1) / (K - 1)) for i in range(K)]


def strided_posterior(abar: float, abar_prev: float, variance: str) -> tuple[float, float, float]:
    """DDPM's equation (7) for a step abar -> abar_prev (abar_prev = 1 at the last step, whose variance is beta)."""
    beta = 1 - abar / abar_prev
    coef_x0 = math.sqrt(abar_prev) * beta / (1 - abar)
    coef_xt = math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)
    small = variance == "fixed_small" and abar_prev < 1
    return coef_x0, coef_xt, (1 - abar_prev) / (1 - abar) * beta if small else beta


def manual_log_probs(model: nn.Module, states: Tensor, config: DDPMConfig) -> Tensor:
    """[B, K] from scratch: float64 scalars, eps from the model, torch.distributions' Normal."""
    abar_t, kept = alphas_cumprod(config.num_train_timesteps), kept_timesteps(config)
    K, columns = len(kept), []
    for p in range(K):
        k = K - 1 - p  # the step from t_{k+1} (index k of kept)
        abar, abar_prev = abar_t[kept[k]].item(), abar_t[kept[k - 1]].item() if k > 0 else 1.0
        coef_x0, coef_xt, var = strided_posterior(abar, abar_prev, config.variance)
        x = states[:, p]
        eps = model(x, torch.full((len(x),), kept[k])).sample
        x0_hat = ((x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1, 1)
        normal = torch.distributions.Normal((coef_x0 * x0_hat + coef_xt * x).double(), math.sqrt(var))
        columns.append(normal.log_prob(states[:, p + 1].double()).sum((1, 2, 3)))
    return torch.stack(columns, 1)


def test_log_prob_steps_equal_a_manual_computation_and_what_sample_returned():
    ddpm, model = DDPM(SMOKE), tiny_unet()
    traj = ddpm.sample(model, 4, generator=0)
    K = ddpm.num_steps
    assert traj.states.shape == (4, K + 1, 1, 8, 8) and traj.log_prob_steps.shape == (4, K)
    expected = manual_log_probs(model, traj.states, SMOKE).float()
    torch.testing.assert_close(traj.log_prob_steps, expected, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(ddpm.log_prob_steps(model, traj.states), expected, rtol=1e-4, atol=1e-2)


def test_reverse_step_matches_diffusers_scheduler_step():
    """diffusers' DDPMScheduler.step over the same custom timesteps draws x_{j-1} = mean + sqrt(var) z with z from
    the generator: with the same z ours must agree, but for the last step, which diffusers takes without noise."""
    ddpm, model = DDPM(SMOKE), tiny_unet()
    s = ddpm.schedule
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    scheduler.set_timesteps(timesteps=s.timesteps[1:].flip(0).tolist())
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for j in range(ddpm.num_steps, 0, -1):
        t = int(s.timesteps[j])
        diffusers_next = scheduler.step(
            model(x, t).sample, t, x, generator=torch.Generator().manual_seed(j)
        ).prev_sample
        mean, var = ddpm.reverse_mean_var(model, x, torch.full((4,), j))
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(j))
        ours = mean + var.sqrt() * z if j > 1 else mean
        torch.testing.assert_close(ours, diffusers_next, rtol=1e-5, atol=1e-5)
        x = diffusers_next


# ---------------------------------------------------------------- (b, c) exploration and the last step's variance


def test_exploration_widens_the_steps_but_log_probs_use_the_policy_variance():
    ddpm, model = DDPM(SMOKE), tiny_unet()
    K, e, n = ddpm.num_steps, 0.3, 512
    start = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2)).expand(n, -1, -1, -1)
    traj = ddpm.sample(model, None, generator=3, start=start, start_index=K - 2, exploration_std=e)
    mean, var = ddpm.reverse_mean_var(model, traj.states[:, 0], torch.full((n,), 2))
    residual = traj.states[:, 1] - mean  # [n, 1, 8, 8], all with one variance var_2 + e^2
    assert residual.var().item() == pytest.approx(var[0].item() + e**2, rel=0.04)
    assert residual.var().item() > 1.5 * var[0].item()
    torch.testing.assert_close(traj.log_prob_steps[:, 0], gaussian_log_prob(traj.states[:, 1], mean, var))
    torch.testing.assert_close(traj.log_prob_steps, ddpm.log_prob_steps(model, traj.states, start_index=K - 2))


def test_the_last_step_is_sampled_and_scored_with_one_nonzero_variance():
    ddpm, model = DDPM(SMOKE), tiny_unet()
    K, n, d = ddpm.num_steps, 4096, 64
    x_t1 = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(4)).expand(n, -1, -1, -1)
    traj = ddpm.sample(model, None, generator=5, start=x_t1, start_index=K - 1)
    mean, var = ddpm.reverse_mean_var(model, x_t1, torch.full((n,), 1))
    v = var[0].item()
    assert v == pytest.approx(1e-4, rel=1e-3)  # 1 - abar_{t_1 = 0} = beta_0
    assert (traj.x0 - mean).var().item() == pytest.approx(v, rel=0.03)
    # E[log p] per dimension is -(1 + log 2 pi v) / 2 only when the sampling variance is the scoring one; a
    # noiseless last step scored with v would sit at -log(2 pi v) / 2, 0.5 nats per dimension higher.
    per_dim = traj.log_prob_steps[:, 0].mean().item() / d
    assert per_dim == pytest.approx(-0.5 * (1 + math.log(2 * math.pi * v)), abs=0.01)


# ---------------------------------------------------------------- (e) noising for backtracking


def test_noise_back_has_the_forward_marginals_and_resumes_sampling():
    ddpm = DDPM(SMOKE)
    K, n = ddpm.num_steps, 4000
    x0 = load_images("digits", 8, "test", num_images=1)[0]  # [1, 1, 8, 8] in [-1, 1]
    states = ddpm.noise_back(x0.expand(n, -1, -1, -1), from_index=K, num_steps=K, generator=6)
    assert states.shape == (n, K + 1, 1, 8, 8) and torch.equal(states[:, -1], x0.expand(n, -1, -1, -1))
    for p in range(K):
        abar = ddpm.schedule.abar[K - p].item()
        mean, var = states[:, p].mean(0), states[:, p].var(0)
        assert (mean - math.sqrt(abar) * x0[0]).abs().max() < 5 * math.sqrt((1 - abar) / n)
        assert var.mean().item() == pytest.approx(1 - abar, rel=0.03)
    partial = ddpm.noise_back(x0, from_index=K, num_steps=3, generator=7)
    assert partial.shape == (1, 4, 1, 8, 8)
    resumed = ddpm.sample(tiny_unet(), None, generator=8, start=partial[:, 0], start_index=K - 3)
    assert resumed.states.shape == (1, 4, 1, 8, 8) and resumed.log_prob_steps.shape == (1, 3)
    assert torch.equal(resumed.states[:, 0], partial[:, 0])


# ---------------------------------------------------------------- (g) gradients through a subset of steps


class CountingModel(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: Tensor, t: Tensor):
        self.rows += len(x)
        return self.model(x, t)


def test_gradient_flows_through_the_chosen_steps_only():
    ddpm = DDPM(SMOKE)
    traj = ddpm.sample(tiny_unet(seed=0), 3, generator=9)
    posterior = CountingModel(tiny_unet(seed=1).requires_grad_(True))
    params = list(posterior.parameters())
    steps = torch.tensor([2, 7])
    subset = ddpm.log_prob_steps(posterior, traj.states, steps=steps)
    assert subset.shape == (3, 2) and posterior.rows == 3 * 2  # one model call over B * S rows
    subset_grads = torch.autograd.grad(subset.sum(), params)
    full = ddpm.log_prob_steps(posterior, traj.states)
    torch.testing.assert_close(subset, full[:, steps], rtol=1e-5, atol=1e-3)
    full_grads = torch.autograd.grad(full[:, steps].sum(), params, retain_graph=True)
    other_grads = torch.autograd.grad(full[:, 0].sum(), params)  # a step outside the subset
    assert sum(g.abs().sum() for g in subset_grads) > 0
    for g_subset, g_full in zip(subset_grads, full_grads):
        torch.testing.assert_close(g_subset, g_full, rtol=1e-3, atol=1e-4)
    assert any(not torch.allclose(a, b) for a, b in zip(subset_grads, other_grads))


def test_conditioning_channels_reach_the_model():
    ddpm = DDPM(SMOKE)
    model = tiny_unet(extra_in_channels=1)
    y = torch.randn(2, 1, 8, 8)
    traj = ddpm.sample(model, 2, generator=10, extra=y)
    torch.testing.assert_close(ddpm.log_prob_steps(model, traj.states, y), traj.log_prob_steps, rtol=1e-4, atol=1e-2)
    assert not torch.allclose(ddpm.log_prob_steps(model, traj.states, -y), traj.log_prob_steps)
    eps = predict_eps(model, traj.states[:, 0], torch.zeros(2, dtype=torch.long), y)
    assert eps.shape == (2, 1, 8, 8)


# ---------------------------------------------------------------- (h) the exact answer on Gaussian data


def chain_of_gaussian_data(config: DDPMConfig, mu: Tensor, s: float) -> tuple[Tensor, float]:
    """The exact law N(m, V) of the strided chain's x_0 when eps is GaussianDataEps: each step is linear,
    x_{j-1} = A_j x_j + B_j mu + sqrt(v_j) z, so from x_T ~ N(0, 1), m <- A m + B mu and V <- A^2 V + v."""
    abar_t, kept = alphas_cumprod(config.num_train_timesteps), kept_timesteps(config)
    m, V = torch.zeros_like(mu, dtype=torch.float64), 1.0
    for k in range(len(kept) - 1, -1, -1):
        abar, abar_prev = abar_t[kept[k]].item(), abar_t[kept[k - 1]].item() if k > 0 else 1.0
        coef_x0, coef_xt, var = strided_posterior(abar, abar_prev, config.variance)
        D = abar * s**2 + 1 - abar
        # x0_hat = (x - sqrt(1 - abar) eps) / sqrt(abar) = x (1 - (1 - abar) / D) / sqrt(abar) + mu (1 - abar) / D
        A = coef_x0 * (1 - (1 - abar) / D) / math.sqrt(abar) + coef_xt
        m, V = A * m + coef_x0 * (1 - abar) / D * mu, A * A * V + var
    return m, V


@pytest.mark.parametrize("steps", [20, 100])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_exact_eps_of_gaussian_data_gives_the_exact_law_of_the_chain(variance, steps):
    """Data N(mu, s^2 I) with its exact eps predictor: x_0's sample mean and variance (20,000 samples) match the
    chain's exact law, which tends to N(mu, s^2) as K grows (variance off by -50 % / +45 % for fixed_small /
    fixed_large at K = 20, -18 % / +7.6 % at K = 100, -2.4 % / +0.7 % at K = T = 1000)."""
    config = DDPMConfig(image_size=4, sampling_steps=steps, clip_x0_hat=False, variance=variance)
    mu = torch.linspace(-0.5, 0.5, 16).view(1, 4, 4)
    s, n = 0.3, 20_000
    x0 = DDPM(config).sample(GaussianDataEps(mu, s, alphas_cumprod(1000)), n, generator=11).x0  # [n, 1, 4, 4]
    m, V = chain_of_gaussian_data(config, mu, s)
    assert (x0.mean(0) - m).abs().max() < 5 * math.sqrt(V / n)
    assert x0.var(0).mean().item() == pytest.approx(V, rel=0.015)  # SE of the pooled variance: 0.25 %
    m_full, V_full = chain_of_gaussian_data(config.model_copy(update={"sampling_steps": 1000}), mu, s)
    assert (m_full - mu).abs().max() < 1e-5 and V_full == pytest.approx(s**2, rel=0.03)


# ---------------------------------------------------------------- (f) training


def test_train_ddpm_lowers_the_loss_and_is_deterministic():
    config = SMOKE.model_copy(update={"train_iters": 40, "lr": 2e-3, "batch_size": 32})
    images = load_images("digits", 8, "train", num_images=256)[0]
    ddpm = DDPM(config)

    def held_out_loss(model: nn.Module) -> float:
        return ddpm.loss(model, images[:128], generator=123).item()

    losses: list[float] = []
    trained = train_ddpm(config, images, seed=0, progress=lambda step, loss: losses.append(loss))
    untrained = train_ddpm(config.model_copy(update={"train_iters": 0}), images, seed=0)
    assert len(losses) == 40 and not any(p.requires_grad for p in trained.parameters())
    assert held_out_loss(trained) < 0.6 * held_out_loss(untrained)
    again = train_ddpm(config, images, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values()))
    other = train_ddpm(config.model_copy(update={"train_iters": 1}), images, seed=1)
    assert not torch.equal(next(iter(other.parameters())), next(iter(untrained.parameters())))
    assert np.isfinite(losses).all()


def test_the_ddim_ode_of_gaussian_data_maps_noise_to_data():
    """Data N(mu, s^2 I) with its exact eps predictor: the probability-flow ODE maps x_T = z to mu + s z. DDIM's
    steps (eta = 0) are affine in z (no noise is added) with offset mu, and their slope dx_0/dz tends to s as K
    grows (0.238 / 0.287 / 0.2985 at K = 20 / 100 / 1000)."""
    mu, s = torch.linspace(-0.5, 0.5, 16).view(1, 4, 4), 0.3
    model = GaussianDataEps(mu, s, alphas_cumprod(1000))
    z = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    slope_error = []
    for steps in (20, 100, 1000):
        x0 = DDPM(DDPMConfig(image_size=4, sampling_steps=steps, clip_x0_hat=False)).ode_sample(model, z)
        (slope,) = torch.autograd.grad(x0.sum(), z)  # [64, 1, 4, 4]: d x_0 / d z, one pixel at a time
        assert slope.std().item() < 1e-9
        assert (x0.detach() - slope * z.detach() - mu).abs().max() < 2e-3
        slope_error.append(abs(slope.mean().item() - s) / s)
    assert slope_error[0] > slope_error[1] > slope_error[2] and slope_error[2] < 0.01
