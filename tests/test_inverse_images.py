"""The amortized RTB posterior of image inverse problems (workloads/inverse/image_posterior.py): the config's checks,
the measurement and likelihood shapes per operator, the posterior equal to the prior at the start for every y (pixel
and latent priors), training lowering the RTB loss on a fixed batch, DPS at scale 0 being the prior's chain, the
reconstruction metrics, the evaluation's outputs and a bit-identical resume. Tiny smoke priors (a few seconds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from pydantic import ValidationError

from workloads.diffusion.latent import fit_vae_and_latent_prior
from workloads.diffusion.train import LossLog
from workloads.inverse.config import ImageInverseConfig, OperatorConfig
from workloads.inverse.image_posterior import ImageInverseLearner, reconstruction_metrics

SMOKE = ImageInverseConfig().smoke()
"""Box inpainting (a centred 4 x 4 box, sigma_y 0.05) under a 30-step 8 x 8 pixel prior with K = 10."""
LATENT_SMOKE = ImageInverseConfig(prior_space="latent").smoke()
"""The same box on 16 x 16 digits under a small VAE (100 steps) and a 30-step latent prior on its 4 x 4 x 4 latents."""
KINDS = ("box_inpainting", "random_inpainting", "gaussian_deblur", "fourier_magnitude")


@pytest.fixture(scope="module")
def prior_state() -> dict:
    return ImageInverseLearner(SMOKE, seed=0).prior_state_dict()


@pytest.fixture(scope="module")
def latent_prior_state() -> dict:
    return ImageInverseLearner(LATENT_SMOKE, seed=0).prior_state_dict()


def learner(prior_state: dict, seed: int = 0, base: ImageInverseConfig = SMOKE, **update) -> ImageInverseLearner:
    config = ImageInverseConfig.model_validate(base.model_dump() | update)
    return ImageInverseLearner(config, seed=seed, prior_state=prior_state)


def measured(rtb: ImageInverseLearner, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x* [n, C, H, W], y): the first n test images and their measurement with noise of `seed`."""
    x_true = rtb.images("test")[:n]
    return x_true, rtb.measurement.measure(x_true, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- config


def test_config_checks_and_smoke():
    with pytest.raises(ValidationError, match="box_size=9 is larger"):
        ImageInverseConfig(operator=OperatorConfig(box_size=9))
    with pytest.raises(ValidationError, match="samples_per_y=3 must divide"):
        ImageInverseConfig(samples_per_y=3)
    with pytest.raises(ValidationError, match="latent_prior models latents"):
        ImageInverseConfig(prior_space="latent", latent_prior={"latent_channels": 8})
    with pytest.raises(ValidationError, match="guidance_scal"):
        ImageInverseConfig(guidance_scal=1.0)
    assert SMOKE.image_shape == (1, 8, 8) and LATENT_SMOKE.image_shape == (1, 16, 16)
    assert SMOKE.total_iters < ImageInverseConfig().total_iters and SMOKE.prior.train_iters == 30
    assert ImageInverseConfig(method="dps", exploration_std=0.4).exploration(0) == 0.0
    assert ImageInverseConfig(exploration_std=0.4, total_iters=100).exploration(25) == pytest.approx(0.2)


# ---------------------------------------------------------------- measurements and likelihood


@pytest.mark.parametrize("kind", KINDS)
def test_measurement_likelihood_and_condition_shapes(prior_state, kind):
    rtb = learner(prior_state, operator={"kind": kind})
    x_true, y = measured(rtb, 5)
    assert y.shape == x_true.shape == (5, 1, 8, 8)
    log_r = rtb.log_r(x_true, y)
    assert log_r.shape == (5,) and torch.isfinite(log_r).all()
    # y - A(x*) is the noise alone: log r_y(x*) = -|n|^2 / 2, about -dim(y) / 2; an image far from x* scores less
    assert -log_r.mean().item() == pytest.approx(64 / 2, rel=0.5)
    assert (rtb.log_r(torch.zeros_like(x_true), y) < log_r).all()
    inpainting = kind.endswith("inpainting")
    assert rtb.condition(y).shape == (5, 1 + inpainting, 8, 8) and rtb.condition_channels == 1 + inpainting
    assert torch.equal(rtb.log_z_of(y), torch.zeros(5))


def test_latent_condition_is_pixel_unshuffled_to_the_latent(latent_prior_state):
    rtb = ImageInverseLearner(LATENT_SMOKE, seed=0, prior_state=latent_prior_state)
    x_true, y = measured(rtb, 3)
    assert y.shape == (3, 1, 16, 16) and rtb.ddpm.shape == (4, 4, 4)
    assert rtb.condition(y).shape == (3, 2 * 16, 4, 4) and rtb.condition_channels == 32  # [y, mask], 4 x 4 blocks
    z = torch.randn(3, 4, 4, 4)
    assert rtb.decode(z).shape == (3, 1, 16, 16) and rtb.log_r(z, y).shape == (3,)


# ---------------------------------------------------------------- the posterior starts as the prior


@pytest.mark.parametrize(("parameterization", "kind"), [("lora", "box_inpainting"), ("copy", "fourier_magnitude")])
def test_posterior_is_the_prior_at_the_start_for_every_y(prior_state, parameterization, kind):
    rtb = learner(prior_state, parameterization=parameterization, operator={"kind": kind}, loss_clip=0.0)
    prior_traj = rtb.ddpm.sample(rtb.prior, 4, torch.Generator().manual_seed(5))
    for seed in (0, 1):
        _, y = measured(rtb, 4, seed)
        y = y if seed == 0 else 3 * torch.randn_like(y)  # a measurement, then an arbitrary y
        log_p_post, log_p_prior, log_r, log_z, x0 = rtb.rtb_terms(y, torch.Generator().manual_seed(5))
        torch.testing.assert_close(x0, prior_traj.x0, rtol=0, atol=1e-5)  # the same chain as the prior's
        torch.testing.assert_close(log_p_post, log_p_prior, rtol=1e-6, atol=1e-3)
        assert torch.equal(log_z, torch.zeros(4))
        # delta = log Z + log p_phi - log p - log r: zero with log Z set to log r, whatever the measurement
        assert rtb.rtb_loss(log_p_post, log_p_prior, log_r, log_r).item() == pytest.approx(0.0, abs=1e-5)
        assert rtb.rtb_loss(log_p_post, log_p_prior, log_r, log_r + 1).item() == pytest.approx(1.0, abs=1e-5)


def test_latent_posterior_is_the_prior_at_the_start(latent_prior_state):
    rtb = ImageInverseLearner(LATENT_SMOKE, seed=0, prior_state=latent_prior_state)
    _, y = measured(rtb, 4)
    log_p_post, log_p_prior, log_r, _, x0 = rtb.rtb_terms(y, torch.Generator().manual_seed(2))
    prior_x0 = rtb.ddpm.sample(rtb.prior, 4, torch.Generator().manual_seed(2)).x0
    torch.testing.assert_close(x0, prior_x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(log_p_post, log_p_prior, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(log_r, rtb.measurement.log_r(rtb.decode(x0), y))  # r on the decoded image


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("samples_per_y", [1, 4])
def test_training_steps_lower_the_rtb_loss_on_a_fixed_batch(prior_state, samples_per_y):
    """Optimizer steps on one fixed batch (the same y and the same sampling noise each time) must lower its RTB loss
    with the learned log Z_psi(y) and raise its mean log r_y. Measured (seed 0): the loss falls to 0.09 x (k = 1) and
    0.10 x (k = 4), mean log r rises from -12,837 to -10,058 (k = 1); with the loss negated the loss triples and
    log r falls to -15,533; with the posterior detached (log Z_psi alone) the loss falls to 0.26 x and log r stays."""
    rtb = learner(prior_state, samples_per_y=samples_per_y, batch_size=8)
    _, y = measured(rtb, 8 // samples_per_y)
    y = y.repeat_interleave(samples_per_y, 0)  # [8, 1, 8, 8]

    def terms():
        return rtb.rtb_terms(y, torch.Generator().manual_seed(11))[:4]

    with torch.no_grad():
        start = terms()
    for _ in range(20):
        loss = rtb.training_loss(*terms())
        rtb.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in rtb.optimizer.param_groups for p in g["params"]], 1.0)
        rtb.optimizer.step()
    with torch.no_grad():
        end = terms()
    before, after = rtb.rtb_loss(*start).item(), rtb.rtb_loss(*end).item()
    assert after < 0.5 * before, (before, after)
    log_r_before, log_r_after = start[2].mean().item(), end[2].mean().item()
    assert log_r_after > log_r_before + 0.1 * abs(log_r_before), (log_r_before, log_r_after)


def test_train_reports_metrics_and_terminal_states(prior_state):
    rtb = learner(prior_state, samples_per_y=2)
    metrics, batch = rtb.train(3)
    assert rtb.step == 3 and batch.x.shape == (3 * SMOKE.batch_size, 64 + 64) and batch.log_reward.shape == (12,)
    assert {"train/loss", "train/log_z", "train/mean_log_r", "train/log_ratio", "train/abs_residual"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["train/log_z"] != 0.0  # log Z_psi moved
    dps_metrics, dps_batch = (dps := learner(prior_state, method="dps")).train(4)
    assert dps_metrics == {} and dps_batch.x.shape == (0, 64 + 64) and dps.step == 4
    z, y = rtb._replay_rows(batch)  # rows [z | y]: each chain end with its own measurement
    assert z.shape == (12, 1, 8, 8) and y.shape == (12, 1, 8, 8)
    assert torch.equal(y[0], y[1]) and not torch.equal(y[1], y[2])  # samples_per_y = 2 rows per y
    assert torch.allclose(rtb.log_r(z, y), torch.as_tensor(batch.log_reward), rtol=1e-5)


def test_guided_iterations_are_spread_evenly_and_reach_y_sooner(prior_state):
    """guided_share: that share of the iterations samples from the posterior's chain shifted by DPS's step; at the
    start (posterior = prior) those trajectories end closer to y than on-policy ones from the same noise."""
    config = SMOKE.model_copy(update={"guided_share": 0.25})
    assert [config.guided(step) for step in range(8)] == [False, False, False, True] * 2
    assert not any(SMOKE.guided(step) for step in range(8))
    on_policy, _ = learner(prior_state, samples_per_y=2).train(1)
    guided, _ = learner(prior_state, samples_per_y=2, guided_share=1.0).train(1)
    assert guided["train/mean_log_r"] > on_policy["train/mean_log_r"]
    assert math.isfinite(guided["train/loss"])


def test_a_tempered_start_scales_log_r_in_the_residual_and_reaches_beta_one(prior_state):
    config = SMOKE.model_copy(update={"beta_start": 0.01, "beta_anneal_fraction": 0.5, "total_iters": 100})
    assert config.beta(0) == 0.01 and config.beta(25) == pytest.approx(0.505) and config.beta(50) == pytest.approx(1)
    assert SMOKE.beta(0) == 1.0
    plain, _ = learner(prior_state).train(1)
    tempered, _ = learner(prior_state, beta_start=0.01).train(1)
    assert tempered["train/beta"] == pytest.approx(0.01) and plain["train/beta"] == 1.0
    assert tempered["train/mean_log_r"] == plain["train/mean_log_r"]  # the same trajectories, log r logged as is
    assert tempered["train/abs_residual"] < 0.05 * plain["train/abs_residual"]  # log Z_psi = 0: delta ~ -beta log r


def test_backtracking_config_and_schedule():
    config = SMOKE.model_copy(update={"backtrack_every": 3})
    assert [config.backtracks(step) for step in range(6)] == [False, False, True] * 2
    assert not any(SMOKE.backtracks(step) for step in range(6)) and SMOKE.backtrack_levels == SMOKE.prior.sampling_steps
    with pytest.raises(ValidationError, match="backtrack_steps=11 exceeds the prior's sampling_steps=10"):
        ImageInverseConfig.model_validate(SMOKE.model_dump() | {"backtrack_steps": 11})
    with pytest.raises(ValidationError, match="replay.enabled needs backtrack_every > 0"):
        ImageInverseConfig(replay={"enabled": True})
    assert ImageInverseConfig(backtrack_steps=15, prior_space="latent").smoke().backtrack_steps == 10


def test_backtracking_pairs_at_the_start_weigh_only_the_reward_gap(prior_state):
    """With p_phi = p (the start), both partial trajectories have log p_phi - log p = 0, so the pair residual is
    log r_y(z') - log r_y(z*): the re-denoised end against the truth it was noised from (k = 4 of K = 10)."""
    rtb = learner(prior_state, backtrack_steps=4, loss_clip=0.0)
    z_true, y = rtb.training_starts(6)
    state = rtb.generator.get_state()
    loss = rtb.backtracking_loss(z_true, y, beta=1.0)
    rtb.generator.set_state(state)
    _, redenoised = rtb.ddpm.backtrack(rtb.prior, z_true, 4, rtb.generator)
    assert redenoised.start_index == 6 and not torch.equal(redenoised.x0, z_true)
    gap = rtb.log_r(redenoised.x0, y) - rtb.log_r(z_true, y)  # [6]: the truth fits y, x' mostly does not
    assert gap.mean() < -10
    torch.testing.assert_close(loss, gap.pow(2).mean(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("from_replay", [False, True])
def test_backtracking_iterations_alternate_with_forward_ones(prior_state, from_replay):
    """Every other iteration backtracks (from the training pairs' x*, or from replayed rows [z | y]); only forward
    iterations return chain ends."""
    rtb = learner(prior_state, backtrack_every=2)
    replay = learner(prior_state, seed=5).train(2)[1] if from_replay else None
    metrics, batch = rtb.train(4, replay=replay)
    assert metrics["train/backtrack_fraction"] == 0.5 and len(batch.x) == 2 * SMOKE.batch_size
    assert metrics["train/replay_fraction"] == (0.5 if from_replay else 0.0)
    assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_backtracking_from_the_truth_makes_its_noising_chains_likelier(prior_state):
    """Backtracking from x* alone (every iteration, the whole chain) raises the posterior's log-likelihood of noising
    chains to held x* relative to the prior's (0 at the start): measured +43 nats after 20 iterations at lr 1e-2
    (seed 0)."""
    truth = learner(prior_state, backtrack_every=1, lr=1e-2)
    z_true, y = truth.training_starts(8)
    chains = truth.ddpm.noise_back(z_true, truth.ddpm.num_steps, truth.ddpm.num_steps, generator=3)

    def log_ratio() -> float:
        with torch.no_grad():
            log_post = truth.ddpm.log_prob_steps(truth.posterior, chains, truth.condition(y)).sum(-1)
            return (log_post - truth.ddpm.log_prob_steps(truth.prior, chains).sum(-1)).mean().item()

    assert log_ratio() == pytest.approx(0.0, abs=1e-3)
    truth.train(20)
    assert log_ratio() > 1.0


def test_a_prior_fit_reports_its_progress_over_the_vae_and_the_latent_prior():
    """A latent prior is fitted in two stages (9 min at the defaults): progress counts on over both."""
    steps = []
    fit_vae_and_latent_prior(LATENT_SMOKE.vae, LATENT_SMOKE.latent_prior, 0, progress=lambda s, _: steps.append(s))
    total = ImageInverseLearner(LATENT_SMOKE, seed=0).prior_train_steps()
    assert total == LATENT_SMOKE.vae.train_iters + LATENT_SMOKE.latent_prior.train_iters
    assert steps == list(range(total))
    reports = []
    log = LossLog(lambda step, loss: reports.append((step, loss)), every=3)
    for step, loss in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]):
        log(step, loss)
    assert reports == [(3, 2.0), (6, 5.0)] and log.final_loss() == 7.0


# ---------------------------------------------------------------- DPS


def test_dps_at_scale_zero_is_the_prior_chain_and_guidance_moves_towards_y(prior_state):
    _, y = measured(learner(prior_state), 16)
    prior = learner(prior_state, method="dps", guidance_scale=0.0)
    x0, log_q, log_p = prior.sample(y, torch.Generator().manual_seed(4))
    reference = prior.ddpm.sample(prior.prior, 16, torch.Generator().manual_seed(4))
    assert torch.equal(x0, reference.x0) and torch.equal(log_q, reference.log_prob_steps.sum(-1))
    torch.testing.assert_close(log_q, log_p)
    guided = learner(prior_state, method="dps", guidance_scale=1.0)
    x0_guided, _, _ = guided.sample(y, torch.Generator().manual_seed(4))
    assert guided.log_r(x0_guided, y).mean() > prior.log_r(x0, y).mean()  # the same noise, closer to y


def test_latent_dps_differentiates_through_the_decoder(latent_prior_state):
    base = LATENT_SMOKE.model_copy(update={"method": "dps"})
    prior, guided = (learner(latent_prior_state, base=base, guidance_scale=s) for s in (0.0, 1.0))
    _, y = measured(prior, 4)
    z0, _, _ = prior.sample(y, torch.Generator().manual_seed(1))
    z_guided, _, _ = guided.sample(y, torch.Generator().manual_seed(1))
    assert torch.equal(z0, prior.ddpm.sample(prior.prior, 4, torch.Generator().manual_seed(1)).x0)
    assert z_guided.shape == (4, 4, 4, 4) and not torch.equal(z_guided, z0)


# ---------------------------------------------------------------- evaluation


def test_reconstruction_metrics_of_the_truth_and_of_noise():
    x_true = torch.rand(6, 1, 8, 8) * 2 - 1
    exact = reconstruction_metrics(x_true[:, None].expand(-1, 3, -1, -1, -1), x_true)
    assert exact["eval/psnr_sample"] == math.inf and exact["eval/psnr_mean"] > 100  # the mean rounds: ~160 dB
    assert exact["eval/ssim_mean"] == pytest.approx(1.0) and exact["eval/sample_std"] == 0.0
    noise = reconstruction_metrics(torch.rand(6, 3, 1, 8, 8) * 2 - 1, x_true)
    assert noise["eval/psnr_sample"] < 10 and noise["eval/ssim_sample"] < 0.3
    assert noise["eval/psnr_mean"] > noise["eval/psnr_sample"]  # averaging samples shrinks the error


@pytest.mark.parametrize("method", ["rtb", "dps"])
def test_evaluation_outputs_and_determinism(prior_state, method):
    rtb = learner(prior_state, method=method)
    first, second = rtb.evaluate(), rtb.evaluate()
    P, n = SMOKE.eval_pairs, SMOKE.eval_samples_per_pair
    assert first.metrics == second.metrics and np.array_equal(first.samples, second.samples)
    assert first.samples.shape == (P * n, 64) and list(first.sample_pairs) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert ("eval/log_z" in first.metrics) == (method == "rtb")
    assert all(math.isfinite(v) for v in first.metrics.values()), first.metrics
    assert first.metrics["eval/true_log_r"] > first.metrics["eval/mean_log_r"]
    assert isinstance(first.figures["reconstructions"], Figure)
    per_pair = json.loads(first.files["per_pair.json"])
    assert len(per_pair["psnr_mean"]) == P
    other = learner(prior_state, seed=1, method=method)  # another seed: other samples, the same held-out pairs
    assert torch.equal(other.eval_pairs()[1], rtb.eval_pairs()[1])


def test_latent_training_and_evaluation(latent_prior_state):
    rtb = ImageInverseLearner(LATENT_SMOKE, seed=0, prior_state=latent_prior_state)
    metrics, batch = rtb.train(2)
    assert batch.x.shape == (2 * LATENT_SMOKE.batch_size, 64 + 256) and math.isfinite(metrics["train/loss"])
    evaluation = rtb.evaluate()
    assert evaluation.samples.shape == (LATENT_SMOKE.eval_pairs * LATENT_SMOKE.eval_samples_per_pair, 256)
    assert np.abs(evaluation.samples).max() <= 1  # decoded images


# ---------------------------------------------------------------- checkpointing


def test_state_dict_round_trip_continues_bit_identically(prior_state):
    rtb = learner(prior_state, samples_per_y=2)
    rtb.train(2)
    state = rtb.state_dict()
    metrics, batch = rtb.train(2)
    restored = ImageInverseLearner.from_state_dict(state)
    assert restored.step == 2
    metrics_restored, batch_restored = restored.train(2)
    assert metrics == metrics_restored and np.array_equal(batch.x, batch_restored.x)
    for (name, p), q in zip(rtb.posterior.state_dict().items(), restored.posterior.state_dict().values()):
        assert torch.equal(p, q), name
    assert all(torch.equal(p, q) for p, q in zip(rtb.log_z.parameters(), restored.log_z.parameters()))
    assert rtb.evaluate().metrics == restored.evaluate().metrics
