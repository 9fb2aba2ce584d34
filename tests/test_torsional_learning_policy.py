"""Molecular graphs, the torsion policy and the conditional log Z: shapes on a mixed batch (propane + anisole),
batching / permutation consistency, invariance of the features to the local structure's own torsions,
gradients, and the zero-initialized policy's exact bookkeeping through the real network."""

import math

import numpy as np
import pytest
import torch

from workloads.objectives import tb_loss
from workloads.torsional.conformer import set_torsions
from workloads.torsional.features import ANGLE_DIM, ATOM_DIM, BOND_DIM, collate, graph_from_molecule
from workloads.torsional.molecule import load_molecule
from workloads.torsional.policy import ConditionalLogZ, TorsionPolicy
from workloads.torsional.torus import LOG_2PI, Exploration, sample_trajectories


@pytest.fixture(scope="module")
def molecules():
    return [load_molecule("CCC"), load_molecule("COc1ccccc1")]


@pytest.fixture(scope="module")
def graphs(molecules):
    return [graph_from_molecule(m.mol, m.positions(), m.torsions) for m in molecules]


def _randomized_policy(seed=0):
    torch.manual_seed(seed)
    policy = TorsionPolicy(hidden=32)
    torch.nn.init.normal_(policy.out.weight, std=0.5)  # non-zero drift
    return policy


def test_graph_features(molecules, graphs):
    propane, anisole = graphs
    assert propane.atom_features.shape == (11, ATOM_DIM) and anisole.atom_features.shape == (16, ATOM_DIM)
    assert propane.bond_index.shape == (2, 20) and propane.bond_features.shape == (20, BOND_DIM)  # 10 bonds x 2
    assert propane.angle_index.shape == (2, 36) and propane.angle_features.shape == (36, ANGLE_DIM)  # 18 angles x 2
    assert propane.torsions.shape == (2, 4) and anisole.torsions.shape == (2, 4)
    pos = molecules[0].positions()
    i, j = propane.bond_index
    assert np.allclose(propane.bond_features[:, 7].numpy() + 1.4, np.linalg.norm(pos[i] - pos[j], axis=-1), atol=1e-5)
    assert propane.atom_features[:, :11].sum(1).eq(1).all()  # element one-hot


def test_features_ignore_the_local_structures_own_torsions(molecules, graphs):
    """Bond lengths and angles are invariant to torsion rotations: so is the graph (only positions change)."""
    m = molecules[1]
    moved = set_torsions(m.positions(), m, np.array([[0.3, 2.0]]))[0]
    g0, g1 = graphs[1], graph_from_molecule(m.mol, moved, m.torsions)
    assert not torch.allclose(g0.positions, g1.positions, atol=1e-2)
    for name in ("atom_features", "bond_features", "angle_features"):
        assert torch.allclose(getattr(g0, name), getattr(g1, name), atol=1e-4), name


def test_collate_offsets_and_graph_indices(graphs):
    batch = collate([graphs[0], graphs[1], graphs[0]])
    assert batch.num_graphs == 3 and batch.num_atoms == 11 + 16 + 11 and batch.num_torsions == 6
    assert batch.atom_graph_index.tolist() == [0] * 11 + [1] * 16 + [2] * 11
    assert batch.torsion_graph_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(batch.torsions[2:4], graphs[1].torsions + 11)
    assert torch.equal(batch.bond_index[:, -20:], graphs[0].bond_index + 27)
    assert batch.torsion_graph_index.equal(batch.atom_graph_index[batch.torsions[:, 1]])
    nested = collate([collate([graphs[0], graphs[1]]), graphs[0]])  # a batch of batches is the same batch
    assert nested.torsion_graph_index.equal(batch.torsion_graph_index) and torch.equal(nested.torsions, batch.torsions)


def test_policy_shapes_bounds_and_log_z_on_a_mixed_batch(graphs):
    policy = _randomized_policy()
    batch = collate([graphs[0], graphs[1]])
    x = torch.rand(5, 4) * 2 * math.pi  # [P, M]
    mu = policy(batch, x, torch.arange(5), 20)
    assert mu.shape == (5, 4) and torch.isfinite(mu).all() and mu.abs().max() <= math.pi
    assert mu.std() > 1e-3  # depends on the inputs
    assert ConditionalLogZ()(batch).shape == (2,)


def test_same_molecule_alone_or_in_a_batch_gives_the_same_outputs(graphs):
    policy, log_z_net = _randomized_policy(1), ConditionalLogZ()
    torch.manual_seed(0)
    x = torch.rand(3, 4) * 2 * math.pi  # [P, M] propane's 2 torsions, then anisole's 2
    k = torch.tensor([0, 7, 19])
    both = policy(collate(graphs), x, k, 20)  # [3, 4]
    alone = torch.cat([policy(graphs[0], x[:, :2], k, 20), policy(graphs[1], x[:, 2:], k, 20)], dim=1)
    swapped = policy(collate(graphs[::-1]), x[:, [2, 3, 0, 1]], k, 20)[:, [2, 3, 0, 1]]
    assert torch.allclose(both, alone, atol=1e-5) and torch.allclose(both, swapped, atol=1e-5)
    lz = log_z_net(collate(graphs))
    assert torch.allclose(lz, torch.cat([log_z_net(graphs[0]), log_z_net(graphs[1])]), atol=1e-5)
    assert torch.allclose(lz, log_z_net(collate(graphs[::-1])).flip(0), atol=1e-5)


