"""`report --table` of the samplers family: methods x targets beside Table 1 of arXiv:2402.05098.

A cell is 'Delta log Z / Delta log Z_RW / W2' at each trial's last evaluation, mean ± std over seeds.
"""

from __future__ import annotations

from orchestrator.summary import mean_std

TABLE_METRICS = ("eval/delta_log_z", "eval/delta_log_z_rw", "eval/w2")
"""A cell's figures, in the paper's order: Delta log Z (ELBO), Delta log Z_RW (importance-weighted), W2.
The paper heads its third column W2^2, but the reference's code (energy_sampling/sample_metrics.py, `wasserstein`
with power 2) returns the square root of the exact OT cost under squared Euclidean distance: W2 itself."""
TARGET_COLUMNS = {"gmm25": "25GMM", "funnel": "Funnel", "manywell": "Manywell", "gmm40": "40GMM"}
"""config.target -> column name, in the paper's order; other targets follow, sorted."""
PAPER_TABLE_1: dict[str, dict[str, str]] = {
    # arXiv:2402.05098, Table 1, mean over 5 seeds, as printed in ../shared/papers/README.md (section 2):
    # Delta log Z / Delta log Z_RW / W2 (headed W2^2 there), '-' where the summary gives no figure; no 40GMM column.
    "PIS": {"gmm25": "1.769 / 1.274 / 6.37", "funnel": "0.534 / 0.262 / 22.0", "manywell": "3.85 / 2.69 / 6.15"},
    "TB": {"gmm25": "1.176 / 1.071 / -", "funnel": "0.690 / 0.239 / -", "manywell": "4.01 / 2.67 / -"},
    "TB + Expl.": {"gmm25": "0.560 / 0.422 / -", "funnel": "0.749 / 0.226 / -", "manywell": "4.01 / 2.68 / -"},
    "FL-SubTB + LP": {"gmm25": "0.209 / 0.011 / -", "funnel": "0.563 / 0.155 / -", "manywell": "4.23 / 2.66 / -"},
    "TB + Expl. + LS": {
        "gmm25": "0.171 / 0.004 / 1.25",
        "funnel": "0.653 / 0.285 / 21.9",
        "manywell": "4.57 / 0.19 / 5.66",
    },
    "VarGrad + Expl. + LP + LS": {
        "gmm25": "0.207 / 0.015 / -",
        "funnel": "0.920 / 0.256 / -",
        "manywell": "4.11 / 0.02 / 5.30",
    },
}
PAPER_SEEDS = 5
NOTES = [
    "Cells: Delta log Z / Delta log Z_RW / W2 at each trial's last evaluation (eval/delta_log_z, "
    "eval/delta_log_z_rw, eval/w2), mean ± std over seeds.",
    f"paper: Table 1 of arXiv:2402.05098, mean over {PAPER_SEEDS} seeds; its third figure, given for some rows "
    "only, is headed W2^2 but the reference's code returns W2, not its square.",
]


def results_table(trials: list, axis: str) -> tuple[list[list[str]], list[str]]:
    """(header and rows, notes) from finished trials (`tracking.TrialRow`): one row per variant of `axis` (the
    paper's rows first, in its order), then the paper's row where it has one; one column per target."""
    param = f"sampled.variants.{axis}"
    grouped: dict[tuple[str, str], list] = {}  # (variant, config.target) -> trials
    for trial in trials:
        grouped.setdefault((trial.params[param], trial.params.get("config.target", "?")), []).append(trial)
    variants = list(dict.fromkeys(variant for variant, _ in grouped))
    variants.sort(key=lambda v: list(PAPER_TABLE_1).index(v) if v in PAPER_TABLE_1 else len(PAPER_TABLE_1))
    targets = sorted(
        {target for _, target in grouped},
        key=lambda t: (list(TARGET_COLUMNS).index(t) if t in TARGET_COLUMNS else len(TARGET_COLUMNS), t),
    )
    table = [[axis, "seeds", *[TARGET_COLUMNS.get(t, t) for t in targets]]]
    for variant in variants:
        groups = [grouped.get((variant, target), []) for target in targets]
        cells = [
            " / ".join(mean_std([t.finals[m] for t in group if m in t.finals], ".3g", ".2g") for m in TABLE_METRICS)
            for group in groups
        ]
        seeds = sorted({len(group) for group in groups if group})  # differs where trials failed or still run
        table.append([variant, str(seeds[0]) if seeds[0] == seeds[-1] else f"{seeds[0]}-{seeds[-1]}", *cells])
        if variant in PAPER_TABLE_1:
            table.append(["  paper", str(PAPER_SEEDS), *[PAPER_TABLE_1[variant].get(t, "-") for t in targets]])
    return table, NOTES
