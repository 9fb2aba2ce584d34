"""WCST-ML sweep summary: which cue each architecture adopts, how consistently over seeds, and how flat the
solutions are (arXiv:2110.03095, Figs. of cue preference and of loss increase vs perturbation radius).

Trials are grouped by (architecture, cue set) and by training mode ('diagonal', or 'forced_<cue>'):

    cue_preference.png   per group of diagonal-trained trials: eval/offdiag_acc/<cue> against the epoch, one
                         line per cue (mean over seeds) in a band from the lowest to the highest seed, and the
                         other-cue chance level (dashed)
    cue_preference.md    per group: each cue's final off-diagonal accuracy (mean +- std over seeds); the
                         preference order (cues by that mean); the seeds whose most accurate cue is the first
                         of the order, and the seeds whose whole order is the group's. Then, from the forced
                         trials, how fast each forced cue is learned (accuracy after epoch 1, epochs to 0.9)
    flatness.png         per group: Delta L(r) = mean loss increase at weight-perturbation norm r after the last
                         epoch, one line per training mode (mean over seeds, band lowest-highest)
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.summary import final, mean_std
from orchestrator.tracking import TrialHistory

ACCURACY_PREFIX = "eval/offdiag_acc/"
FLATNESS_PREFIX = "flatness/loss_increase/r_"
CHANCE_METRIC = "eval/chance_other_cue"
CUE_COLORS = {
    "color": "tab:red",
    "shape": "tab:blue",
    "scale": "tab:green",
    "orientation": "tab:purple",
    "position": "tab:orange",
    "pos_x": "tab:orange",
    "pos_y": "tab:brown",
}
MODE_STYLES = {"diagonal": "black"}
LINEAR_BELOW = 1e-4
"""Loss increases within +-LINEAR_BELOW are drawn on a linear scale (symlog), larger ones on a log scale."""


@dataclass(frozen=True)
class Group:
    architecture: str
    cues: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.architecture}, cues {{{', '.join(self.cues)}}}"


def trial_group(trial: TrialHistory) -> tuple[Group, str]:
    """(architecture and cue set, training mode) from the trial's flattened config params."""
    params = trial.params
    cues = tuple(json.loads(params["config.cues"]))
    forced = params.get("config.forced_cue", "None")
    mode = "diagonal" if forced in ("None", "null", "") else f"forced_{forced}"
    return Group(params["config.architecture"], cues), mode


