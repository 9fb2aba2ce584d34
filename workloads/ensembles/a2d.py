"""The SED loss as pure functions of tensors (arXiv:2409.16797; A2D from D-BAT, arXiv:2202.04414).

For active members m = 1..A with logits f_m(x) and probabilities p_m = softmax(f_m), and disagreement pairs
(m, m*) (P of them):

    L = (1 - lam) (1 / A) sum_m CE(f_m(x), y)  +  mu lam (1 / P) sum_{(m, m*)} mean_x [ w(x) l_{m,m*}(x) ]

    A2D      l_{m,m*}(x) = -log( p_m(yhat) (1 - p_m*(yhat)) + p_m*(yhat) (1 - p_m(yhat)) + eps ),
             yhat = argmax_c p_m(c | x)      (the probability that exactly one of the two predicts yhat)
    weights  w(x) = CE(fbar(x), y) / (mean_x' CE(fbar(x'), y'))^2,  fbar = (1 / A) sum_m f_m   (no gradient)
             or, "below threshold": w(x) = 1[min_m p_m(y | x) <= tau]

(CE terms are batch means.) Member m's parameters enter L only through f_m, so the gradient splits exactly:

    d L / d theta_m = d L_m / d theta_m,
    L_m = (1 - lam) / A CE(f_m, y) + mu lam / P sum_{pairs (m, m*) or (m*, m)} mean_x [ w l(p_m, sg(p_m*)) ]

with sg the stop-gradient (the partner's probabilities arrive detached) and yhat, w fixed per step. `member_loss`
is L_m, what a member actor minimizes; `sed_loss` is L in one process, the reference the split is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def a2d_disagreement(probs: Tensor, partner_probs: Tensor, predicted: Tensor, eps: float) -> Tensor:
    """l(x) [B] from probabilities [B, C] of the two members and the pair's predicted class yhat [B]."""
    p = probs.gather(-1, predicted[:, None]).squeeze(-1)  # [B] p_m(yhat)
    q = partner_probs.gather(-1, predicted[:, None]).squeeze(-1)  # [B] p_m*(yhat)
    return -torch.log(p * (1 - q) + q * (1 - p) + eps)


@torch.no_grad()
def hard_sample_weights(logits: Tensor, labels: Tensor) -> Tensor:
    """w(x) [B] = CE(mean logits, y) / (batch mean CE)^2 from the active members' logits [A, B, C]."""
    ce = F.cross_entropy(logits.mean(0), labels, reduction="none")  # [B]
    return ce / ce.mean().square()


@torch.no_grad()
def below_threshold_weights(logits: Tensor, labels: Tensor, threshold: float) -> Tensor:
    """w(x) [B] = 1 where some active member gives the true class a probability <= threshold, else 0.

    The reference trains CE only on the other samples (every member above the threshold); here CE stays on all
    samples: members trained from scratch start below any threshold above 1 / K and would never see CE."""
    p_true = logits.softmax(-1).gather(-1, labels.expand(len(logits), -1)[..., None]).squeeze(-1)  # [A, B]
    return (p_true <= threshold).any(0).float()


def member_loss(
    logits: Tensor,
    labels: Tensor,
    partner_probs: Sequence[Tensor],
    predicted: Sequence[Tensor],
    sample_weights: Tensor,
    ce_weight: float,
    disagreement_weight: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """L_m for member m with logits [B, C]: one (partner probabilities [B, C], yhat [B]) per pair it is in.

    Returns (L_m, its CE, the mean over its pairs of mean_x w l; 0 without pairs)."""
    ce = F.cross_entropy(logits, labels)
    probs = logits.softmax(-1)
    disagreements = [
        (sample_weights * a2d_disagreement(probs, q.detach(), yhat, eps)).mean()
        for q, yhat in zip(partner_probs, predicted, strict=True)
    ]
    disagreement = torch.stack(disagreements).sum() if disagreements else logits.new_zeros(())
    loss = ce_weight * ce + disagreement_weight * disagreement
    return loss, ce.detach(), disagreement.detach() / max(len(disagreements), 1)


def sed_loss(
    logits: Tensor,
    labels: Tensor,
    pairs: Sequence[tuple[int, int]],
    sample_weights: Tensor,
    lam: float,
    mu: float,
    eps: float,
) -> Tensor:
    """L for the active members' logits [A, B, C]; `pairs` index their first dimension, (m, m*) with yhat from m."""
    probs = logits.softmax(-1)  # [A, B, C]
    ce = torch.stack([F.cross_entropy(f, labels) for f in logits]).mean()
    if not pairs:
        return (1 - lam) * ce
    disagreement = torch.stack(
        [(sample_weights * a2d_disagreement(probs[m], probs[r], probs[m].argmax(-1), eps)).mean() for m, r in pairs]
    ).mean()
    return (1 - lam) * ce + mu * lam * disagreement
