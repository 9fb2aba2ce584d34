"""Ensemble metrics from member probabilities p [M, N, C] (softmax of each member's logits).

ensemble prediction   pbar = (1 / M) sum_m p_m,   yhat = argmax_c pbar
accuracy              mean_x 1[yhat(x) = y]; per member the same with p_m
OOD scores (higher = more likely OOD):
    PDS               sum_c max_m p_m(c | x)          in [1, min(M, C)]; 1 when all members agree exactly
    max_prob          1 - max_c pbar(c | x)
    entropy           H(pbar) = -sum_c pbar log pbar
    mutual_info       H(pbar) - (1 / M) sum_m H(p_m)   (the members' disagreement, BALD)
AUROC                 P(score(x_ood) > score(x_id)) + P(=) / 2 (Mann-Whitney U / (n_id n_ood), ties halved)
disagreement          fraction of x where the members' argmaxes are not all equal
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

OOD_SCORES = ("pds", "max_prob", "entropy", "mutual_info")


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Accuracy of probabilities (or logits) [N, C]."""
    return (probs.argmax(-1) == labels).float().mean().item()


def member_accuracies(probs: Tensor, labels: Tensor) -> list[float]:
    """Accuracy of each member, probs [M, N, C]."""
    return [accuracy(p, labels) for p in probs]


def ensemble_probs(probs: Tensor) -> Tensor:
    return probs.mean(0)  # [N, C]


def entropy(probs: Tensor) -> Tensor:
    """H over the last axis, 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def predictive_disagreement_score(probs: Tensor) -> Tensor:
    """PDS(x) [N] = sum_c max_m p_m(c | x)."""
    return probs.max(0).values.sum(-1)


SCORE_DECIMALS = 9
"""OOD scores are rounded to 1e-9: below that a difference is float noise (identical members give PDS = 1 up to
rounding, which would otherwise rank inputs by noise instead of tying them)."""


def ood_scores(probs: Tensor) -> dict[str, Tensor]:
    """Each score of OOD_SCORES [N] for member probabilities [M, N, C] (float64 recommended); higher means more
    likely OOD."""
    pbar = ensemble_probs(probs)
    scores = {
        "pds": predictive_disagreement_score(probs),
        "max_prob": 1 - pbar.max(-1).values,
        "entropy": entropy(pbar),
        "mutual_info": entropy(pbar) - entropy(probs).mean(0),
    }
    return {name: score.round(decimals=SCORE_DECIMALS) for name, score in scores.items()}


def auroc(id_scores: Tensor | np.ndarray, ood_scores_: Tensor | np.ndarray) -> float:
    """Area under the ROC curve of telling OOD (positive) from ID by a score, ties counted half."""
    id_scores, ood_scores_ = np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores_, dtype=np.float64)
    ranks = average_ranks(np.concatenate([id_scores, ood_scores_]))
    n_id, n_ood = len(id_scores), len(ood_scores_)
    u = ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2  # pairs (id, ood) with the OOD score higher, ties 1/2
    return float(u / (n_id * n_ood))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of values [N], tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last of each group of equal values
    return (last - (counts - 1) / 2)[inverse]


def disagreement_rate(probs: Tensor) -> float:
    predictions = probs.argmax(-1)  # [M, N]
    return (predictions != predictions[:1]).any(0).float().mean().item()
