"""Evaluation of an ensemble's weights on the ID test set, its covariate shifts and the semantic-OOD set.

Metrics (M members, metrics.py for the formulas):

    eval/id_accuracy                    the ensemble's (argmax of the mean probabilities)
    eval/id_accuracy_best_member        the best and the lowest member (the collapse watch: chance is 1 / K)
    eval/id_accuracy_min_member
    eval/id_accuracy_soup               uniform weight soup (only when members share an initialization, or heads)
    eval/id_disagreement                fraction of test images on which the members' argmaxes differ
    eval/ood_auroc_<score>              OOD detection of the held-out labels, score in pds, max_prob, entropy,
                                        mutual_info
    eval/ood_disagreement               as id_disagreement, on the OOD images
    eval/shift/<corruption>_s<k>/<who>  accuracy under a corruption at severity k; who in ensemble, best_member, soup
    eval/shift_mean_s<k>/<who>          the mean over corruptions

Predictions (columns of predictions.parquet), one row per ID test and OOD image: split, index, label (-1 for
OOD), ensemble_prediction, ensemble_max_prob, the four OOD scores, member_predictions [M].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from workloads.ensembles.config import SEDConfig
from workloads.ensembles.data import eval_sets
from workloads.ensembles.members import make_host
from workloads.ensembles.metrics import (
    OOD_SCORES,
    accuracy,
    auroc,
    disagreement_rate,
    ensemble_probs,
    member_accuracies,
    ood_scores,
)
from workloads.ensembles.plots import evaluation_figure


@dataclass
class Evaluation:
    metrics: dict[str, float]
    predictions: dict[str, np.ndarray]
    """Columns of predictions.parquet (member_predictions is [N, M])."""
    figures: dict[str, Figure]


class Evaluator:
    """Holds the evaluation sets and one host with every member, loaded from the members' weights at each call."""

    def __init__(self, config: SEDConfig, seed: int, device: str = "cpu"):
        self.config = config
        self.sets = eval_sets(config)
        self.host = make_host(config, list(range(config.num_members)), seed, device)

    def evaluate(self, weights: list[dict[str, Any]]) -> Evaluation:
        """`weights`: each member host's `weights()`; together they hold every member."""
        c, sets, host = self.config, self.sets, self.host
        host.load_weights(weights)
        # float64: the OOD scores compare sums of probabilities; float32 rounding would rank ties by noise.
        id_probs = host.predict(sets.id_test.images).double().softmax(-1)  # [M, N, C]
        ood_probs = host.predict(sets.ood_images).double().softmax(-1)  # [M, N_ood, C]
        labels = sets.id_test.labels
        members = member_accuracies(id_probs, labels)
        metrics = {
            "eval/id_accuracy": accuracy(ensemble_probs(id_probs), labels),
            "eval/id_accuracy_best_member": max(members),
            "eval/id_accuracy_min_member": min(members),
            "eval/id_disagreement": disagreement_rate(id_probs),
            "eval/ood_disagreement": disagreement_rate(ood_probs),
        }
        if c.soup_is_meaningful:
            metrics["eval/id_accuracy_soup"] = accuracy(host.soup_predict(sets.id_test.images), labels)
        id_scores, ood_scores_ = ood_scores(id_probs), ood_scores(ood_probs)
        for name in OOD_SCORES:
            metrics[f"eval/ood_auroc_{name}"] = auroc(id_scores[name], ood_scores_[name])
        metrics |= self._shift_metrics()

        predictions = _prediction_columns(id_probs, labels, id_scores, ood_probs, ood_scores_)
        figure = evaluation_figure(
            id_scores["pds"].numpy(),
            ood_scores_["pds"].numpy(),
            members,
            metrics["eval/id_accuracy"],
            metrics["eval/ood_auroc_pds"],
        )
        return Evaluation(metrics, predictions, {"ensemble": figure})

    def _shift_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        by_severity: dict[str, list[float]] = {}
        for name, shifted in self.sets.shifts.items():
            probs = self.host.predict(shifted.images).softmax(-1)
            scores = {
                "ensemble": accuracy(ensemble_probs(probs), shifted.labels),
                "best_member": max(member_accuracies(probs, shifted.labels)),
            }
            if self.config.soup_is_meaningful:
                scores["soup"] = accuracy(self.host.soup_predict(shifted.images), shifted.labels)
            severity = name.rsplit("_", 1)[1]
            for who, value in scores.items():
                metrics[f"eval/shift/{name}/{who}"] = value
                by_severity.setdefault(f"eval/shift_mean_{severity}/{who}", []).append(value)
        return metrics | {key: float(np.mean(values)) for key, values in by_severity.items()}


def _prediction_columns(
    id_probs: torch.Tensor,
    labels: torch.Tensor,
    id_scores: dict[str, torch.Tensor],
    ood_probs: torch.Tensor,
    ood_scores_: dict[str, torch.Tensor],
) -> dict[str, np.ndarray]:
    probs = torch.cat([id_probs, ood_probs], dim=1)  # [M, N_id + N_ood, C]
    pbar = ensemble_probs(probs)
    n_id, n_ood = id_probs.shape[1], ood_probs.shape[1]
    columns = {
        "split": np.array(["id"] * n_id + ["ood"] * n_ood),
        "index": np.concatenate([np.arange(n_id), np.arange(n_ood)]),
        "label": np.concatenate([labels.numpy(), np.full(n_ood, -1)]),
        "ensemble_prediction": pbar.argmax(-1).numpy(),
        "ensemble_max_prob": pbar.max(-1).values.numpy(),
    }
    for name in OOD_SCORES:
        columns[f"score_{name}"] = torch.cat([id_scores[name], ood_scores_[name]]).numpy()
    columns["member_predictions"] = probs.argmax(-1).T.numpy()  # [N, M]
    return columns