def test_policy_sees_the_torsion_angles_and_the_local_structure(molecules, graphs):
    policy = _randomized_policy(2)
    x = torch.tensor([[0.5, 1.0], [0.5, 2.5], [2.0, 1.0]])  # [P, M]: change either torsion
    k = torch.zeros(3, dtype=torch.long)
    mu = policy(graphs[0], x, k, 20)
    assert (mu[0] - mu[1]).abs().min() > 1e-4 and (mu[0] - mu[2]).abs().min() > 1e-4  # neighbours' angles reach
    m = molecules[0]
    stretched = m.positions().copy()
    stretched[m.torsions[0, 2]] += 0.05 * (stretched[m.torsions[0, 2]] - stretched[m.torsions[0, 1]])
    mu2 = policy(graph_from_molecule(m.mol, stretched, m.torsions), x, k, 20)
    assert (mu - mu2).abs().max() > 1e-5


def test_gradients_flow_through_tb_with_learned_log_z(graphs):
    policy, log_z_net = _randomized_policy(3), ConditionalLogZ()
    batch = collate([graphs[0], graphs[1], graphs[1]])
    calls = []
    policy.encoder.register_forward_hook(lambda *a: calls.append(1))
    traj = sample_trajectories(
        policy.drift_fn(batch, 6), batch.torsion_graph_index, 3, 6, Exploration(), torch.Generator().manual_seed(0)
    )
    assert len(calls) == 1  # one graph encoding for all steps, sampling and log PF
    log_r = torch.zeros(3).index_add_(0, batch.torsion_graph_index, traj.terminal.cos())  # [B] a toy log R
    tb_loss(traj.log_pf, traj.log_pb, log_r, log_z_net(batch)).backward()
    for name, p in [*policy.named_parameters(), *log_z_net.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_untrained_policy_is_the_zero_drift_process(graphs):
    """Zero-initialized head: mu = 0, so log PB - log PF = K_b log 2 pi on every trajectory of a mixed batch."""
    torch.manual_seed(0)
    policy = TorsionPolicy(hidden=32)
    batch = collate([graphs[0], graphs[1], graphs[0]])
    traj = sample_trajectories(
        policy.drift_fn(batch, 20), batch.torsion_graph_index, 3, 20, None, torch.Generator().manual_seed(0)
    )
    assert torch.allclose(traj.log_pb - traj.log_pf, torch.full((3,), 2 * LOG_2PI), atol=1e-3)
    assert traj.dense().shape == (3, 21, 2)


def test_untrained_score_drift_is_the_clipped_langevin_step(graphs):
    """score_drift, untrained (f = 0, lambda = 1): mu = pi tanh(sigma_k^2 v0 / (v0 + c_k) clip(s, +-1 / sigma_k) / pi)
    with c_k = sum_{j >= k} sigma_j^2, and the score enters through score_fn at the angles the drift is asked about."""
    torch.manual_seed(0)
    policy = TorsionPolicy(hidden=32, score_drift=True, basin_variance=0.05)
    batch = collate([graphs[0], graphs[1]])
    seen = []

    def score_fn(x, k):  # a toy score with large and small entries: s = 40 sin(x) + 3
        seen.append(x.clone())
        return 40.0 * x.sin() + 3.0

    drift = policy.drift_fn(batch, 20, score_fn)
    x = torch.rand(20, 4) * 2 * math.pi
    k = torch.arange(20)
    mu = drift(x, k)
    sigma = (math.pi * 0.01 ** (k / 19.0))[:, None]  # [S, 1]
    c = torch.tensor([float((sigma[j:] ** 2).sum()) for j in range(20)])[:, None]
    s = torch.clamp(40.0 * x.sin() + 3.0, min=-1 / sigma, max=1 / sigma)
    assert torch.allclose(mu, math.pi * torch.tanh(sigma**2 * 0.05 / (0.05 + c) * s / math.pi), atol=1e-5)
    assert len(seen) == 1 and torch.equal(seen[0], x)
    assert (s.abs() < 1 / sigma - 1e-3).any() and (s.abs() > 1 / sigma - 1e-6).any()  # both regimes are tested
    with pytest.raises(AssertionError, match="score_fn"):
        policy.drift_fn(batch, 20)


@pytest.mark.parametrize("learn_std", [False, True])
def test_forward_std_is_the_reversal_of_a_noising_step_from_a_basin(graphs, learn_std):
    """std_basin_variance v0: PF's std is sigma_k sqrt((v0 + c_{k+1}) / (v0 + c_k)) (c_S = 0), narrower than PB's
    at the first steps and ~PB's at the last; a learned multiplier starts at 1 and then moves it, within exp(+-1)."""
    torch.manual_seed(0)
    v0, S = 0.04, 20
    policy = TorsionPolicy(hidden=32, std_basin_variance=v0, learn_std=learn_std)
    batch = collate([graphs[0], graphs[1]])
    x = torch.rand(S, 4) * 2 * math.pi
    mu, r = policy.drift_fn(batch, S)(x, torch.arange(S))
    sigma2 = (math.pi * 0.01 ** (torch.arange(S, dtype=torch.float64) / (S - 1))) ** 2
    c = sigma2.flip(0).cumsum(0).flip(0)  # c_k
    c_next = torch.cat([c[1:], torch.zeros(1, dtype=torch.float64)])
    expected = ((v0 + c_next) / (v0 + c)).sqrt()
    assert torch.allclose(r.double().expand(S, 4), expected[:, None].expand(S, 4), rtol=1e-5)
    assert expected[0] < 0.8 and expected[-1] > 0.97
    if learn_std:
        torch.nn.init.normal_(policy.log_std_out.weight, std=5.0)
        _, moved = policy.drift_fn(batch, S)(x, torch.arange(S))
        ratio = moved / r
        assert (ratio - 1).abs().max() > 0.1 and ratio.max() <= math.e + 1e-4 and ratio.min() >= 1 / math.e - 1e-4
