"""Loss properties: TB zero at the optimum and non-negative; VarGrad is the batch variance of log w;
SubTB over a single step is TB, and over whole trajectories with lambda -> inf tends to TB; PIS is
the mean of -log w. (SubTB / FL-SubTB / PIS in depth: test_samplers_objectives.py.)"""
import torch

from workloads.samplers.losses import boundary_log_flows, pis_loss, subtb_loss, tb_loss, vargrad_loss


def _batch(seed=0, B=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, generator=g) * 5, torch.randn(B, generator=g) * 5, torch.randn(B, generator=g) * 5


def test_tb_zero_at_optimum_and_nonnegative():
    log_pf, log_pb, _ = _batch()
    log_z = torch.tensor(2.3)
    log_reward = log_z + log_pf - log_pb  # PF Z = R PB exactly
    assert tb_loss(log_pf, log_pb, log_reward, log_z).abs() < 1e-10
    for seed in range(20):
        a, b, c = _batch(seed)
        assert tb_loss(a, b, c, torch.randn(())) >= 0


def test_tb_value_and_log_z_gradient():
    log_pf, log_pb, log_reward = _batch(1)
    log_z = torch.tensor(0.7, requires_grad=True)
    loss = tb_loss(log_pf, log_pb, log_reward, log_z)
    delta = log_z.detach() + log_pf - log_pb - log_reward
    assert torch.allclose(loss, (delta**2).mean())
    loss.backward()
    assert torch.allclose(log_z.grad, 2 * delta.mean())


def test_vargrad_is_variance_and_minimum_of_tb_over_log_z():
    log_pf, log_pb, log_reward = _batch(2)
    zeta = log_reward + log_pb - log_pf
    v = vargrad_loss(log_pf, log_pb, log_reward)
    assert torch.allclose(v, zeta.var(unbiased=False))
    assert torch.allclose(v, tb_loss(log_pf, log_pb, log_reward, zeta.mean()))  # TB at its optimal log Z
    assert vargrad_loss(log_pf, log_pb, log_reward + 3.0) - v < 1e-4  # invariant to log Z
    assert vargrad_loss(log_pf, log_pb, log_pf - log_pb + 1.5).abs() < 1e-10
    for seed in range(10):
        assert vargrad_loss(*_batch(seed)) >= 0


def test_subtb_reduces_to_tb():
    """T = 1: the only subtrajectory is the whole one, log F(x_0) = log Z, log F(x_1) = log R. Any T with
    lambda -> inf: the whole trajectory (j - i = T) dominates the weights."""
    log_pf, log_pb, log_reward = _batch(3)
    log_z = torch.tensor(0.4)
    tb = tb_loss(log_pf, log_pb, log_reward, log_z)
    one_step = boundary_log_flows(torch.zeros(32, 0), log_z, log_reward)  # [B, 2]
    for lamda in (0.5, 2.0):
        assert torch.allclose(subtb_loss(log_pf[:, None], log_pb[:, None], one_step, lamda), tb)
    g = torch.Generator().manual_seed(4)
    pf_steps, pb_steps = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g)
    flows = boundary_log_flows(torch.randn(32, 5, generator=g), log_z, log_reward)
    tb = tb_loss(pf_steps.sum(-1), pb_steps.sum(-1), log_reward, log_z)
    assert torch.allclose(subtb_loss(pf_steps, pb_steps, flows, 1e6), tb, rtol=1e-4)


def test_pis_is_minus_mean_log_weight():
    log_pf, log_pb, log_reward = _batch(5)
    assert torch.allclose(pis_loss(log_pf, log_pb, log_reward), -(log_reward + log_pb - log_pf).mean())
