"""Properties of the shared objectives (workloads/objectives.py): zero at the optimum (and not off it),
non-negative on random inputs, the vectorised form equal to a plain loop over the batch (and the
subtrajectories), finite gradients equal to the loop's; and the relations between them (VarGrad is TB at
the optimal log Z, SubTB over one step is TB, RTB with the prior as PB is TB, FL-SubTB is SubTB on the
forward-looking flows)."""

import itertools

import pytest
import torch

from workloads.objectives import (
    backtracking_pair_loss,
    boundary_log_flows,
    fl_subtb_loss,
    forward_looking_log_flows,
    pis_loss,
    relative_tb_loss,
    subtb_loss,
    subtb_residuals,
    subtb_weights,
    tb_loss,
    vargrad_loss,
)

SEEDS = range(5)
B, T = 6, 5


def _randn(g, *shape, scale=3.0):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).requires_grad_()


def _batch(seed=0, n=32):
    """(log_pf, log_pb, log_reward) [n] float32, as the samplers' tests have always drawn them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * 5, torch.randn(n, generator=g) * 5, torch.randn(n, generator=g) * 5


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs, allow_unused=True)


def _assert_same_value_and_gradients(vectorised, loop, inputs, rtol=1e-10):
    """Equal values and equal, finite gradients w.r.t. every input that has one (float64 inputs: rtol 1e-10;
    SubTB's weights are float32, so 1e-6 there)."""
    assert torch.allclose(vectorised, loop, rtol=rtol, atol=rtol), (vectorised, loop)
    for gv, gl in zip(_grads(vectorised, inputs), _grads(loop, inputs)):
        assert (gv is None) == (gl is None)
        if gv is not None:
            assert torch.isfinite(gv).all() and torch.allclose(gv, gl, rtol=rtol, atol=rtol)


# ---------------------------------------------------------------- plain-loop references
def _tb_loop(log_pf, log_pb, log_reward, log_z):
    log_z = log_z.expand(len(log_pf))
    return sum((log_z[b] + log_pf[b] - log_pb[b] - log_reward[b]) ** 2 for b in range(len(log_pf))) / len(log_pf)


def _vargrad_loop(log_pf, log_pb, log_reward, groups=None):
    """Each zeta_b centred on the mean of zeta over the batch (with its gradient, as vargrad_loss by default),
    or, given groups, on the detached mean over its own group."""
    n = len(log_pf)
    zeta = [log_reward[b] + log_pb[b] - log_pf[b] for b in range(n)]
    total = 0.0
    for b in range(n):
        if groups is None:
            log_z_hat = sum(zeta) / n
        else:
            members = [zeta[b2].detach() for b2 in range(n) if groups[b2] == groups[b]]
            log_z_hat = sum(members) / len(members)
        total = total + (zeta[b] - log_z_hat) ** 2
    return total / n


def _rtb_loop(log_p_post, log_p_prior, log_reward, log_z, beta):
    n = len(log_p_post)
    return sum((log_z + log_p_post[b] - log_p_prior[b] - beta * log_reward[b]) ** 2 for b in range(n)) / n


def _pis_loop(log_pf, log_pb, log_reward):
    return sum(log_pf[b] - log_pb[b] - log_reward[b] for b in range(len(log_pf))) / len(log_pf)


def _subtb_loop(log_pf_steps, log_pb_steps, log_flows, lamda):
    """mean_b sum_{i<j} lambda^{j-i} (log F_i + sum_{i<=l<j} (log PF_l - log PB_l) - log F_j)^2 / sum lambda^{j-i}."""
    n, T_ = log_pf_steps.shape
    pairs = [(i, j) for i in range(T_ + 1) for j in range(i + 1, T_ + 1)]
    norm = sum(lamda ** (j - i) for i, j in pairs)
    total = 0.0
    for b in range(n):
        for i, j in pairs:
            resid = log_flows[b, i] - log_flows[b, j]
            for step in range(i, j):
                resid = resid + log_pf_steps[b, step] - log_pb_steps[b, step]
            total = total + lamda ** (j - i) * resid**2 / norm
    return total / n


def _fl_subtb_loop(log_pf_steps, log_pb_steps, log_f_tilde, log_r_tilde, log_z, log_reward, lamda):
    n, T_ = log_pf_steps.shape
    flows = [
        [log_z] + [log_r_tilde[b, i - 1] + log_f_tilde[b, i - 1] for i in range(1, T_)] + [log_reward[b]]
        for b in range(n)
    ]
    return _subtb_loop(log_pf_steps, log_pb_steps, torch.stack([torch.stack(f) for f in flows]), lamda)


# ---------------------------------------------------------------- balanced inputs
def _balanced_flows(g):
    """Per-step log PF, log PB [B, T] and flows [B, T+1] with every subtrajectory balanced: log F_0 = log Z,
    log F_{i+1} = log F_i + log PF_i - log PB_i; log R = log F_T."""
    log_pf_steps, log_pb_steps = _randn(g, B, T), _randn(g, B, T)
    log_z = _randn(g)
    cum = (log_pf_steps - log_pb_steps).detach().cumsum(-1)  # [B, T]
    log_flows = torch.cat([log_z.detach().expand(B, 1), log_z.detach() + cum], dim=1)  # [B, T+1]
    return log_pf_steps, log_pb_steps, log_flows, log_z


# ---------------------------------------------------------------- TB
@pytest.mark.parametrize("seed", SEEDS)
def test_tb_properties(seed):
    g = torch.Generator().manual_seed(seed)
    log_pf, log_pb, log_reward, log_z = _randn(g, B), _randn(g, B), _randn(g, B), _randn(g)
    loss = tb_loss(log_pf, log_pb, log_reward, log_z)
    assert loss >= 0
    _assert_same_value_and_gradients(
        loss, _tb_loop(log_pf, log_pb, log_reward, log_z), (log_pf, log_pb, log_reward, log_z)
    )
    balanced = (log_z + log_pf - log_pb).detach()  # PF Z = R PB exactly
    assert tb_loss(log_pf, log_pb, balanced, log_z) < 1e-24
    assert tb_loss(log_pf, log_pb, balanced + 0.1 * torch.eye(B, dtype=balanced.dtype)[seed % B], log_z) > 1e-4
    log_z_cond = _randn(g, B)  # a conditional log Z(c_b)
    _assert_same_value_and_gradients(
        tb_loss(log_pf, log_pb, log_reward, log_z_cond),
        _tb_loop(log_pf, log_pb, log_reward, log_z_cond),
        (log_pf, log_z_cond),
    )


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


# ---------------------------------------------------------------- VarGrad
@pytest.mark.parametrize("seed", SEEDS)
def test_vargrad_properties(seed):
    g = torch.Generator().manual_seed(seed)
    log_pf, log_pb, log_reward = _randn(g, B), _randn(g, B), _randn(g, B)
    loss = vargrad_loss(log_pf, log_pb, log_reward)
    assert loss >= 0
    _assert_same_value_and_gradients(loss, _vargrad_loop(log_pf, log_pb, log_reward), (log_pf, log_pb, log_reward))
    c = torch.randn((), generator=g, dtype=torch.float64)  # any log Z: VarGrad needs none
    balanced = (log_pf - log_pb).detach() + c
    assert vargrad_loss(log_pf, log_pb, balanced) < 1e-24
    assert vargrad_loss(log_pf, log_pb, balanced + 0.1 * torch.eye(B, dtype=balanced.dtype)[seed % B]) > 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_vargrad_centred_per_group(seed):
    """log_z_hat = the detached per-group mean of zeta, gathered to [B] (the torsional family's conditional
    VarGrad): the loop centres each trajectory on its own group's mean; zero when each group is balanced with
    its own log Z, not when one trajectory is off."""
    g = torch.Generator().manual_seed(seed)
    log_pf, log_pb, log_reward = _randn(g, B), _randn(g, B), _randn(g, B)
    groups = torch.tensor([0, 1, 0, 2, 1, 0])
    zeta = (log_reward + log_pb - log_pf).detach()  # [B]
    counts = torch.zeros(3, dtype=zeta.dtype).index_add_(0, groups, torch.ones_like(zeta))
    zeta_mean = torch.zeros(3, dtype=zeta.dtype).index_add_(0, groups, zeta) / counts  # [U]
    loss = vargrad_loss(log_pf, log_pb, log_reward, zeta_mean[groups])
    assert loss >= 0
    _assert_same_value_and_gradients(
        loss, _vargrad_loop(log_pf, log_pb, log_reward, groups.tolist()), (log_pf, log_pb, log_reward)
    )
    balanced = (log_pf - log_pb).detach() + torch.randn(3, generator=g, dtype=torch.float64)[groups]  # log Z per group
    zeta = balanced + (log_pb - log_pf).detach()
    zeta_mean = torch.zeros(3, dtype=zeta.dtype).index_add_(0, groups, zeta) / counts
    assert vargrad_loss(log_pf, log_pb, balanced, zeta_mean[groups]) < 1e-24
    assert vargrad_loss(log_pf, log_pb, balanced) > 1e-4  # one log Z for all groups is not balanced


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


def test_vargrad_default_is_the_batch_mean():
    log_pf, log_pb, log_reward = _batch(6)
    zeta = log_reward + log_pb - log_pf
    assert torch.equal(vargrad_loss(log_pf, log_pb, log_reward), vargrad_loss(log_pf, log_pb, log_reward, zeta.mean()))
    assert vargrad_loss(log_pf, log_pb, log_reward, zeta.mean() + 1.0) > vargrad_loss(log_pf, log_pb, log_reward)


# ---------------------------------------------------------------- RTB
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", (1.0, 0.3))
def test_relative_tb_properties(seed, beta):
    g = torch.Generator().manual_seed(seed)
    log_p_post, log_p_prior, log_r, log_z = _randn(g, B), _randn(g, B), _randn(g, B), _randn(g)
    loss = relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, beta)
    assert loss >= 0
    _assert_same_value_and_gradients(
        loss, _rtb_loop(log_p_post, log_p_prior, log_r, log_z, beta), (log_p_post, log_p_prior, log_r, log_z)
    )
    post = (log_p_prior + beta * log_r - log_z).detach()  # p_post Z = p_prior r^beta exactly
    assert relative_tb_loss(post, log_p_prior, log_r, log_z, beta) < 1e-24
    assert relative_tb_loss(post, log_p_prior, log_r, log_z, beta + 0.5) > 1e-4  # beta enters
    # with the prior in the role of PB (and beta = 1) RTB is TB
    assert torch.allclose(
        relative_tb_loss(log_p_post, log_p_prior, log_r, log_z),
        tb_loss(log_p_post, log_p_prior, log_r, log_z),
        rtol=1e-12,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_backtracking_pair_loss_drops_what_a_pair_shares(seed):
    """Rows b and B + b share their start: a per-pair constant on both (the start's log p_post(x_s) / p_prior(x_s),
    log Z) leaves the loss unchanged; pairs balanced up to such a constant have zero loss; the clip subtracts c."""
    g = torch.Generator().manual_seed(seed)
    log_p_post, log_p_prior, log_r = _randn(g, 2 * B), _randn(g, 2 * B), _randn(g, 2 * B)
    shared = _randn(g, B).repeat(2)  # [2B]: one constant per pair, on both members
    loss = backtracking_pair_loss(log_p_post, log_p_prior, log_r, beta=0.5)
    residual = log_p_post - log_p_prior - 0.5 * log_r
    assert torch.allclose(loss, (residual[:B] - residual[B:]).pow(2).mean(), rtol=1e-12)
    assert torch.allclose(backtracking_pair_loss(log_p_post + shared, log_p_prior, log_r, beta=0.5), loss, rtol=1e-12)
    balanced = (log_p_prior + 0.5 * log_r + shared).detach()  # Delta = beta log r - const on every row
    assert backtracking_pair_loss(balanced, log_p_prior, log_r, beta=0.5) < 1e-24
    assert backtracking_pair_loss(balanced, log_p_prior, log_r, beta=1.0) > 1e-4  # beta enters
    clipped = backtracking_pair_loss(log_p_post, log_p_prior, log_r, beta=0.5, threshold=0.1)
    assert torch.allclose(clipped, torch.relu((residual[:B] - residual[B:]).pow(2) - 0.1).mean(), rtol=1e-12)


# ---------------------------------------------------------------- PIS
@pytest.mark.parametrize("seed", SEEDS)
def test_pis_properties(seed):
    """Not a square: at the optimum PF = PB R / Z every trajectory gives -log Z (the minimum of its
    expectation, KL - log Z), and only then is the loss the same on every batch."""
    g = torch.Generator().manual_seed(seed)
    log_pf, log_pb, log_reward = _randn(g, B), _randn(g, B), _randn(g, B)
    _assert_same_value_and_gradients(
        pis_loss(log_pf, log_pb, log_reward), _pis_loop(log_pf, log_pb, log_reward), (log_pf, log_pb, log_reward)
    )
    log_z = torch.randn((), generator=g, dtype=torch.float64)
    optimal = (log_pf - log_pb + log_z).detach()  # log R = log PF - log PB + log Z
    assert torch.allclose(pis_loss(log_pf, log_pb, optimal), -log_z, rtol=1e-12)
    per_trajectory = [pis_loss(log_pf[b : b + 1], log_pb[b : b + 1], optimal[b : b + 1]) for b in range(B)]
    assert torch.allclose(torch.stack(per_trajectory), -log_z.expand(B), rtol=1e-12)
    off = optimal + 0.1 * torch.eye(B, dtype=optimal.dtype)[seed % B]  # one trajectory off the optimum
    assert not torch.allclose(pis_loss(log_pf, log_pb, off), -log_z, rtol=1e-6)


def test_pis_is_minus_mean_log_weight():
    log_pf, log_pb, log_reward = _batch(5)
    assert torch.allclose(pis_loss(log_pf, log_pb, log_reward), -(log_reward + log_pb - log_pf).mean())


# ---------------------------------------------------------------- SubTB
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lamda", (2.0, 1.0, 0.7))
def test_subtb_properties(seed, lamda):
    g = torch.Generator().manual_seed(seed)
    log_pf_steps, log_pb_steps, log_flows = _randn(g, B, T), _randn(g, B, T), _randn(g, B, T + 1)
    loss = subtb_loss(log_pf_steps, log_pb_steps, log_flows, lamda)
    assert loss >= 0
    _assert_same_value_and_gradients(
        loss,
        _subtb_loop(log_pf_steps, log_pb_steps, log_flows, lamda),
        (log_pf_steps, log_pb_steps, log_flows),
        rtol=1e-6,
    )
    log_pf_steps, log_pb_steps, balanced, _ = _balanced_flows(g)
    assert subtb_loss(log_pf_steps, log_pb_steps, balanced, lamda) < 1e-24
    off = balanced.detach().clone()
    off[seed % B, 1 + seed % (T - 1)] += 0.1  # one interior flow off
    assert subtb_loss(log_pf_steps, log_pb_steps, off, lamda) > 1e-6


def test_vectorized_subtb_equals_double_loop():
    g = torch.Generator().manual_seed(0)
    B_, T_ = 5, 7
    log_pf, log_pb, log_f = (
        torch.randn(B_, T_, generator=g) * 3,
        torch.randn(B_, T_, generator=g) * 3,
        torch.randn(B_, T_ + 1, generator=g) * 3,
    )
    for lamda in (2.0, 1.0, 0.7):  # float32 against the float64 loop
        expected = _subtb_loop(log_pf.double(), log_pb.double(), log_f.double(), lamda)
        assert torch.allclose(subtb_loss(log_pf, log_pb, log_f, lamda).double(), expected, rtol=1e-5), lamda
    # the residual of (i, j) is the balance of that subtrajectory
    resid = subtb_residuals(log_pf, log_pb, log_f)
    for i, j in itertools.combinations(range(T_ + 1), 2):
        expected = log_f[:, i] + (log_pf - log_pb)[:, i:j].sum(-1) - log_f[:, j]
        assert torch.allclose(resid[:, i, j], expected, atol=1e-5), (i, j)


def test_subtb_weights_are_normalized_lambda_powers_without_overflow():
    w = subtb_weights(4, 2.0)
    assert torch.allclose(w.sum(), torch.tensor(1.0))
    assert torch.all(w.tril() == 0)  # only i < j
    assert torch.allclose(w[0, 3] / w[1, 2], torch.tensor(4.0)) and torch.allclose(w[1, 3], w[2, 4])
    assert torch.isfinite(subtb_weights(300, 2.0)).all()  # 2^300 overflows float32; the log-space softmax does not


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


def test_boundary_log_flows_are_log_z_and_log_r_around_the_interior():
    g = torch.Generator().manual_seed(7)
    interior, log_z, log_r = _randn(g, B, T - 1), _randn(g), _randn(g, B)
    flows = boundary_log_flows(interior, log_z, log_r)  # [B, T+1]
    assert flows.shape == (B, T + 1)
    assert torch.equal(flows[:, 0], log_z.expand(B)) and torch.equal(flows[:, -1], log_r)
    assert torch.equal(flows[:, 1:-1], interior)


# ---------------------------------------------------------------- FL-SubTB
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lamda", (2.0, 0.7))
def test_fl_subtb_properties(seed, lamda):
    g = torch.Generator().manual_seed(seed)
    log_pf_steps, log_pb_steps = _randn(g, B, T), _randn(g, B, T)
    log_f_tilde, log_r_tilde, log_z, log_r = _randn(g, B, T - 1), _randn(g, B, T - 1), _randn(g), _randn(g, B)
    args = (log_pf_steps, log_pb_steps, log_f_tilde, log_r_tilde, log_z, log_r)
    loss = fl_subtb_loss(*args, lamda)
    assert loss >= 0
    _assert_same_value_and_gradients(loss, _fl_subtb_loop(*args, lamda), args, rtol=1e-6)
    # SubTB on the flows log R~ + log F~ between log Z and log R
    flows = boundary_log_flows(log_r_tilde + log_f_tilde, log_z, log_r)
    assert torch.equal(forward_looking_log_flows(log_f_tilde, log_r_tilde, log_z, log_r), flows)
    assert torch.equal(loss, subtb_loss(log_pf_steps, log_pb_steps, flows, lamda))
    # optimum: F~ = F / R~ of balanced flows, for any intermediate reward R~
    log_pf_steps, log_pb_steps, balanced, log_z = _balanced_flows(g)
    exact_f_tilde = (balanced[:, 1:-1] - log_r_tilde).detach().requires_grad_()  # [B, T-1]
    opt = (log_pf_steps, log_pb_steps, exact_f_tilde, log_r_tilde, log_z, balanced[:, -1])
    assert fl_subtb_loss(*opt, lamda) < 1e-24
    grads = _grads(fl_subtb_loss(*opt, lamda), opt[:5])  # all but log R (fixed)
    assert all(torch.isfinite(gr).all() for gr in grads) and grads[2].abs().max() < 1e-10  # a minimum in F~
    assert (
        fl_subtb_loss(log_pf_steps, log_pb_steps, exact_f_tilde + 0.1, log_r_tilde, log_z, balanced[:, -1], lamda)
        > 1e-6
    )
