"""`report --table` of the rtb family: one row per method, the 2-D toy's figures at each trial's last evaluation,
mean ± std over seeds. The paper gives no table for the toy (its Fig. 1 is a picture), so no paper row."""

from __future__ import annotations

from orchestrator.summary import mean_std

COLUMNS = {
    "eval/log_z_error": "|log Z - log Z_MC|",
    "eval/tv_to_prior_posterior": "TV to exact posterior",
    "eval/tv_to_target": "TV to N9",
    "eval/removed_mode_mass": "removed-mode mass",
    "eval/mean_log_r": "E[log r]",
    "eval/w2_to_prior_posterior": "W2 to exact posterior",
}
"""Metric -> column; log Z error only for methods that learn log Z (rtb)."""
NOTES = [
    "Figures at each trial's last evaluation, mean ± std over seeds; 'exact posterior' is that of the fitted "
    "prior (its samples weighted by r^beta), N9 that of the true 25GMM prior.",
]


def results_table(trials: list, axis: str) -> tuple[list[list[str]], list[str]]:
    """(header and rows, notes) from finished trials (`tracking.TrialRow`), one row per variant of `axis`."""
    param = f"sampled.variants.{axis}"
    grouped: dict[str, list] = {}
    for trial in trials:
        grouped.setdefault(trial.params.get(param, "?"), []).append(trial)
    table = [[axis, "seeds", *COLUMNS.values()]]
    for variant, group in grouped.items():
        cells = [mean_std([t.finals[m] for t in group if m in t.finals], ".3g", ".2g") for m in COLUMNS]
        table.append([variant, str(len(group)), *cells])
    return table, NOTES
