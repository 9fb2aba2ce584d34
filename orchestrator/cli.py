"""`python -m orchestrator run | validate | resume | report | sample`.

A user's mistake ends with one paragraph on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # `sample` prints one line, not a bar

from orchestrator.errors import OrchestratorError  # noqa: E402
from orchestrator.spec import SweepSpec, load_sweep  # noqa: E402

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a sweep file")
    run.add_argument("sweep", help="sweep YAML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key of the sweep file, e.g. --set config.total_iters=2000")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep's mlflow.tracking_uri, else "
                                            "MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    run.add_argument("--smoke", action="store_true", help="at most 2 trials of a few iterations: a stack check")

    validate = commands.add_parser("validate", help="check sweep files without starting Ray")
    validate.add_argument("sweeps", nargs="+")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    resume = commands.add_parser("resume", help="continue an interrupted sweep")
    resume.add_argument("sweep", help="the sweep folder `run` printed, or the sweep's name")
    resume.add_argument("--address")
    resume.add_argument("--storage-path", help="where to look for a sweep given by name "
                                               "(default $ORCHESTRATOR_STORAGE_PATH, else ./ray_results)")

    report = commands.add_parser("report", help="the trial table of a sweep, from MLflow")
    report.add_argument("experiment", help="MLflow experiment name (the sweep's mlflow.experiment or name)")
    report.add_argument("--tracking-uri")
    report.add_argument("--metric", help="metric of the table (default: the sweep's tune.metric)")
    report.add_argument("--mode", choices=["min", "max"], help="(default: the sweep's tune.mode)")
    report.add_argument("--table", action="store_true",
                        help="the diffusion samplers' results table: methods x targets, mean ± std over seeds of the "
                             "final Delta log Z / Delta log Z_RW / W2, beside the paper's Table 1")
    report.add_argument("--rows", default="method", metavar="AXIS",
                        help="with --table: the variants axis whose names are the rows (default: method)")
    report.add_argument("--markdown", type=Path, metavar="FILE", help="with --table: also write it as Markdown")

    sample = commands.add_parser("sample", help="zero-shot samples of a trained torsional trial for any molecule")
    sample.add_argument("--run", required=True, help="MLflow run id of a torsional trial (a sweep's child run)")
    sample.add_argument("--smiles", required=True, help="the molecule, e.g. 'CC(C)O' (needs >= 1 torsion)")
    sample.add_argument("--structure", choices=["etkdg", "md"], default="etkdg",
                        help="local structure: the ETKDG + MMFF conformer (default) or MD frame 0")
    sample.add_argument("-n", dest="num_samples", type=int, required=True, help="number of samples")
    sample.add_argument("--out", required=True, type=Path, help="FILE.parquet or FILE.sdf")
    sample.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                                               "sqlite:///mlflow.db)")
    sample.add_argument("--seed", type=int, default=0)
    return parser


def _tracking_uri(cli_uri: str | None, spec: SweepSpec | None) -> str:
    from orchestrator.tracking import default_tracking_uri

    return cli_uri or (spec.mlflow.tracking_uri if spec else None) or default_tracking_uri()


def cmd_validate(args: argparse.Namespace) -> int:
    for path in args.sweeps:
        spec = load_sweep(path, args.overrides)
        print(f"{path}: ok (workload {spec.workload}, up to {spec.trial_count_hint()} trials)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_sweep(args.sweep, args.overrides)
    if args.smoke:
        spec = spec.smoke()
    tracking_uri = _tracking_uri(args.tracking_uri, spec)
    from orchestrator.tuner import init_ray, run_sweep

    init_ray(args.address)
    handle, status = run_sweep(spec, tracking_uri)
    _print_table(handle.tracking_uri, spec.mlflow.experiment or spec.name, spec.tune.metric, spec.tune.mode)
    return EXIT_INTERRUPTED if status == "KILLED" else 0


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.tuner import SweepHandle, find_sweep, init_ray, run_sweep

    path = find_sweep(args.sweep, args.storage_path)
    handle = SweepHandle.load(path)
    init_ray(args.address)
    _, status = run_sweep(handle.spec, handle.tracking_uri, resume_path=path)
    spec = handle.spec
    _print_table(handle.tracking_uri, spec.mlflow.experiment or spec.name, spec.tune.metric, spec.tune.mode)
    return EXIT_INTERRUPTED if status == "KILLED" else 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.markdown and not args.table:
        raise OrchestratorError("report: --markdown writes the --table; add --table.")
    if args.table:
        _print_results_table(_tracking_uri(args.tracking_uri, None), args.experiment, args.rows, args.markdown)
    else:
        _print_table(_tracking_uri(args.tracking_uri, None), args.experiment, args.metric, args.mode)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from orchestrator.sample import sample

    print(sample(args.run, args.smiles, args.structure, args.num_samples, args.out,
                 _tracking_uri(args.tracking_uri, None), args.seed))
    return 0


def _print_table(tracking_uri: str, experiment: str, metric: str | None, mode: str | None) -> None:
    from orchestrator.tracking import trial_table, ui_hint

    metric, rows = trial_table(tracking_uri, experiment, metric, mode)
    sampled = sorted({k for row in rows for k in row.params if k.startswith("sampled.")})
    header = ["trial", "status", *[k.removeprefix("sampled.") for k in sampled], f"final {metric}", f"best {metric}"]
    table = [header] + [
        [row.name, row.status, *[row.params.get(k, "") for k in sampled], _fmt(row.final), _fmt(row.best)]
        for row in rows
    ]
    print()
    print(_aligned(table))
    print(f"\n{len(rows)} trials in experiment {experiment!r}. {ui_hint(tracking_uri)}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _aligned(table: list[list[str]]) -> str:
    """Rows of cells as text columns, each as wide as its widest cell."""
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table)


def _markdown(table: list[list[str]]) -> str:
    lines = [table[0], ["---"] * len(table[0]), *table[1:]]
    return "\n".join("| " + " | ".join(str(cell).strip() for cell in line) + " |" for line in lines)


# ---------------------------------------------------------------- report --table (diffusion samplers)

TABLE_METRICS = ("eval/delta_log_z", "eval/delta_log_z_rw", "eval/w2")
"""A cell's figures, in the paper's order: Delta log Z (ELBO), Delta log Z_RW (importance-weighted), W2.
The paper heads its third column W2^2, but the reference's code (energy_sampling/sample_metrics.py, `wasserstein`
with power 2) returns the square root of the exact OT cost under squared Euclidean distance: W2 itself. Two sets
of 2,000 exact Manywell samples are W2^2 = 29.4 apart, far above the paper's 5.66; their W2 (5.4) is not."""
TARGET_COLUMNS = {"gmm25": "25GMM", "funnel": "Funnel", "manywell": "Manywell", "gmm40": "40GMM"}
"""config.target -> column name, in the paper's order; other targets follow, sorted."""
PAPER_TABLE_1: dict[str, dict[str, str]] = {
    # arXiv:2402.05098, Table 1, mean over 5 seeds, as printed in ../shared/papers/README.md (section 2):
    # Delta log Z / Delta log Z_RW / W2 (headed W2^2 there), '-' where the summary gives no figure; no 40GMM column.
    "PIS": {"gmm25": "1.769 / 1.274 / 6.37", "funnel": "0.534 / 0.262 / 22.0", "manywell": "3.85 / 2.69 / 6.15"},
    "TB": {"gmm25": "1.176 / 1.071 / -", "funnel": "0.690 / 0.239 / -", "manywell": "4.01 / 2.67 / -"},
    "TB + Expl.": {"gmm25": "0.560 / 0.422 / -", "funnel": "0.749 / 0.226 / -", "manywell": "4.01 / 2.68 / -"},
    "FL-SubTB + LP": {"gmm25": "0.209 / 0.011 / -", "funnel": "0.563 / 0.155 / -", "manywell": "4.23 / 2.66 / -"},
    "TB + Expl. + LS": {"gmm25": "0.171 / 0.004 / 1.25", "funnel": "0.653 / 0.285 / 21.9",
                        "manywell": "4.57 / 0.19 / 5.66"},
    "VarGrad + Expl. + LP + LS": {"gmm25": "0.207 / 0.015 / -", "funnel": "0.920 / 0.256 / -",
                                  "manywell": "4.11 / 0.02 / 5.30"},
}
PAPER_SEEDS = 5


