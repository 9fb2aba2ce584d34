"""`python -m orchestrator run | validate | resume | report`, and the commands the families add
(`Family.commands`).

Exit codes (docs/cli.md): 0 every trial finished; 1 some trial failed, or the sweep stopped on an error after it
started; 2 a user's mistake found before anything started (a sweep file, a store that cannot be written, a cluster
too small), told in one paragraph on stderr, never a traceback; 130 interrupted (`resume` continues the sweep).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import OrchestratorError
from orchestrator.registry import family_names, get_family
from orchestrator.spec import SweepSpec, load_sweep

if TYPE_CHECKING:
    from orchestrator.tuner import SweepHandle

EXIT_TRIALS_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a sweep file")
    run.add_argument("sweep", help="sweep YAML file")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the sweep file, e.g. --set config.total_iters=2000",
    )
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: the sweep's mlflow.tracking_uri, else "
        "MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    run.add_argument("--smoke", action="store_true", help="at most 2 trials of a few iterations: a stack check")

    validate = commands.add_parser("validate", help="check sweep files without starting Ray")
    validate.add_argument("sweeps", nargs="+")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    resume = commands.add_parser("resume", help="continue an interrupted sweep")
    resume.add_argument("sweep", help="the sweep folder `run` printed, or the sweep's name")
    resume.add_argument("--address")
    resume.add_argument(
        "--storage-path",
        help="where to look for a sweep given by name (default $ORCHESTRATOR_STORAGE_PATH, else ./ray_results; "
        "~/ray_results under ray job submit)",
    )

    sync = commands.add_parser(
        "sync", help="send a sweep's MLflow writes that waited for an unreachable store (its outbox)"
    )
    sync.add_argument("sweep", help="the sweep folder `run` printed, or the sweep's name")
    sync.add_argument("--storage-path", help="where to look for a sweep given by name (as for resume)")

    report = commands.add_parser("report", help="the trial table of a sweep, from MLflow")
    report.add_argument(
        "experiment", help="MLflow experiment name (the sweep's mlflow.experiment, by default its name)"
    )
    report.add_argument("--tracking-uri")
    report.add_argument("--metric", help="metric of the table (default: the sweep's tune.metric)")
    report.add_argument("--mode", choices=["min", "max"], help="(default: the sweep's tune.mode)")
    report.add_argument(
        "--table",
        action="store_true",
        help="the results table of the sweep's family, where it has one (`Family.report_table`)",
    )
    report.add_argument(
        "--rows",
        default="method",
        metavar="AXIS",
        help="with --table: the variants axis whose names are the rows (default: method)",
    )
    report.add_argument("--markdown", type=Path, metavar="FILE", help="with --table: also write it as Markdown")

    for module in _family_commands():
        module.add_arguments(commands.add_parser(module.COMMAND, help=module.HELP))
    return parser


def _family_commands() -> list:
    """The command modules the registered families declare (`Family.commands`)."""
    return [importlib.import_module(path) for name in family_names() for path in get_family(name).commands]


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
    from orchestrator.tuner import check_stores, init_ray, run_sweep

    check_stores(spec, tracking_uri)  # in seconds, before Ray starts
    init_ray(args.address)
    handle, status = run_sweep(spec, tracking_uri)
    if not handle.unsent:  # else the store is away, and run_sweep said so
        _print_table(handle.tracking_uri, spec.mlflow.experiment, spec.tune.metric, spec.tune.mode)
    return _exit_code(handle, status)


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.tuner import SweepHandle, check_stores, find_sweep, init_ray, run_sweep

    path = find_sweep(args.sweep, args.storage_path)
    handle = SweepHandle.load(path)
    check_stores(handle.spec, handle.tracking_uri, handle.path)
    init_ray(args.address)
    handle, status = run_sweep(handle.spec, handle.tracking_uri, resume_path=path)
    spec = handle.spec
    if not handle.unsent:
        _print_table(handle.tracking_uri, spec.mlflow.experiment, spec.tune.metric, spec.tune.mode)
    return _exit_code(handle, status)


def cmd_sync(args: argparse.Namespace) -> int:
    """0 when nothing waits any more, 1 when the store still did not take everything."""
    from orchestrator.tuner import find_sweep, sync_sweep

    handle, sent, left = sync_sweep(find_sweep(args.sweep, args.storage_path))
    print(f"sweep {handle.spec.name}: {sent} MLflow writes sent to {handle.tracking_uri}, {left} still wait in "
          f"{handle.outbox}")  # fmt: skip
    return EXIT_TRIALS_FAILED if left else 0


def _exit_code(handle: SweepHandle, status: str) -> int:
    """130 when the sweep was interrupted, 1 when a trial failed, else 0."""
    if status == "KILLED":
        return EXIT_INTERRUPTED
    if status == "FAILED" or handle.failed_trials:
        failed = "1 trial" if handle.failed_trials == 1 else f"{handle.failed_trials} trials"
        print(
            f"\n{failed} failed: the errors are on their MLflow runs (tag orchestrator.error) and in {handle.path}.",
            file=sys.stderr,
        )
        return EXIT_TRIALS_FAILED
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.markdown and not args.table:
        raise OrchestratorError("report: --markdown writes the --table; add --table.")
    if args.table:
        _print_results_table(_tracking_uri(args.tracking_uri, None), args.experiment, args.rows, args.markdown)
    else:
        _print_table(_tracking_uri(args.tracking_uri, None), args.experiment, args.metric, args.mode)
    return 0


def _print_table(tracking_uri: str, experiment: str, metric: str | None, mode: str | None) -> None:
    from orchestrator.tracking import trial_table, ui_hint

    sweep = trial_table(tracking_uri, experiment, metric, mode)
    metric, rows = sweep.metric, sweep.rows
    sampled = sorted({k for row in rows for k in row.params if k.startswith("sampled.")})
    header = ["trial", "status", *[k.removeprefix("sampled.") for k in sampled], f"final {metric}", f"best {metric}"]
    table = [header] + [
        [row.name, row.status, *[row.params.get(k, "") for k in sampled], _fmt(row.final), _fmt(row.best)]
        for row in rows
    ]
    print()
    print(_aligned(table))
    print(f"\n{len(rows)} trials in experiment {experiment!r}. {ui_hint(tracking_uri, sweep.experiment_id)}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _aligned(table: list[list[str]]) -> str:
    """Rows of cells as text columns, each as wide as its widest cell."""
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table)


def _markdown(table: list[list[str]]) -> str:
    lines = [table[0], ["---"] * len(table[0]), *table[1:]]
    return "\n".join("| " + " | ".join(str(cell).strip() for cell in line) + " |" for line in lines)


def _print_results_table(tracking_uri: str, experiment: str, axis: str, markdown: Path | None) -> None:
    from orchestrator.tracking import trial_table

    sweep = trial_table(tracking_uri, experiment)
    table_fn = get_family(sweep.workload).load_report_table() if sweep.workload in family_names() else None
    if table_fn is None:
        with_table = [name for name in family_names() if get_family(name).report_table]
        raise OrchestratorError(
            f"report --table: the sweep of experiment {experiment!r} is of workload {sweep.workload!r}, which has no "
            f"results table (workloads with one: {', '.join(with_table) or 'none'})."
        )
    param = f"sampled.variants.{axis}"
    finished = [t for t in sweep.rows if t.status == "FINISHED" and param in t.params]
    if not finished:
        raise OrchestratorError(
            f"report --table: no finished trial of experiment {experiment!r} has a variant of the axis {axis!r} "
            f"(param {param}); the table's rows are the names of a variants axis of the sweep; name another "
            f"with --rows."
        )
    table, notes = table_fn(finished, axis)
    left_out = len(sweep.rows) - len(finished)
    if left_out:
        notes = [*notes, f"{left_out} trials left out (not finished, or without a {axis} variant)."]
    print()
    print(_aligned(table))
    print("\n" + "\n".join(notes))
    if markdown is not None:
        markdown.write_text(_markdown(table) + "\n\n" + "\n".join(notes) + "\n")
        print(f"Markdown written to {markdown}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # commands print lines, not bars
    args = _parser().parse_args(argv)
    commands = {"run": cmd_run, "validate": cmd_validate, "resume": cmd_resume, "report": cmd_report, "sync": cmd_sync}
    commands.update({module.COMMAND: module.run for module in _family_commands()})
    command = commands[args.command]
    try:
        return command(args)
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
