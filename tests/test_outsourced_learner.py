"""OutsourcedLearner on the 2-d case: the smoke config's evaluation and checkpoint round trip, and a short run that
moves the noise-space sampler's data-space mode masses towards the exact posterior of the fitted flow."""

import io
import json
import math

import numpy as np
import pytest
import torch

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.grid import fitted_flow_state
from workloads.outsourced.learner import OutsourcedLearner, generator_state

SMALL = OutsourcedConfig(flow={"fit_iters": 1500}, reference_samples=40_000, eval_samples=2_000)
SMALL = SMALL.model_copy(update={"sampler": SMALL.sampler.model_copy(update={"num_steps": 20, "batch_size": 200})})
"""T = 20, batch 200, a flow fitted for 1,500 steps (~12 s on one thread)."""


@pytest.fixture(scope="module")
def flow_state() -> dict:
    return fitted_flow_state(SMALL)


def test_smoke_evaluates_and_round_trips(flow_state):
    config = SMALL.smoke()
    learner = OutsourcedLearner(config, seed=2, generator_state=flow_state)
    metrics, terminals = learner.train(3)
    assert learner.step == 3 and terminals.x.shape == (3 * 64, 2) and all(map(math.isfinite, metrics.values()))
    ev = learner.evaluate(300)
    assert ev.samples.shape == (300, 2) and set(ev.figures) == {"noise_samples", "data_samples", "mode_masses"}
    for name in ("eval/tv_to_exact", "eval/w2_data", "eval/mean_log_r", "eval/log_z_mc", "eval/delta_log_z"):
        assert math.isfinite(ev.metrics[name]), name
    assert sum(json.loads(ev.files["mode_masses.json"])["sampler"]) == pytest.approx(1.0)
    state = learner.state_dict()
    after_a, _ = learner.train(3)
    restored = OutsourcedLearner.from_state_dict(state, config)
    after_b, _ = restored.train(3)
    assert after_a == after_b and restored.step == 6
    assert learner.evaluate(300).metrics == restored.evaluate(300).metrics


def test_the_fitted_flow_is_deterministic_and_near_the_data(flow_state):
    assert flow_state["fit"]["nll"] < 4.34 + 0.15  # the grid's entropy is 4.34 nats
    again = fitted_flow_state(SMALL.model_copy(update={"flow": SMALL.flow.model_copy(update={"fit_iters": 10})}))
    first = fitted_flow_state(SMALL.model_copy(update={"flow": SMALL.flow.model_copy(update={"fit_iters": 10})}))
    assert all(torch.equal(first["flow"][k], again["flow"][k]) for k in first["flow"])


def test_a_short_run_moves_towards_the_exact_posterior(flow_state):
    """Recorded (seeds 0 / 1): 600 iterations take the TV between the data-space mode masses and the exact
    posterior's from 0.495 / 0.499 (N(0, I) pushed through f) to 0.242 / 0.212, the ELBO gap from 3.35 / 3.48 to
    0.70 / 0.71 nats and the mean log r from -3.4 / -3.5 to 0.38 / 0.28."""
    config = SMALL.model_copy(update={"total_iters": 600})
    learner = OutsourcedLearner(config, seed=0, generator_state=flow_state)
    before = learner.evaluate().metrics
    learner.train(600)
    after = learner.evaluate().metrics
    assert before["eval/tv_to_exact"] > 0.4
    assert after["eval/tv_to_exact"] < before["eval/tv_to_exact"] - 0.2, (before, after)
    assert after["eval/delta_log_z"] < before["eval/delta_log_z"] - 1.5, (before, after)
    assert after["eval/mean_log_r"] > before["eval/mean_log_r"] + 2.0
    assert np.isfinite(after["eval/w2_data"]) and after["eval/w2_data"] < before["eval/w2_data"]


def test_annealed_beta_trains_replays_at_the_current_beta_and_evaluates_at_beta(flow_state):
    from workloads.samplers.config import ReplayConfig
    from workloads.samplers.replay import TerminalBatch

    config = SMALL.smoke().model_copy(update={"beta": 2.0, "beta_start": 0.5, "beta_anneal_iters": 4})
    config = config.model_copy(
        update={"sampler": config.sampler.model_copy(update={"replay": ReplayConfig(enabled=True)})}
    )
    learner = OutsourcedLearner(config, seed=0, generator_state=flow_state)
    z = torch.randn(64, 2)
    stale = TerminalBatch(z.numpy(), np.full(64, 1e6, dtype=np.float32))  # log R far from any beta's
    seen = []
    original = learner.sampler._loss
    learner.sampler._loss = lambda traj, log_r: (seen.append(log_r.max().item()), original(traj, log_r))[1]
    learner.train(4, stale)
    assert max(seen) < 1e3  # the replayed states' log R were recomputed, not read
    assert learner.target.current_beta == 2.0  # back at beta after training
    with pytest.raises(ValueError, match="beta_start"):
        OutsourcedConfig(beta_anneal_iters=10)


@pytest.fixture(scope="module")
def digits_config() -> OutsourcedConfig:
    # The smoke VAE (50 iterations) decodes blurs the classifier cannot tell apart; 600 iterations make digits.
    config = OutsourcedConfig(generator="vae_digits", target_class=0).smoke()
    vae = config.vae.model_copy(update={"train_iters": 600})
    return config.model_copy(update={"vae": vae, "reference_samples": 20_000})


@pytest.fixture(scope="module")
def digits_generator_state(digits_config) -> dict:
    return generator_state(digits_config)


