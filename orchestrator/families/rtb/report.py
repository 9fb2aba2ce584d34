"""`report --table` of the rtb family: one row per task and variant of the chosen axis (e.g. method), the figures at
each trial's last evaluation, mean ± std over seeds; a column is '-' where a task has no such metric. The paper
gives no table for the toy (its Fig. 1 is a picture); its MNIST row is quoted in docs/rtb.md, beside ours (our FD
is on another feature extractor: not comparable)."""

from __future__ import annotations

from orchestrator.summary import mean_std

COLUMNS = {
    "eval/mean_log_r": "E[log r]",
    "eval/exact_mean_log_r": "exact E_post[log r]",
    "eval/log_z_error": "|log Z - log Z_MC|",
    "eval/tv_to_prior_posterior": "TV to exact posterior",
    "eval/tv_to_target": "TV to N9",
    "eval/removed_mode_mass": "removed-mode mass",
    "eval/w2_to_prior_posterior": "W2 to exact posterior",
    "eval/fd": "FD to class data",
    "eval/diversity": "diversity",
    "eval/data_diversity": "class data diversity",
}
"""Metric -> column; the toy's mode masses and W2, the images' FD and diversities; log Z error only for methods
that learn log Z (rtb)."""
NOTES = [
    "Figures at each trial's last evaluation, mean ± std over seeds. Toy: 'exact posterior' is that of the fitted "
    "prior (its samples weighted by r^beta), N9 that of the true 25GMM prior. Images: exact E_post[log r] by "
    "reweighting prior samples; FD and diversity (mean pairwise cosine distance) on the features of the "
    "classifier trained here, against the class's training images.",
]


def results_table(trials: list, axis: str) -> tuple[list[list[str]], list[str]]:
    """(header and rows, notes) from finished trials (`tracking.TrialRow`), one row per task and variant of
    `axis`."""
    grouped: dict[tuple[str, str], list] = {}
    for trial in trials:
        task = trial.params.get("sampled.variants.task", trial.params.get("config.task", "toy2d"))
        grouped.setdefault((task, trial.params.get(f"sampled.variants.{axis}", "?")), []).append(trial)
    table = [["task", axis, "seeds", *COLUMNS.values()]]
    for (task, variant), group in grouped.items():
        cells = [mean_std([t.finals[m] for t in group if m in t.finals], ".3g", ".2g") for m in COLUMNS]
        table.append([task, variant, str(len(group)), *cells])
    return table, NOTES
