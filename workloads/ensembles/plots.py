"""The evaluation figure of an ensemble: PDS on ID vs OOD images, and each member's ID accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def evaluation_figure(
    pds_id: np.ndarray,
    pds_ood: np.ndarray,
    member_accuracies: Sequence[float],
    ensemble_accuracy: float,
    pds_auroc: float,
) -> Figure:
    figure = Figure(figsize=(9, 3.4))
    left, right = figure.subplots(1, 2)
    bins = np.linspace(1.0, max(float(pds_id.max()), float(pds_ood.max()), 1.0 + 1e-3), 31)
    left.hist(pds_id, bins=bins, alpha=0.6, density=True, label="ID test")
    left.hist(pds_ood, bins=bins, alpha=0.6, density=True, label="held-out labels (OOD)")
    left.set_xlabel("PDS = sum_c max_m p_m(c | x)")
    left.set_title(f"OOD detection by PDS: AUROC {pds_auroc:.3f}")
    left.legend()
    members = np.arange(len(member_accuracies))
    right.bar(members, member_accuracies, color="tab:gray")
    right.axhline(ensemble_accuracy, color="tab:red", label=f"ensemble {ensemble_accuracy:.3f}")
    right.set_ylim(0, 1)
    right.set_xlabel("member")
    right.set_ylabel("ID test accuracy")
    right.legend(loc="lower right")
    figure.tight_layout()
    return figure