def test_digits_problem_evaluates_against_its_exact_posterior_and_round_trips(digits_config, digits_generator_state):
    """The VAE decoder as f and the digits classifier as r: the exact posterior samples (reference draws resampled by
    r) are mostly the target set's and nearer the class's data than N(0, I) pushed through f."""
    learner = OutsourcedLearner(digits_config, seed=0, generator_state=digits_generator_state)
    assert learner.target.dim == 16 and learner.generator_fit["classifier_heldout_accuracy"] > 0.9
    ev = learner.evaluate(400)
    m = ev.metrics
    assert m["eval/exact_target_accuracy"] > 0.6 and m["eval/exact_target_accuracy"] > m["eval/target_accuracy"] + 0.4
    assert m["eval/exact_mean_log_r"] > m["eval/mean_log_r"] + 0.3
    assert m["eval/exact_fd"] < m["eval/fd"]
    assert 0 <= m["eval/class_coverage"] <= 1 and 0 <= m["eval/class_tv_to_exact"] <= 1
    assert {"samples", "exact_samples", "noise_marginals"} <= set(ev.figures) and "images.npz" in ev.files
    images = np.load(io.BytesIO(ev.files["images.npz"]))["images"]
    assert images.shape == (400, 1, 8, 8)
    learner.train(4)
    assert m["eval/reward_evaluations"] == 0 and learner.reward_evaluations == 4 * 64
    state = learner.state_dict()
    after_a, _ = learner.train(2)
    restored = OutsourcedLearner.from_state_dict(state, digits_config)
    after_b, _ = restored.train(2)
    assert after_a == after_b and restored.reward_evaluations == learner.reward_evaluations


def test_a_generator_of_another_latent_shape_is_refused(digits_config, digits_generator_state):
    other = digits_config.model_copy(update={"vae": digits_config.vae.model_copy(update={"latent_channels": 2})})
    with pytest.raises(ValueError, match=r"latent shape \[4, 2, 2\].*\[2, 2, 2\]"):
        OutsourcedLearner(other, seed=0, generator_state=digits_generator_state)


def test_a_generator_whose_images_the_reward_cannot_read_is_a_config_error():
    with pytest.raises(ValueError, match=r"shape \[1, 16, 16\].*reads digits images of shape \[1, 8, 8\]"):
        OutsourcedConfig(generator="vae_digits", vae={"image_size": 16})


def test_the_ddim_generator_takes_the_ddpm_noise_as_its_latent():
    """ddim_digits: z = x_K [1, 8, 8] of the (smoke) digits DDPM, f its DDIM ODE; trains, counts and evaluates."""
    config = OutsourcedConfig(generator="ddim_digits", target_class=10).smoke()
    learner = OutsourcedLearner(config.model_copy(update={"reference_samples": 1_000}), seed=0)
    assert learner.target.dim == 64 and config.latent_shape() == [1, 8, 8]
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    x = learner.target.decode(z)
    assert x.shape == (5, 1, 8, 8) and torch.equal(x, learner.target.decode(z))  # deterministic in z
    learner.train(2)
    ev = learner.evaluate(100)
    assert learner.reward_evaluations == 2 * 64 and all(map(math.isfinite, ev.metrics.values()))
    with pytest.raises(ValueError, match=r"prior: the generator draws digits images of shape \[1, 16, 16\]"):
        OutsourcedConfig(generator="ddim_digits", prior={"image_size": 16})


def test_the_color_dsprites_vae_decodes_shapes_for_a_shape_classifier():
    """vae_color_dsprites: z [4, 4, 4] of the (smoke) ColorDSprites VAE, f its decoder to 16 x 16 x 3 images, r a
    classifier of the 3 shapes; trains, counts and evaluates, and its classes are 0-2 and the two sets."""
    config = OutsourcedConfig(generator="vae_color_dsprites", target_class=2).smoke()
    learner = OutsourcedLearner(config.model_copy(update={"reference_samples": 1_000}), seed=0)
    assert learner.target.dim == 64 and config.latent_shape() == [4, 4, 4]
    assert (
        learner.generator_fit["classifier_num_classes"] == 3
        and learner.generator_fit["classifier_heldout_accuracy"] > 0.45
    )
    x = learner.target.decode(torch.randn(5, 64, generator=torch.Generator().manual_seed(1)))
    assert x.shape == (5, 3, 16, 16)
    learner.train(2)
    ev = learner.evaluate(100)
    assert learner.reward_evaluations == 2 * 64 and all(map(math.isfinite, ev.metrics.values()))
    assert np.load(io.BytesIO(ev.files["images.npz"]))["images"].shape == (100, 3, 16, 16)
    assert config.generator_key() != config.model_copy(update={"generator": "vae_digits"}).generator_key()
    OutsourcedConfig(generator="vae_color_dsprites", target_class=4)  # the odd shapes
    with pytest.raises(ValueError, match=r"target_class=5: the color_dsprites classifier has 3 classes"):
        OutsourcedConfig(generator="vae_color_dsprites", target_class=5)
    with pytest.raises(ValueError, match=r"color_dsprites_vae: the generator draws digits images"):
        OutsourcedConfig(generator="vae_color_dsprites", color_dsprites_vae={"dataset": "digits"})


def test_the_benchmark_measures_every_rate(flow_state):
    """orchestrator/families/outsourced/benchmark.py on the smoke sampler: positive rates, and the reward's share
    of an iteration is a fraction (its evaluation is part of the iteration)."""
    from orchestrator.families.outsourced.benchmark import measure

    learner = OutsourcedLearner(SMALL.smoke(), seed=0, generator_state=flow_state)
    figures = measure(learner, iters=3, chains=10, mcmc_steps=2)
    assert all(value > 0 for value in figures.values()) and 0 < figures["reward_share_of_an_iteration"] < 1
    assert figures["sampler_reward_evaluations_per_s"] == pytest.approx(64 * figures["sampler_iterations_per_s"])