def grouped(trials: list[TrialHistory]) -> dict[Group, dict[str, list[TrialHistory]]]:
    """group -> mode -> trials, groups sorted by cue set then architecture."""
    out: dict[Group, dict[str, list[TrialHistory]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        group, mode = trial_group(trial)
        out[group][mode].append(trial)
    return {g: dict(out[g]) for g in sorted(out, key=lambda g: (len(g.cues), g.cues, g.architecture))}


# ---------------------------------------------------------------- preference order


@dataclass(frozen=True)
class Preference:
    group: Group
    seeds: int
    final_accuracy: dict[str, list[float]]
    """Cue -> final off-diagonal accuracy of every seed."""
    order: tuple[str, ...]
    """Cues by mean final off-diagonal accuracy, highest first."""
    top_agree: int
    """Seeds whose most accurate cue is order[0]."""
    order_agree: int
    """Seeds whose cues, sorted by their own final accuracies, are in `order`."""


def preference(group: Group, trials: list[TrialHistory]) -> Preference:
    accuracy = {cue: [final(t, ACCURACY_PREFIX + cue) for t in trials] for cue in group.cues}
    complete = [i for i in range(len(trials)) if all(accuracy[cue][i] is not None for cue in group.cues)]
    accuracy = {cue: [values[i] for i in complete] for cue, values in accuracy.items()}
    order = tuple(sorted(group.cues, key=lambda cue: -statistics.fmean(accuracy[cue]) if complete else 0.0))
    per_seed_orders = [tuple(sorted(group.cues, key=lambda cue: -accuracy[cue][i])) for i in range(len(complete))]
    return Preference(
        group,
        len(complete),
        accuracy,
        order,
        sum(o[0] == order[0] for o in per_seed_orders),
        sum(o == order for o in per_seed_orders),
    )


def preferences(trials: list[TrialHistory]) -> list[Preference]:
    """One per (architecture, cue set) with diagonal-trained trials."""
    return [preference(group, modes["diagonal"]) for group, modes in grouped(trials).items() if "diagonal" in modes]


def preference_table(rows: list[Preference]) -> str:
    """Markdown: one row per (architecture, cue set)."""
    lines = [
        "| architecture | cues | seeds | final off-diagonal accuracy per cue (mean ± std) | preference order | "
        "seeds with that first cue | seeds with that whole order |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = ", ".join(f"{cue} {mean_std(row.final_accuracy[cue])}" for cue in row.group.cues)
        lines.append(
            f"| {row.group.architecture} | {', '.join(row.group.cues)} | {row.seeds} | {cells} | "
            f"{' > '.join(row.order)} | {row.top_agree}/{row.seeds} | {row.order_agree}/{row.seeds} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- ease of learning, from the forced trials

LEARNED = 0.9
"""Off-diagonal accuracy at which a forced cue counts as learned."""


def ease_table(trials: list[TrialHistory]) -> str:
    """Markdown: per (architecture, cue set) and forced cue, that cue's off-diagonal accuracy after the first epoch
    and at the end, and the epochs until it reaches LEARNED. When the adopted cue wins the diagonal outright, the
    other cues sit at chance there and their order shows only here: how hard each one is to learn."""
    lines = [
        f"| architecture | cues | forced onto | seeds | off-diagonal accuracy of that cue after epoch 1 | "
        f"at the end | epochs to reach {LEARNED} (per seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for group, modes in grouped(trials).items():
        for mode in sorted(m for m in modes if m != "diagonal"):
            cue = mode.removeprefix("forced_")
            histories = [t.metrics.get(ACCURACY_PREFIX + cue, []) for t in modes[mode]]
            histories = [h for h in histories if h]
            reached = [next((step for step, value in h if value >= LEARNED), None) for h in histories]
            lines.append(
                f"| {group.architecture} | {', '.join(group.cues)} | {cue} | {len(histories)} | "
                f"{mean_std([h[0][1] for h in histories])} | {mean_std([h[-1][1] for h in histories])} | "
                f"{', '.join('-' if r is None else str(r) for r in reached)} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


# ---------------------------------------------------------------- figures


def _curve(trials: list[TrialHistory], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, lowest, highest) over the trials that logged `metric`, at every step any of them logged."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for trial in trials:
        for step, value in trial.metrics.get(metric, []):
            by_step[step].append(value)
    steps = np.array(sorted(by_step))
    values = [np.array(by_step[s]) for s in steps]
    return (
        steps,
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
    )


def _grid(groups: list[Group], title: str) -> tuple[Figure, dict[Group, object]]:
    """One panel per group: rows the cue sets, columns the architectures."""
    cue_sets = list(dict.fromkeys(g.cues for g in groups))
    architectures = list(dict.fromkeys(g.architecture for g in sorted(groups, key=lambda g: g.architecture)))
    figure = Figure(figsize=(max(3.6 * len(architectures), 6.0), 3.0 * len(cue_sets) + 0.6), layout="constrained")
    axes = figure.subplots(len(cue_sets), len(architectures), squeeze=False)
    panels = {}
    for i, cues in enumerate(cue_sets):
        for j, architecture in enumerate(architectures):
            group = Group(architecture, cues)
            if group in groups:
                panels[group] = axes[i, j]
                axes[i, j].set_title(group.label, fontsize=9)
            else:
                axes[i, j].set_visible(False)
    figure.suptitle(title, fontsize=10)
    return figure, panels


def preference_figure(trials: list[TrialHistory]) -> Figure:
    groups = {g: modes["diagonal"] for g, modes in grouped(trials).items() if "diagonal" in modes}
    figure, panels = _grid(
        list(groups),
        "WCST-ML cue preference: off-diagonal accuracy of diagonal-trained "
        "models\nline: mean over seeds, band: lowest to highest seed",
    )
    for group, ax in panels.items():
        runs = groups[group]
        for cue in group.cues:
            steps, mean, low, high = _curve(runs, ACCURACY_PREFIX + cue)
            color = CUE_COLORS.get(cue)
            ax.plot(steps, mean, color=color, label=cue)
            ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        chance = final(runs[0], CHANCE_METRIC)
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="other-cue chance")
        ax.set(xlabel="epoch", ylabel="off-diagonal accuracy", ylim=(0, 1.02))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="best", title=f"{len(runs)} seeds", title_fontsize=7)
    return figure


def _radii(trials: list[TrialHistory]) -> list[tuple[float, str]]:
    keys = {k for t in trials for k in t.metrics if k.startswith(FLATNESS_PREFIX)}
    return sorted((float(k.removeprefix(FLATNESS_PREFIX)), k) for k in keys)


def flatness_figure(trials: list[TrialHistory]) -> Figure:
    groups = grouped(trials)
    figure, panels = _grid(
        list(groups),
        "WCST-ML flatness: training-loss increase at weight-perturbation "
        "norm r\nline: mean over seeds, band: lowest to highest seed",
    )
    for group, ax in panels.items():
        lowest = 0.0
        for mode, runs in sorted(groups[group].items(), key=lambda item: (item[0] != "diagonal", item[0])):
            radii = [(r, key) for r, key in _radii(runs) if r > 0]  # Delta L(0) = 0 has no place on log axes
            if not radii:
                continue
            values = np.array([[final(t, key) for r, key in radii] for t in runs], dtype=float)  # [seeds, radii]
            values = values[~np.isnan(values).any(axis=1)]
            if not len(values):
                continue
            cue = mode.removeprefix("forced_")
            color = MODE_STYLES.get(mode, CUE_COLORS.get(cue))
            r = [r for r, _ in radii]
            ax.plot(
                r,
                values.mean(axis=0),
                color=color,
                marker="o",
                markersize=3,
                label=f"{mode.replace('_', ' onto ')} ({len(values)})",
            )
            ax.fill_between(r, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15, linewidth=0)
            lowest = min(lowest, float(values.min()))
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=LINEAR_BELOW)  # small increases are noise around 0 and may be negative
        ax.set_ylim(bottom=max(lowest, -LINEAR_BELOW))  # increases below 0 are noise: keep them in the linear part
        ax.set(xlabel="perturbation norm r", ylabel="loss increase")
        ax.legend(fontsize=7)
    return figure


def wcst_summary(trials: list[TrialHistory]) -> dict[str, Figure | str]:
    """`Family.summary` of the wcst family."""
    out: dict[str, Figure | str] = {}
    rows = preferences(trials)
    ease = ease_table(trials)
    if rows or ease:
        out["cue_preference.md"] = "\n".join(t for t in (preference_table(rows) if rows else "", ease) if t)
    if rows:
        out["cue_preference.png"] = preference_figure(trials)
    if _radii(trials):
        out["flatness.png"] = flatness_figure(trials)
    return out
