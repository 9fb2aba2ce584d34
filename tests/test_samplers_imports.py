"""`workloads/` stays free of ray and mlflow (so every piece runs in a plain process)."""
import ast
from pathlib import Path

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads"
FORBIDDEN = {"ray", "mlflow"}


def test_no_ray_or_mlflow_imports_under_workloads():
    offenders = []
    for path in WORKLOADS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders
