"""`python -m orchestrator sample`: the command line of orchestrator/families/torsional/sample.py (imported only
when the command runs, so the other commands do not load torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "sample"
HELP = "zero-shot samples of a trained torsional trial for any molecule"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="MLflow run id of a torsional trial (a sweep's child run)")
    parser.add_argument("--smiles", required=True, help="the molecule, e.g. 'CC(C)O' (needs >= 1 torsion)")
    parser.add_argument(
        "--structure",
        choices=["etkdg", "md"],
        default="etkdg",
        help="local structure: the ETKDG + MMFF conformer (default) or MD frame 0",
    )
    parser.add_argument("-n", dest="num_samples", type=int, required=True, help="number of samples")
    parser.add_argument("--out", required=True, type=Path, help="FILE.parquet or FILE.sdf")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from orchestrator.families.torsional.sample import sample
    from orchestrator.tracking import default_tracking_uri

    tracking_uri = args.tracking_uri or default_tracking_uri()
    print(sample(args.run, args.smiles, args.structure, args.num_samples, args.out, tracking_uri, args.seed))
    return 0
