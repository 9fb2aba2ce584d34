"""SED's loss (workloads/ensembles/a2d.py): hand-computed values, and the split of its gradient between member
hosts (each side sees its partner's probabilities detached) against the whole loss in one process."""

import math

import pytest
import torch
import torch.nn.functional as F

from workloads.ensembles.a2d import (
    a2d_disagreement,
    below_threshold_weights,
    hard_sample_weights,
    member_loss,
    sed_loss,
)
from workloads.ensembles.config import SEDConfig
from workloads.ensembles.coordinator import Coordinator, select_pairs
from workloads.ensembles.data import Batch
from workloads.ensembles.members import make_host


def test_a2d_hand_values():
    """p = (0.7, 0.3), q = (0.4, 0.6), yhat = 0: -log(0.7 * 0.6 + 0.4 * 0.3) = -log(0.54); exactly one of two
    certain members predicting yhat costs -log(1) = 0; two certain members agreeing cost -log(eps)."""
    p, q = torch.tensor([[0.7, 0.3]]), torch.tensor([[0.4, 0.6]])
    yhat = torch.tensor([0])
    assert a2d_disagreement(p, q, yhat, eps=0.0).item() == pytest.approx(-math.log(0.54), rel=1e-6)
    one_hot, other = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert a2d_disagreement(one_hot, other, yhat, eps=0.0).item() == pytest.approx(0.0, abs=1e-7)
    assert a2d_disagreement(one_hot, one_hot, yhat, eps=1e-6).item() == pytest.approx(-math.log(1e-6), rel=1e-5)


def test_sample_weights_hand_values():
    """Ensemble-mean logits give CE (log 2, log(1 + e^-2)); w = CE / mean(CE)^2. Threshold 0.5: the first sample
    has a member at p(y) = 0.5 (<= 0.5), the second none."""
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]]])  # [A=2, B=2, C=2]
    labels = torch.tensor([0, 0])
    ce = torch.tensor([math.log(2), math.log(1 + math.exp(-2))])
    assert torch.allclose(hard_sample_weights(logits, labels), ce / ce.mean() ** 2)
    assert below_threshold_weights(logits, labels, 0.5).tolist() == [1.0, 0.0]
    # The weights are constants of the step: no gradient flows into them.
    assert not hard_sample_weights(logits.requires_grad_(), labels).requires_grad


def test_member_loss_without_pairs_is_weighted_ce():
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    loss, ce, disagreement = member_loss(logits, labels, [], [], torch.ones(8), 0.25, 1.0, 1e-6)
    assert loss.item() == pytest.approx(0.25 * F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert disagreement.item() == 0.0


def _split_vs_whole(config: SEDConfig, host_members: list[list[int]]) -> tuple[dict, dict, dict]:
    """One step split over hosts (logits gathered, updates sent back, each host backward) and the whole loss's
    gradient in one process on identically initialized members. Returns (split grads, whole grads, CE-only
    whole grads) by member."""
    generator = torch.Generator().manual_seed(0)
    shape = (config.in_channels, config.image_size, config.image_size)
    train = Batch(
        torch.rand(64, *shape, generator=generator), torch.randint(0, config.num_classes, (64,), generator=generator)
    )
    coordinator = Coordinator(config, train, seed=3)
    hosts = [
        make_host(config, members, seed=7, train=train if k == 0 else None) for k, members in enumerate(host_members)
    ]
    for host in hosts[1:]:  # heads: one extractor for all (members' weights depend only on the seed)
        if config.mode == "heads":
            host.load_weights([hosts[0].weights()])
    everyone = make_host(config, sorted(m for ms in host_members for m in ms), seed=7)
    everyone.load_weights([h.weights() for h in hosts])

    draw = coordinator.draw()
    logits = {}
    for host in hosts:
        active = [m for m in host.members if m in draw.active]
        logits |= dict(zip(active, host.forward(draw.batch, active)))
    updates, _ = coordinator.updates(draw, logits)
    for host in hosts:
        host.backward([updates[m] for m in host.members if m in draw.active])
    split = {m: g for host in hosts for m, g in host.gradients().items() if m in draw.active}

    whole_logits = everyone.member_logits(draw.batch.images, draw.active)  # [A, B, C]
    position = {m: i for i, m in enumerate(draw.active)}
    pairs = [(position[m], position[r]) for m, r in draw.pairs]
    weights = next(iter(updates.values())).sample_weights
    assert pairs, "the step must have disagreement pairs"

    def grads(loss):
        params = [p for m in draw.active for p in everyone.parameters_of(m)]
        flat = torch.autograd.grad(loss, params, retain_graph=True)
        out, i = {}, 0
        for m in draw.active:
            n = len(everyone.parameters_of(m))
            out[m], i = list(flat[i : i + n]), i + n
        return out

    whole = grads(sed_loss(whole_logits, draw.batch.labels, pairs, weights, config.lam, config.mu, config.a2d_eps))
    ce_only = grads(sed_loss(whole_logits, draw.batch.labels, [], weights, config.lam, config.mu, config.a2d_eps))
    return split, whole, ce_only


@pytest.mark.parametrize(
    "mode, pair_selection, host_members",
    [
        ("full", "all_pairs", [[0, 2], [1]]),
        ("full", "random_pair", [[0], [1], [2, 3]]),
        ("heads", "all_pairs", [[0, 2], [1, 3]]),
    ],
)
def test_split_gradients_add_up_to_the_whole_a2d_gradient(mode, pair_selection, host_members):
    num_members = sum(len(ms) for ms in host_members)
    config = SEDConfig(
        dataset="digits",
        architecture="mlp",
        mode=mode,
        num_members=num_members,
        lam=0.6,
        mu=2.0,
        pair_selection=pair_selection,
        pretrain_iters=5,
        batch_size=32,
    )
    split, whole, ce_only = _split_vs_whole(config, host_members)
    assert sorted(split) == sorted(whole)
    for m in whole:
        for g_split, g_whole in zip(split[m], whole[m]):
            assert torch.allclose(g_split, g_whole, rtol=1e-4, atol=1e-6), (m, (g_split - g_whole).abs().max())
    # Not vacuous: the disagreement term moves the gradient of the members in a pair.
    paired = {m for m in whole if any((g - c).abs().max() > 1e-3 for g, c in zip(whole[m], ce_only[m]))}
    assert paired


def test_pair_selection():
    generator = torch.Generator().manual_seed(0)
    config = SEDConfig(num_members=5, pair_selection="random_pair", num_random_pairs=2)
    pairs = select_pairs([0, 1, 3, 4], config, generator)
    assert len(pairs) == 2 and len({frozenset(p) for p in pairs}) == 2
    assert all(a != b and {a, b} <= {0, 1, 3, 4} for a, b in pairs)
    all_pairs = select_pairs([0, 1, 3, 4], config.model_copy(update={"pair_selection": "all_pairs"}), generator)
    assert {frozenset(p) for p in all_pairs} == {frozenset((a, b)) for a in (0, 1, 3, 4) for b in (0, 1, 3, 4) if a < b}
    assert select_pairs([0, 1], config.model_copy(update={"pair_selection": "none"}), generator) == []
