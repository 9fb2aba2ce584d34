"""SED sweep summary: does the diversified ensemble detect the held-out labels better than the plain deep ensemble,
at what cost in ID accuracy, and does any member collapse (arXiv:2409.16797; the issue's three checks)?

Trials are grouped by their variants (`sampled.variants.<axis>`) other than `method`, one group per setting
(e.g. start = pretrained head, dataset = Digits), and within a group by method:

    sed.md   per setting: each method's final eval/ood_auroc_pds, eval/id_accuracy and
             eval/id_accuracy_min_member (mean +- std over seeds), then SED against the deep ensemble:
             the PDS AUROC gain, the ID accuracy change in points (<= 2 lost passes), and the lowest member
             of any SED seed against chance + 10 points (chance = 1 / number of trained classes)
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict

from orchestrator.summary import final, mean_std
from orchestrator.tracking import TrialHistory

METHOD_AXIS = "method"
SED, BASELINE = "SED", "deep ensemble"
COLUMNS = {
    "eval/ood_auroc_pds": "PDS AUROC",
    "eval/id_accuracy": "ID accuracy",
    "eval/id_accuracy_min_member": "lowest member",
}
MAX_ID_ACCURACY_LOSS = 0.02
COLLAPSE_MARGIN = 0.10
"""A member collapses below chance + this accuracy."""


def _setting(trial: TrialHistory) -> tuple[tuple[str, str], ...]:
    """The trial's variants on every axis but the method's, as sorted (axis, name) pairs."""
    prefix = "sampled.variants."
    return tuple(
        sorted(
            (key[len(prefix) :], value)
            for key, value in trial.params.items()
            if key.startswith(prefix) and key != prefix + METHOD_AXIS
        )
    )


def chance(trial: TrialHistory) -> float:
    """1 / the number of trained classes, from the trial's flattened config."""
    from workloads.ensembles.config import DEFAULT_HELD_OUT, NUM_LABELS

    dataset, held = trial.params["config.dataset"], trial.params.get("config.held_out_labels", "None")
    held_out = DEFAULT_HELD_OUT[dataset] if held in ("None", "null") else json.loads(held)
    return 1.0 / (NUM_LABELS[dataset] - len(held_out))


def verdict(sed: list[TrialHistory], baseline: list[TrialHistory]) -> str:
    """SED against the deep ensemble in one setting: the three checks, each with its figures."""

    def values(trials, metric):
        return [v for v in (final(t, metric) for t in trials) if v is not None]

    def gain(metric):
        return statistics.fmean(values(sed, metric)) - statistics.fmean(values(baseline, metric))

    pds_gain, id_change = gain("eval/ood_auroc_pds"), gain("eval/id_accuracy")
    lowest, floor = min(values(sed, "eval/id_accuracy_min_member")), chance(sed[0]) + COLLAPSE_MARGIN
    checks = [
        f"PDS AUROC {pds_gain:+.3f} ({'better' if pds_gain > 0 else 'not better'})",
        f"ID accuracy {100 * id_change:+.1f} points ({'within' if id_change >= -MAX_ID_ACCURACY_LOSS else 'beyond'} "
        f"{100 * MAX_ID_ACCURACY_LOSS:.0f})",
        f"lowest member {lowest:.3f} ({'above' if lowest >= floor else 'below'} chance + 10 points = {floor:.3f})",
    ]
    return "SED vs deep ensemble: " + "; ".join(checks)


def sed_table(trials: list[TrialHistory]) -> str:
    groups: dict[tuple, dict[str, list[TrialHistory]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        method = trial.params.get(f"sampled.variants.{METHOD_AXIS}", trial.params.get("config.pair_selection", "?"))
        groups[_setting(trial)][method].append(trial)
    lines = [
        "# SED sweep summary",
        "",
        "Final evaluation of each trial; mean ± std over seeds. PDS AUROC: detection of the held-out labels "
        "by PDS(x) = sum_c max_m p_m(c | x).",
    ]
    for setting in groups:  # in the order the trials ran
        by_method = groups[setting]
        title = ", ".join(f"{axis} = {name}" for axis, name in setting) or "all trials"
        lines += [
            "",
            f"## {title}",
            "",
            "| method | seeds | " + " | ".join(COLUMNS.values()) + " |",
            "|---|---|" + "---|" * len(COLUMNS),
        ]
        for method in sorted(by_method, key=lambda m: (m != SED, m != BASELINE, m)):
            group = by_method[method]
            cells = [mean_std([v for v in (final(t, m) for t in group) if v is not None]) for m in COLUMNS]
            lines.append(f"| {method} | {len(group)} | " + " | ".join(cells) + " |")
        if SED in by_method and BASELINE in by_method:
            lines += ["", verdict(by_method[SED], by_method[BASELINE])]
    return "\n".join(lines) + "\n"


def sed_summary(trials: list[TrialHistory]) -> dict[str, str]:
    """`Family.summary` of the sed family."""
    return {"sed.md": sed_table(trials)}
