"""Metrics: log Z estimators on known weights; exact W2 by assignment."""
import math

import numpy as np
import torch

from workloads.samplers.metrics import log_z_metrics, log_z_reweighted, w2


def test_log_z_metrics():
    log_w = torch.full((100,), -0.5)
    m = log_z_metrics(log_w, log_z=0.0)
    assert math.isclose(m["elbo"], -0.5, abs_tol=1e-6) and math.isclose(m["delta_log_z"], 0.5, abs_tol=1e-6)
    assert math.isclose(m["delta_log_z_rw"], 0.5, abs_tol=1e-6)
    log_w = torch.tensor([0.0, math.log(3.0)])  # mean of weights = 2
    assert math.isclose(log_z_reweighted(log_w), math.log(2.0), rel_tol=1e-6)
    assert log_z_metrics(log_w, 0.0)["elbo"] <= log_z_reweighted(log_w)  # Jensen


def test_w2_self_zero_and_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)) * 3
    assert w2(x, x) == 0.0
    assert w2(x, x[rng.permutation(300)]) < 1e-12
    shift = np.array([3.0, -4.0])
    assert math.isclose(w2(x, x + shift), 5.0, rel_tol=1e-9)  # a translation is optimal as identity
    assert math.isclose(w2(torch.from_numpy(x), torch.from_numpy(x + shift)), 5.0, rel_tol=1e-9)


def test_w2_two_points():
    x = np.array([[0.0, 0.0], [10.0, 0.0]])
    y = np.array([[10.0, 1.0], [0.0, 1.0]])  # optimal pairing crosses the index order
    assert math.isclose(w2(x, y), 1.0)
