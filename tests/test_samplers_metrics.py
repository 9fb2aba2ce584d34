"""Metrics: log Z estimators on known weights; exact W2 and W1 by assignment."""

import math

import numpy as np
import pytest
import torch

from workloads.samplers.metrics import log_z_metrics, log_z_reweighted, w1, w2


def test_log_z_metrics():
    log_w = torch.full((100,), -0.5)
    m = log_z_metrics(log_w, log_z=0.0)
    assert math.isclose(m["elbo"], -0.5, abs_tol=1e-6) and math.isclose(m["delta_log_z"], 0.5, abs_tol=1e-6)
    assert math.isclose(m["delta_log_z_rw"], 0.5, abs_tol=1e-6)
    log_w = torch.tensor([0.0, math.log(3.0)])  # mean of weights = 2
    assert math.isclose(log_z_reweighted(log_w), math.log(2.0), rel_tol=1e-6)
    assert log_z_metrics(log_w, 0.0)["elbo"] <= log_z_reweighted(log_w)  # Jensen


@pytest.mark.parametrize("distance", [w1, w2], ids=["w1", "w2"])
def test_wasserstein_self_zero_and_shift(distance):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)) * 3
    assert distance(x, x) == 0.0
    assert distance(x, x[rng.permutation(300)]) < 1e-12
    # a translation is optimal as the identity pairing: W1 by the triangle inequality
    # (sum_i ||x_i - y_pi(i)|| >= N ||shift||), W2 by the mean cross term vanishing
    shift = np.array([3.0, -4.0])
    assert math.isclose(distance(x, x + shift), 5.0, rel_tol=1e-9)
    assert math.isclose(distance(torch.from_numpy(x), torch.from_numpy(x + shift)), 5.0, rel_tol=1e-9)


def test_w2_two_points():
    x = np.array([[0.0, 0.0], [10.0, 0.0]])
    y = np.array([[10.0, 1.0], [0.0, 1.0]])  # optimal pairing crosses the index order
    assert math.isclose(w2(x, y), 1.0)


def test_w1_and_w2_choose_different_pairings():
    # x_1 = y_1 = 0 and x_2, y_2 mirror images at distance 2.1 from 0 and 4 from each other:
    # identity pairing: distances (0, 4), W1 cost 2, W2^2 cost 8; crossed: (2.1, 2.1), W1 cost 2.1, W2^2 cost 4.41
    x = np.array([[0.0, 0.0], [math.sqrt(2.1**2 - 4), 2.0]])
    y = np.array([[0.0, 0.0], [math.sqrt(2.1**2 - 4), -2.0]])
    assert math.isclose(w1(x, y), 2.0, rel_tol=1e-12)
    assert math.isclose(w2(x, y), 2.1, rel_tol=1e-12)


def test_w1_between_mean_shift_and_w2():
    rng = np.random.default_rng(1)
    for n, d in ((50, 2), (200, 10)):
        x, y = rng.normal(size=(n, d)), rng.standard_t(3, size=(n, d)) + 0.5
        # ||mean x - mean y|| <= W1 (Jensen, any pairing) and W1 <= W2 (Jensen on W2's optimal pairing)
        assert np.linalg.norm(x.mean(0) - y.mean(0)) <= w1(x, y) <= w2(x, y)


def test_wasserstein_needs_equal_sizes():
    with pytest.raises(AssertionError, match="equal-size"):
        w1(np.zeros((3, 2)), np.zeros((4, 2)))