def results_table(trials: list, axis: str) -> list[list[str]]:
    """Header and rows of the results table from finished trials (`tracking.TrialRow`): one row per
    variant of `axis` (the paper's rows first, in its order), then the paper's row where it has one;
    one column per target; a cell is 'Delta log Z / Delta log Z_RW / W2', each mean ± std over seeds."""
    from orchestrator.summaries import mean_std

    param = f"sampled.variants.{axis}"
    grouped: dict[tuple[str, str], list] = {}  # (variant, config.target) -> trials
    for trial in trials:
        grouped.setdefault((trial.params[param], trial.params.get("config.target", "?")), []).append(trial)
    variants = list(dict.fromkeys(variant for variant, _ in grouped))
    variants.sort(key=lambda v: list(PAPER_TABLE_1).index(v) if v in PAPER_TABLE_1 else len(PAPER_TABLE_1))
    targets = sorted({target for _, target in grouped},
                     key=lambda t: (list(TARGET_COLUMNS).index(t) if t in TARGET_COLUMNS else len(TARGET_COLUMNS), t))
    table = [[axis, "seeds", *[TARGET_COLUMNS.get(t, t) for t in targets]]]
    for variant in variants:
        groups = [grouped.get((variant, target), []) for target in targets]
        cells = [" / ".join(mean_std([t.finals[m] for t in group if m in t.finals], ".3g", ".2g")
                            for m in TABLE_METRICS)
                 for group in groups]
        seeds = sorted({len(group) for group in groups if group})  # differs where trials failed or still run
        table.append([variant, str(seeds[0]) if seeds[0] == seeds[-1] else f"{seeds[0]}-{seeds[-1]}", *cells])
        if variant in PAPER_TABLE_1:
            table.append(["  paper", str(PAPER_SEEDS), *[PAPER_TABLE_1[variant].get(t, "-") for t in targets]])
    return table


