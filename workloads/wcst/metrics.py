"""Accuracies of a WCST-ML model: on the diagonal test set, and on each cue's off-diagonal test set.

On cue k's off-diagonal set the label is cue k's level and the other cues disagree with it, so

    acc_k = (1/N_k) sum_i [argmax_c f(x_i)_c = level_k(x_i)]

is high only for a model that reads cue k: the adopted cue scores near 1, every other cue near chance
(`WcstData.chance_other_cue`). On the diagonal set every cue agrees, so any adopted cue scores near 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workloads.wcst.data import LabelledImages, WcstData

EVAL_BATCH = 1_000


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = EVAL_BATCH) -> Tensor:
    """argmax_c f(x)_c for every image [N, 3, R, R] -> [N], in eval mode (BatchNorm uses its running stats)."""
    was_training = model.training
    model.eval()
    predictions = torch.cat(
        [model(images[i : i + batch_size]).argmax(dim=1) for i in range(0, len(images), batch_size)]
    )
    model.train(was_training)
    return predictions


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    return float((predictions == labels).double().mean()) if len(labels) else float("nan")


def set_accuracy(model: nn.Module, labelled: LabelledImages) -> float:
    return accuracy(predict(model, labelled.images), labelled.labels)


def cue_accuracies(model: nn.Module, data: WcstData) -> dict[str, float]:
    """eval/diagonal_acc and eval/offdiag_acc/<cue> for every chosen cue, and the other-cue chance level."""
    metrics = {"eval/diagonal_acc": set_accuracy(model, data.diagonal_test)}
    for cue, labelled in data.off_diagonal_test.items():
        metrics[f"eval/offdiag_acc/{cue}"] = set_accuracy(model, labelled)
    metrics["eval/chance_other_cue"] = data.chance_other_cue
    return metrics
