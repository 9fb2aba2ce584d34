"""Ensemble metrics (workloads/ensembles/metrics.py) against hand-computed values and scikit-learn, and the
evaluator's soups."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from workloads.ensembles.config import SEDConfig
from workloads.ensembles.members import make_host
from workloads.ensembles.metrics import (
    accuracy,
    auroc,
    disagreement_rate,
    member_accuracies,
    ood_scores,
    predictive_disagreement_score,
)

# Two members, two inputs, three classes.
PROBS = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], [[0.1, 0.8, 0.1], [0.3, 0.1, 0.6]]])  # [M=2, N=2, C=3]


def test_pds_hand_values():
    """sum_c max_m p_m(c): x0 -> 0.6 + 0.8 + 0.1 = 1.5; x1 -> 0.3 + 0.2 + 0.6 = 1.1; identical members -> 1."""
    assert torch.allclose(predictive_disagreement_score(PROBS), torch.tensor([1.5, 1.1]))
    same = PROBS[:1].expand(3, -1, -1)
    assert torch.allclose(predictive_disagreement_score(same), torch.ones(2))


def test_uncertainty_scores_hand_values():
    """x0: pbar = (0.35, 0.55, 0.1); 1 - max = 0.45; H(pbar) and H(pbar) - mean_m H(p_m) written out."""
    scores = ood_scores(PROBS)

    def h(p):
        return -sum(v * math.log(v) for v in p)

    assert scores["max_prob"][0].item() == pytest.approx(0.45)
    assert scores["entropy"][0].item() == pytest.approx(h([0.35, 0.55, 0.1]), rel=1e-6)
    expected_mi = h([0.35, 0.55, 0.1]) - (h([0.6, 0.3, 0.1]) + h([0.1, 0.8, 0.1])) / 2
    assert scores["mutual_info"][0].item() == pytest.approx(expected_mi, rel=1e-5)
    assert scores["pds"][1].item() == pytest.approx(1.1)


def test_accuracies_and_disagreement():
    labels = torch.tensor([1, 2])
    assert member_accuracies(PROBS, labels) == [0.5, 1.0]  # member 0 says 0 on x0
    assert accuracy(PROBS.mean(0), labels) == 1.0
    assert disagreement_rate(PROBS) == 0.5  # argmaxes (0, 1) on x0, (2, 2) on x1


@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    id_scores = rng.integers(0, 5, 300).astype(float)  # many ties
    ood = rng.integers(1, 7, 200).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[id_scores, ood])
    assert auroc(id_scores, ood) == pytest.approx(expected, abs=1e-12)
    assert auroc(np.zeros(4), np.ones(3)) == 1.0 and auroc(np.ones(4), np.zeros(3)) == 0.0
    assert auroc(np.ones(4), np.ones(3)) == 0.5


def test_soups():
    """Members with one initialization and no training: the soup is each member. Heads: the averaged head's
    logits are the members' mean logits."""
    images = torch.rand(20, 1, 8, 8)
    shared = make_host(SEDConfig(dataset="digits", num_members=3, shared_init=True), [0, 1, 2], seed=0)
    member_logits = shared.predict(images)
    assert torch.allclose(member_logits[0], member_logits[2])
    assert torch.allclose(shared.soup_predict(images), member_logits[0], atol=1e-6)
    heads = make_host(SEDConfig(dataset="digits", mode="heads", num_members=4), [0, 1, 2, 3], seed=0)
    head_logits = heads.predict(images)
    assert not torch.allclose(head_logits[0], head_logits[1])
    assert torch.allclose(heads.soup_predict(images), head_logits.mean(0), atol=1e-6)


def test_identical_members_tie_instead_of_ranking_float_noise():
    """Identical members: PDS = 1 and MI = 0 for every input up to rounding, so any OOD split scores 0.5."""
    torch.manual_seed(0)
    probs = (3 * torch.randn(1, 400, 8)).expand(5, -1, -1).double().softmax(-1)
    scores = ood_scores(probs)
    for name in ("pds", "mutual_info"):
        assert auroc(scores[name][:200], scores[name][200:]) == 0.5, name