def _print_results_table(tracking_uri: str, experiment: str, axis: str, markdown: Path | None) -> None:
    from orchestrator.tracking import trial_table

    _, trials = trial_table(tracking_uri, experiment)
    param = f"sampled.variants.{axis}"
    finished = [t for t in trials if t.status == "FINISHED" and param in t.params]
    if not finished:
        raise OrchestratorError(
            f"report --table: no finished trial of experiment {experiment!r} has a variant of the axis {axis!r} "
            f"(param {param}); the table's rows are the names of a variants axis of the sweep (see "
            f"sweeps/samplers_benchmark.yaml); name another with --rows.")
    table = results_table(finished, axis)
    left_out = len(trials) - len(finished)
    notes = [
        "Cells: Delta log Z / Delta log Z_RW / W2 at each trial's last evaluation (eval/delta_log_z, "
        "eval/delta_log_z_rw, eval/w2), mean ± std over seeds.",
        f"paper: Table 1 of arXiv:2402.05098, mean over {PAPER_SEEDS} seeds; its third figure, given for some rows "
        "only, is headed W2^2 but the reference's code returns W2, not its square.",
    ] + ([f"{left_out} trials left out (not finished, or without a {axis} variant)."] if left_out else [])
    print()
    print(_aligned(table))
    print("\n" + "\n".join(notes))
    if markdown is not None:
        markdown.write_text(_markdown(table) + "\n\n" + "\n".join(notes) + "\n")
        print(f"Markdown written to {markdown}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"run": cmd_run, "validate": cmd_validate, "resume": cmd_resume, "report": cmd_report,
               "sample": cmd_sample}[args.command]
    try:
        return command(args)
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
