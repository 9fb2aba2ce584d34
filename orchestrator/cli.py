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
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep's, else sqlite:///mlflow.db)")
    run.add_argument("--smoke", action="store_true", help="at most 2 trials of a few iterations: a stack check")

    validate = commands.add_parser("validate", help="check sweep files without starting Ray")
    validate.add_argument("sweeps", nargs="+")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    resume = commands.add_parser("resume", help="continue an interrupted sweep")
    resume.add_argument("sweep", help="the sweep folder `run` printed, or the sweep's name")
    resume.add_argument("--address")
    resume.add_argument("--storage-path", help="where to look for a sweep given by name (default ./ray_results)")

    report = commands.add_parser("report", help="the trial table of a sweep, from MLflow")
    report.add_argument("experiment", help="MLflow experiment name (the sweep's mlflow.experiment or name)")
    report.add_argument("--tracking-uri")
    report.add_argument("--metric", help="metric of the table (default: the sweep's tune.metric)")
    report.add_argument("--mode", choices=["min", "max"], help="(default: the sweep's tune.mode)")

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
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    print()
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)))
    print(f"\n{len(rows)} trials in experiment {experiment!r}. {ui_hint(tracking_uri)}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


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
