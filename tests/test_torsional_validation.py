"""The torsional family's bad input and memory bounds: every molecule of a sweep is checked when the sweep is
validated (parse, ETKDG embedding, 1 to 3 torsions), `sample` on a molecule of many torsions stays within a memory
bound or is refused, and the MD cache's sidecars are written atomically."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from orchestrator import cli
from tests.conftest import ROOT, orchestrator_cli
from workloads.torsional import basins, md, molecule
from workloads.torsional.config import TorsionalConfig
from workloads.torsional.data import load_molecules, zero_shot_entry
from workloads.torsional.energy_torch import TorchTorsionalEnergy
from workloads.torsional.ground_truth import MAX_GRID_TORSIONS
from workloads.torsional.molecule import MAX_TORSIONS, MoleculeError, load_molecule
from workloads.torsional.torus import kt_kcal_mol

SWEEP = str(ROOT / "sweeps" / "torsional.yaml")
DECANE = "CCCCCCCCCC"  # 9 torsions: 5^9 windings per basin in the whole cube
SAMPLE_PEAK_RSS_MB = 2500
"""The bound on `sample`'s peak RSS for decane (imports alone: ~0.75 GB; measured 1.1-1.3 GB alone, docs/torsional.md;
once above 1.5 GB inside the full suite). The old winding sum asked for 70 GB: any bound of a few GB catches it."""


# ---------------------------------------------------------------- validation of a sweep's molecules


@pytest.mark.parametrize(
    ("setting", "key", "words"),
    [
        ("config.train_smiles=[CCC, 'C(C']", "config.train_smiles[1]", ["'C(C'", "RDKit cannot parse"]),
        ("config.train_smiles=[CCC, C1CC]", "config.train_smiles[1]", ["'C1CC'", "RDKit cannot parse"]),
        ("config.train_smiles=[C1CCCCC1, CCC]", "config.train_smiles[0]", ["'C1CCCCC1'", "no rotatable torsion"]),
        ("config.val_smiles=[CCCCCC]", "config.val_smiles[0]", ["'CCCCCC'", "5 torsions", "exact grid"]),
    ],
)
def test_validate_refuses_a_bad_molecule_naming_it(capsys, setting, key, words):
    started = time.monotonic()
    code = cli.main(["validate", SWEEP, "--set", setting])
    err = capsys.readouterr().err
    assert code == 2, err
    assert time.monotonic() - started < 30
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one paragraph
    assert f"sweeps/torsional.yaml: {key}: expected a SMILES" in err, err
    for word in words:
        assert word in err, err


def test_every_bad_molecule_is_an_error_at_its_list_index():
    with pytest.raises(ValidationError) as raised:
        TorsionalConfig(train_smiles=["CCC", "C(C", "COC=O"], val_smiles=["C", "CCCC"])
    errors = {error["loc"]: error for error in raised.value.errors()}
    assert set(errors) == {("train_smiles", 1), ("val_smiles", 0)}
    assert errors[("train_smiles", 1)]["input"] == "C(C"
    assert "no rotatable torsion" in errors[("val_smiles", 0)]["ctx"]["found"]
    assert TorsionalConfig(train_smiles=["CCCC"]).train_smiles == ["CCCC"]  # 3 torsions: an exact grid exists


def test_run_refuses_a_bad_molecule_before_ray_starts(tmp_path):
    started = time.monotonic()
    result = orchestrator_cli("run", SWEEP, "--set", "config.train_smiles=[CCC, C1CC]", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 60
    assert result.stderr.count("\n") == 1 and "'C1CC'" in result.stderr, result.stderr
    assert "Ray" not in result.stdout and not (tmp_path / "ray_results").exists()


def test_each_smiles_is_loaded_once_per_process(monkeypatch):
    """Every trial validates its config again (and spec validation many times over): each SMILES costs one load."""
    loads = []
    load = molecule._load
    monkeypatch.setattr(molecule, "_load", lambda *args: loads.append(args[0]) or load(*args))
    molecule.check_smiles.cache_clear()
    for _ in range(3):
        TorsionalConfig(train_smiles=["CCC", "COC=O"], val_smiles=["CCO"])
    assert sorted(loads) == ["CCC", "CCO", "COC=O"]


def test_a_sweeps_molecules_need_an_exact_grid():
    """The data set refuses what the config refuses: a molecule beyond MAX_GRID_TORSIONS has no ground truth."""
    with pytest.raises(MoleculeError, match=r"'CCCCCC'.*5 torsions, more than the 3 of an exact grid"):
        load_molecules(["CCC", "CCCCCC"], "MMFF94s")
    assert MAX_GRID_TORSIONS == 3


def test_sample_refuses_a_molecule_beyond_the_torsion_limit():
    smiles = "C" * (MAX_TORSIONS + 3)  # an alkane of MAX_TORSIONS + 2 torsions
    with pytest.raises(MoleculeError, match=rf"{smiles}.*{MAX_TORSIONS + 2} torsions, more than the {MAX_TORSIONS}"):
        zero_shot_entry(smiles, "etkdg", TorsionalConfig())
    assert load_molecule("C" * (MAX_TORSIONS + 1)).num_torsions == MAX_TORSIONS


# ---------------------------------------------------------------- the basin guide's windings


def test_separable_windings_match_the_whole_cube(tmp_path):
    """Torsion by torsion (what molecules of many torsions use) against the whole cube of windings, on butane's real
    basins at points drawn from the smoothed mixture: exact for diagonal covariances, close for the real ones."""
    config = TorsionalConfig(cache_dir=str(tmp_path))
    energy = TorchTorsionalEnergy([zero_shot_entry("CCCC", "etkdg", config)], config.variant)
    score = basins.BasinMixtureScore(energy, kt_kcal_mol(config.temperature_k), 20, cache_dir=tmp_path)
    assert not score.separable(float(score.c[0]))  # 3 torsions: the whole cube
    generator = torch.Generator().manual_seed(0)
    rows = torch.zeros(400, dtype=torch.long)
    for k in range(20):
        c = float(score.c[k])
        basin = torch.multinomial(torch.softmax(score.log_mass[0], 0), len(rows), True, generator=generator)
        chol = torch.linalg.cholesky(score.cov[0, basin] + c * torch.eye(3, dtype=torch.float64))
        noise = torch.randn(len(rows), 3, 1, generator=generator, dtype=torch.float64)
        x = torch.remainder(score.means[0, basin] + (chol @ noise)[..., 0], 2 * math.pi)  # [R, 3]
        cube, separable = score._score_rows(rows, x, c, False), score._score_rows(rows, x, c, True)
        error = (separable - cube).norm(dim=1) / cube.norm(dim=1).clamp_min(1e-2)
        assert float(error.median()) < 1e-2 and float(error.quantile(0.9)) < 0.05, (k, error.median(), error.max())
    diagonal = torch.diag_embed(torch.diagonal(score.cov, dim1=-2, dim2=-1))
    score.cov = diagonal
    x = torch.rand(300, 3, generator=generator, dtype=torch.float64) * 2 * math.pi
    rows = torch.zeros(300, dtype=torch.long)
    for k in (0, 5, 10, 19):
        c = float(score.c[k])
        torch.testing.assert_close(score._score_rows(rows, x, c, True), score._score_rows(rows, x, c, False))


def test_score_chunks_give_the_same_numbers(tmp_path, monkeypatch):
    config = TorsionalConfig(cache_dir=str(tmp_path))
    entries = [zero_shot_entry(s, "etkdg", config) for s in ("CCC", "COC=O")]
    score = basins.BasinMixtureScore(TorchTorsionalEnergy(entries, config.variant), 0.6, 20, cache_dir=tmp_path)
    entry_index = torch.tensor([0, 1, 1, 0])
    torsion_index = torch.arange(4).repeat_interleave(2)
    x = torch.rand(20, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 * math.pi
    whole = score(entry_index, torsion_index, x, torch.arange(20))
    monkeypatch.setattr(basins, "SCORE_CHUNK_ELEMENTS", 1)  # one row per chunk
    assert torch.equal(score(entry_index, torsion_index, x, torch.arange(20)), whole)


# ---------------------------------------------------------------- sample on decane within a memory bound


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """An MLflow store with one run whose eval/step_0000001/model.pt is an untrained learner's (default sizes)."""
    from mlflow.tracking import MlflowClient

    from workloads.torsional.export import save_model
    from workloads.torsional.learner import TorsionalLearner

    tmp = tmp_path_factory.mktemp("sample")
    config = TorsionalConfig(cache_dir=str(tmp / "cache"))
    learner = TorsionalLearner(config, seed=0, entries=[zero_shot_entry("CCC", "etkdg", config)])
    (tmp / "step").mkdir()
    save_model(tmp / "step" / "model.pt", learner.state_dict())
    uri = f"sqlite:///{tmp / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sample", artifact_location=(tmp / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_artifact(run_id, str(tmp / "step" / "model.pt"), "eval/step_0000001")
    return uri, run_id, tmp


WATCHED_SAMPLE = """
import resource, sys, threading, time, os
from orchestrator import cli

def watch():
    while True:
        if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > {bound_kb}:
            print("peak RSS over the bound", flush=True)
            os._exit(99)
        time.sleep(0.05)

threading.Thread(target=watch, daemon=True).start()
code = cli.main(sys.argv[1:])
print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(code)
"""


def test_sample_on_decane_stays_within_the_memory_bound(model_run):
    uri, run_id, tmp = model_run
    out = tmp / "decane.parquet"
    script = textwrap.dedent(WATCHED_SAMPLE).format(bound_kb=SAMPLE_PEAK_RSS_MB * 1024)
    args = ["sample", "--run", run_id, "--smiles", DECANE, "-n", "600", "--out", str(out), "--tracking-uri", uri]
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    peak_mb = int(result.stdout.split("peak_rss_kb")[1].split()[0]) / 1024
    assert peak_mb < SAMPLE_PEAK_RSS_MB
    assert f"600 samples of {DECANE}" in result.stdout and "9 torsions" in result.stdout
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == 600 and all(len(t) == 9 for t in table.column("torsions").to_pylist())
    assert np.isfinite(table.column("energy_kcal_mol").to_numpy()).all()


def test_sample_refuses_a_molecule_beyond_the_limit_in_one_paragraph(model_run, capsys):
    uri, run_id, tmp = model_run
    smiles = "C" * (MAX_TORSIONS + 3)
    args = ["sample", "--run", run_id, "--smiles", smiles, "-n", "10", "--out", str(tmp / "x.sdf")]
    assert cli.main([*args, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and smiles in err and f"more than the {MAX_TORSIONS}" in err, err


# ---------------------------------------------------------------- atomic MD sidecars


def test_md_sidecar_is_written_atomically(tmp_path, monkeypatch):
    """The .json beside the cached MD frames goes to a temporary file of the same folder, then os.replace: a crash or
    a concurrent writer never leaves a part of it, and a failed write keeps the old file and no temporary."""
    propane = load_molecule("CCC")
    monkeypatch.setattr(md, "run_md", lambda m, n, *args, **kwargs: np.zeros((n, m.num_atoms, 3)))
    replaced: list[tuple[Path, Path]] = []
    replace = md.os.replace
    monkeypatch.setattr(md.os, "replace", lambda a, b: replaced.append((Path(a), Path(b))) or replace(a, b))
    md.md_frames(propane, 2, seed=0, cache_dir=tmp_path)
    (sidecar,) = tmp_path.glob("md-*.json")
    assert json.loads(sidecar.read_text())["smiles"] == "CCC"
    (source,) = [a for a, b in replaced if b == sidecar]
    assert source.parent == tmp_path and source != sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([sidecar.name, sidecar.with_suffix(".npy").name])

    def failing(a, b):
        raise OSError("disk gone")

    monkeypatch.setattr(md.os, "replace", failing)
    with pytest.raises(OSError, match="disk gone"):
        md.write_text_atomic(sidecar, "{}")
    assert json.loads(sidecar.read_text())["smiles"] == "CCC"  # the old file, whole
    assert len(list(tmp_path.iterdir())) == 2  # no temporary left
