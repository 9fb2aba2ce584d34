"""Flatness probe (workloads/wcst/flatness.py): every direction has norm exactly r on its own (not normalized
across directions), every parameter receives its own slice of it, and the weights come back untouched."""

import torch
from torch import nn

from workloads.wcst.flatness import loss_increase, trainable_parameters

RADII = (0.0, 0.5, 3.0)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2))


def recorded_perturbations(model: nn.Module, normalization: str, num_directions: int = 5, seed: int = 1):
    """Run the probe with a loss that records each parameter's displacement from the trained weights."""
    theta = [p.detach().clone() for p in trainable_parameters(model)]
    calls = []

    def loss_fn(m: nn.Module) -> float:
        calls.append([p.detach().clone() - t for p, t in zip(trainable_parameters(m), theta)])
        return 0.0

    loss_increase(model, loss_fn, RADII, num_directions, torch.Generator().manual_seed(seed), normalization)
    base, *perturbed = calls
    assert all(float(d.abs().max()) == 0.0 for d in base)
    return theta, [perturbed[i * num_directions : (i + 1) * num_directions] for i in range(len(RADII))]


def test_global_directions_have_norm_r_each_and_each_parameter_its_own_slice():
    model = small_model()
    theta, by_radius = recorded_perturbations(model, "global")
    # The definition, written out independently: d_j ~ N(0, I_P) in parameters() order, delta_j = r d_j / ||d_j||.
    sizes = [t.numel() for t in theta]
    d = torch.randn(5, sum(sizes), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for r, deltas in zip(RADII, by_radius):
        for j, per_parameter in enumerate(deltas):
            flat = torch.cat([delta.flatten() for delta in per_parameter]).double()
            assert abs(float(flat.norm()) - r) <= 1e-5 * max(r, 1.0), (r, j, float(flat.norm()))
            expected = r * d[j] / d[j].norm()
            assert torch.allclose(flat, expected, atol=1e-6), f"parameter slices mismatch at r={r}, direction {j}"
            assert [delta.shape for delta in per_parameter] == [t.shape for t in theta]
    # Directions differ (independent samples), and weights are restored bit for bit.
    assert not torch.allclose(
        torch.cat([x.flatten() for x in by_radius[1][0]]), torch.cat([x.flatten() for x in by_radius[1][1]])
    )
    assert all(torch.equal(p, t) for p, t in zip(trainable_parameters(model), theta))


def test_per_parameter_normalization_gives_every_parameter_slice_norm_r():
    model = small_model()
    _, by_radius = recorded_perturbations(model, "per_parameter")
    for r, deltas in zip(RADII, by_radius):
        for per_parameter in deltas:
            norms = [float(delta.double().norm()) for delta in per_parameter]
            assert all(abs(n - r) <= 1e-5 * max(r, 1.0) for n in norms), (r, norms)


def test_quadratic_bowl_increases_by_exactly_half_r_squared():
    """L(theta) = 1/2 ||theta - theta*||^2 around the trained theta*: every direction of norm exactly r gives
    1/2 r^2, so the mean does too (a radius normalized across directions would scatter it)."""
    model = small_model()
    theta_star = torch.cat([p.detach().flatten() for p in trainable_parameters(model)]).double()

    def bowl(m: nn.Module) -> float:
        theta = torch.cat([p.detach().flatten() for p in trainable_parameters(m)]).double()
        return 0.5 * float(((theta - theta_star) ** 2).sum())

    base, increases = loss_increase(model, bowl, RADII, 16, torch.Generator().manual_seed(3), "global")
    assert base == 0.0
    for r in RADII:
        assert abs(increases[r] - 0.5 * r * r) <= 1e-5 * max(r * r, 1.0), (r, increases[r])
    _, per_parameter = loss_increase(model, bowl, RADII, 4, torch.Generator().manual_seed(3), "per_parameter")
    count = len(trainable_parameters(model))
    assert abs(per_parameter[3.0] - 0.5 * 9.0 * count) <= 1e-4 * 9.0 * count
