"""Local structures from Langevin molecular dynamics with the MMFF OpenMM system, cached on disk.

A local structure is one MD frame: its bond lengths and angles (and ring geometry) are kept while
the policy sets the torsions. The MD (OpenMM LangevinMiddleIntegrator, no constraints since MMFF's
X-H bonds are flexible) starts from the molecule's relaxed conformer with velocities drawn at T,
runs `equilibration_ps`, then takes one frame every `spacing_ps`:
    frame f = x(t_eq + (f + 1) spacing),    f = 0 .. F - 1.
Bond and angle vibrations (periods of 10-100 fs) dephase within ~0.1 ps: measured on the
tetrahydrophthalimide training molecule, the lag-1 correlation of bond lengths and angles between
frames is already within noise (|r| < 0.15 over 60 frames) at 0.1 ps spacing; the default 0.5 ps
leaves a margin, and 1/gamma = 1 ps of velocity memory does not carry into the local structure.
Seeds: OpenMM reads 0 as "pick one at random", so seed s is passed as s + 1.

Frames are cached as .npy under `cache_dir` (default ./.cache/torsional), keyed by a hash of
(SMILES, force field, seed, number of frames, MD settings, atom order and starting conformer):
a second call, in this process or another, reads the file instead of rerunning MD.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from .energy_openmm import make_context
from .mmff_openmm import mmff_system
from .molecule import Molecule

CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path(".cache/torsional")


@dataclass(frozen=True)
class MDSettings:
    temperature_k: float = 298.15
    """Langevin bath temperature T (K)."""
    timestep_fs: float = 1.0
    """Integration step (fs); MMFF bonds to H are flexible, so no more than 1 fs."""
    friction_per_ps: float = 1.0
    """Langevin friction gamma (1/ps)."""
    equilibration_ps: float = 2.0
    """Time discarded before the first frame (ps)."""
    spacing_ps: float = 0.5
    """Time between two frames (ps)."""
    platform: str = "Reference"
    """OpenMM platform; Reference beats CPU on molecules of a few dozen atoms."""


def run_md(
    molecule: Molecule,
    num_frames: int,
    seed: int,
    variant: str = "MMFF94s",
    settings: MDSettings = MDSettings(),
    **overrides,
) -> np.ndarray:
    """[F, N, 3] float64 Angstrom frames of Langevin MD at settings.temperature_k, centred on the origin.

    `overrides` replace fields of `settings`, e.g. run_md(m, 20, 0, temperature_k=350.0, spacing_ps=1.0).
    """
    settings = replace(settings, **overrides)
    system = mmff_system(molecule.mol, variant)
    temperature = settings.temperature_k * unit.kelvin
    integrator = openmm.LangevinMiddleIntegrator(
        temperature, settings.friction_per_ps / unit.picosecond, settings.timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed + 1)
    context = make_context(system, settings.platform, integrator)
    context.setPositions(molecule.positions() * 0.1)  # [N, 3] nm
    context.setVelocitiesToTemperature(temperature, seed + 1)

    steps_per_ps = round(1000.0 / settings.timestep_fs)
    integrator.step(round(settings.equilibration_ps * steps_per_ps))
    spacing = max(1, round(settings.spacing_ps * steps_per_ps))
    frames = np.empty((num_frames, molecule.num_atoms, 3))  # [F, N, 3]
    for f in range(num_frames):
        integrator.step(spacing)
        x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        frames[f] = x - x.mean(axis=0)
    if not np.isfinite(frames).all():
        raise RuntimeError(f"MD of {molecule.smiles!r} ({variant}, seed {seed}) blew up: non-finite positions")
    return frames


def cache_key(molecule: Molecule, num_frames: int, seed: int, variant: str, settings: MDSettings) -> str:
    start = np.round(molecule.positions(), 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    fields = {
        "version": CACHE_VERSION,
        "smiles": molecule.smiles,
        "variant": variant,
        "seed": seed,
        "num_frames": num_frames,
        "settings": asdict(settings),
        "atoms": [a.GetAtomicNum() for a in molecule.mol.GetAtoms()],
        "bonds": sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in molecule.mol.GetBonds()),
        "start": start.tolist(),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def md_frames(
    molecule: Molecule,
    num_frames: int,
    seed: int,
    variant: str = "MMFF94s",
    cache_dir: Path | str | None = None,
    settings: MDSettings = MDSettings(),
    **overrides,
) -> np.ndarray:
    """run_md's [F, N, 3] frames, read from cache_dir/<key>.npy when present, else computed and stored."""
    settings = replace(settings, **overrides)
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    path = cache_dir / f"md-{cache_key(molecule, num_frames, seed, variant, settings)}.npy"
    if path.exists():
        return np.load(path)
    frames = run_md(molecule, num_frames, seed, variant, settings)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, frames)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    sidecar = {"smiles": molecule.smiles, "variant": variant, "seed": seed, "num_frames": num_frames}
    write_text_atomic(path.with_suffix(".json"), json.dumps({**sidecar, "settings": asdict(settings)}, indent=1))
    return frames


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file in path's folder, then os.replace it onto `path`: a reader, or a trial that
    writes the same file at the same time, sees the old file or the whole new one, never a part."""
    f = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with f:
            f.write(text)
        os.replace(f.name, path)
    except BaseException:
        Path(f.name).unlink(missing_ok=True)
        raise


def train_and_heldout_frames(
    molecule: Molecule,
    n_train: int,
    n_heldout: int,
    seed: int,
    variant: str = "MMFF94s",
    cache_dir: Path | str | None = None,
    settings: MDSettings = MDSettings(),
    **overrides,
) -> tuple[np.ndarray, np.ndarray]:
    """([n_train, N, 3], [n_heldout, N, 3]): the first n_train frames of one trajectory, then the last n_heldout."""
    frames = md_frames(molecule, n_train + n_heldout, seed, variant, cache_dir, settings, **overrides)
    return frames[:n_train], frames[n_train:]
