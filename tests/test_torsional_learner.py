"""TorsionalLearner on the smoke config (propane + methyl formate, anisole zero-shot): training runs and mixes
molecules, the log reward is -E/kT applied once (by hand), evaluation reports every split, checkpoints resume
identically, replay and VarGrad run, and bad molecules stop the run before training."""

import math

import numpy as np
import pydantic
import pytest
import torch

from workloads.objectives import tb_loss
from workloads.torsional.basins import BasinMixtureScore
from workloads.torsional.config import TorsionalConfig
from workloads.torsional.conformer import set_torsions
from workloads.torsional.data import SPLITS, build_dataset
from workloads.torsional.energy_rdkit import RDKitEnergy
from workloads.torsional.energy_torch import TorchTorsionalEnergy
from workloads.torsional.ground_truth import grid_density
from workloads.torsional.learner import EVAL_METRICS, TorsionalLearner
from workloads.torsional.molecule import MoleculeError
from workloads.torsional.torus import backward_log_prob, forward_log_prob


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return TorsionalConfig(cache_dir=str(tmp_path_factory.mktemp("md"))).smoke()


@pytest.fixture(scope="module")
def entries(config):
    return build_dataset(config)


def _learner(config, entries, seed=0):
    return TorsionalLearner(config, seed, entries=entries)


def test_dataset_splits(config, entries):
    assert [e.split for e in entries] == [
        "train_structures",
        "train_structures",
        "unseen_structures",
        "unseen_structures",
        "unseen_molecules",
    ]
    assert [e.structure_id for e in entries][:3] == ["CCC/md0", "COC=O/md0", "CCC/md1"]
    assert not np.allclose(entries[0].positions, entries[2].positions)  # a different MD frame
    assert all(e.positions.shape == (e.molecule.num_atoms, 3) for e in entries)


def test_train_is_finite_and_a_batch_mixes_molecules(config, entries):
    learner = _learner(config, entries)
    batch = learner.sample_batch()
    assert len({entries[i].smiles for i in batch.entry_index.tolist()}) >= 2
    assert len(batch) == config.structures_per_batch * config.trajectories_per_structure
    metrics, terminals = learner.train(2)
    assert learner.step == 2 and all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["train/num_molecules"] >= 2
    assert len(terminals) == 2 * len(batch) and np.isfinite(terminals.energy_kcal_mol).all()


def test_log_reward_is_minus_e_over_kt_applied_once(config, entries):
    learner = _learner(config, entries, seed=1)
    batch = learner.sample_batch()
    energies = learner.batch_energies(batch)
    kT = 0.001987204118 * 298.15
    b = 3
    entry = entries[int(batch.entry_index[b])]
    x = batch.terminal(torch.tensor([b])).double().numpy()  # [1, K]
    ff = RDKitEnergy(entry.molecule, entry.positions, "MMFF94s")
    e_hand = ff.energies(set_torsions(entry.positions, entry.molecule, x))[0]
    e_local = ff.energies(entry.positions)[0]
    assert energies[b].item() == pytest.approx(e_hand, abs=1e-6)
    log_r, clamped, floored = learner.log_reward(batch.entry_index, energies)
    assert not clamped.any()
    e_rel = e_hand - e_local
    expected_log_r = -min(e_rel, config.reward_floor_kcal_mol) / kT  # once, not -E/kT^2
    assert log_r[b].item() == pytest.approx(expected_log_r, rel=1e-9)
    assert bool(floored[b]) == (e_rel > config.reward_floor_kcal_mol)
    # above the floor (a near-clash) and above the clamp (overlap, or NaN): both flagged, log R' = -floor / kT
    e_local_b = learner.structure_energy[batch.entry_index[:3]]
    bad = torch.stack(
        [
            e_local_b[0] + 2 * config.reward_floor_kcal_mol,
            e_local_b[1] + 1e9,
            torch.tensor(float("nan"), dtype=torch.float64),
        ]
    )
    log_r_bad, clamped_bad, floored_bad = learner.log_reward(batch.entry_index[:3], bad)
    assert floored_bad.all() and clamped_bad.tolist() == [False, True, True]
    assert torch.allclose(log_r_bad, torch.full((3,), -config.reward_floor_kcal_mol / kT, dtype=torch.float64))
    # the TB loss of loss_and_step is tb_loss on these log rewards and the learned (shifted) log Z
    graph = learner._graph(batch.entry_index)
    assert config.score_guide == "basins"
    score = BasinMixtureScore(TorchTorsionalEnergy(entries, "MMFF94s"), kT, config.num_steps)  # built anew
    score_fn = lambda x, k: score(batch.entry_index, graph.torsion_graph_index, x, k)
    log_pf = forward_log_prob(
        learner.policy.drift_fn(graph, config.num_steps, score_fn), batch.angles, batch.torsion_index, len(batch)
    )
    log_pb = backward_log_prob(batch.angles, batch.torsion_index, len(batch))
    log_z = learner.log_z_net(learner._graph(batch.entry_index))
    expected = tb_loss(log_pf, log_pb, log_r.float(), log_z).item()
    assert learner.loss_and_step(batch, energies)["train/loss"] == pytest.approx(expected, rel=1e-4)
    # reported log Z is shifted back: log Z = log Z' - E_L / kT
    with torch.no_grad():
        lz_shifted = learner.log_z_net(entry.graph).item()
    assert learner.log_z(batch.entry_index[b : b + 1])[0].item() == pytest.approx(lz_shifted - e_local / kT, rel=1e-6)


def test_evaluation_reports_every_split(config, entries):
    learner = _learner(config, entries)
    learner.train(1)
    ev = learner.evaluate()
    for split in SPLITS:
        for k in EVAL_METRICS:
            assert math.isfinite(ev.metrics[f"eval/{split}/{k}"]), (split, k)
    for k in EVAL_METRICS:
        assert ev.metrics[f"eval/{k}"] == pytest.approx(np.mean([ev.metrics[f"eval/{s}/{k}"] for s in SPLITS]))
    assert 0 <= ev.metrics["eval/jsd"] <= math.log(2) and 0 < ev.metrics["eval/ess_fraction"] <= 1
    assert len(ev.samples) == len(entries) * config.eval_samples
    row = ev.samples[0]
    assert row.smiles == "CCC" and row.local_structure == "CCC/md0" and len(row.torsions) == 2
    assert [s["local_structure"] for s in ev.structures] == [e.structure_id for e in entries]
    assert set(ev.figures) == {"density/CCC", "density/COC=O", "density/COc1ccccc1"}


def test_state_dict_round_trip_continues_identically(config, entries):
    a = _learner(config, entries)
    a.train(1)
    state = a.state_dict()
    metrics_a, terminals_a = a.train(2)
    b = _learner(config, entries, seed=5)
    b.load_state_dict(state)
    metrics_b, terminals_b = b.train(2)
    assert metrics_a == metrics_b
    np.testing.assert_array_equal(terminals_a.angles, terminals_b.angles)
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)
    c = TorsionalLearner(config.model_copy(update={"lr": 5e-4}), 0, entries=entries)
    c.load_state_dict(state)
    assert c.optimizer.param_groups[0]["lr"] == 5e-4  # learning rates come from the config


def test_replay_and_vargrad_train(config, entries):
    learner = _learner(config, entries)
    _, terminals = learner.train(1)
    replay_cfg = config.replay.model_copy(update={"enabled": True, "share": 0.5})
    other = TorsionalLearner(config.model_copy(update={"loss": "vargrad", "replay": replay_cfg}), 0, entries=entries)
    metrics, new = other.train(2, replay=terminals)
    assert metrics["train/replay_fraction"] == pytest.approx(0.5)
    assert all(math.isfinite(v) for v in metrics.values()) and len(new) == len(terminals)  # 2 iterations x half a batch


def test_bad_molecule_stops_before_training(config):
    with pytest.raises(MoleculeError, match="not_a_smiles"):
        build_dataset(config.model_copy(update={"train_smiles": ["CCC", "not_a_smiles"]}))
    with pytest.raises(MoleculeError, match="C1CCCCC1"):  # no rotatable torsion
        build_dataset(config.model_copy(update={"val_smiles": ["C1CCCCC1"]}))


def test_config_is_strict():
    with pytest.raises(pydantic.ValidationError):
        TorsionalConfig(learning_rate=1e-3)
    with pytest.raises(pydantic.ValidationError):
        TorsionalConfig(grid_bins=30)  # 15-degree bins must divide the grid


def test_md_seeds_are_the_training_frames_torsions_with_their_energies(config, entries):
    learner = _learner(config, entries)
    seeds = learner.replay_seeds()
    train = [i for i, e in enumerate(entries) if e.split == "train_structures"]
    assert set(seeds.entry_index.tolist()) == set(train)
    for i in train:
        rows = seeds.entry_index == i
        own_frames = sum(e.smiles == entries[i].smiles for e in (entries[j] for j in train))
        assert rows.sum() == own_frames
        # one of the seeds is the structure's own frame: its torsions give back E_L exactly
        gap = np.abs(seeds.energy_kcal_mol[rows] - learner.structure_energy[i].item()).min()
        assert gap < 1e-6
        K = entries[i].num_torsions
        assert np.isfinite(seeds.angles[rows, :K]).all() and np.isnan(seeds.angles[rows, K:]).all()


def test_three_torsions_exact_grid_and_evaluation(tmp_path):
    """Butane (two methyl rotors and the central C-C): a 48^3 grid (the issue asks >= 36^3) whose log Z agrees
    with an independent Monte Carlo estimate, and an evaluation with histogram metrics over 3 torsions."""
    config = (
        TorsionalConfig(cache_dir=str(tmp_path), grid_bins=72)
        .smoke()
        .model_copy(update={"train_smiles": ["CCCC"], "val_smiles": ["CCC"], "grid_bins": 72, "eval_samples": 200})
    )
    entries = build_dataset(config)
    butane = entries[0]
    assert butane.num_torsions == 3
    learner = _learner(config, entries)
    grid = learner.grid(butane)
    assert grid.log_density.shape == (48, 48, 48)
    coarser = grid_density(lambda a: learner.rdkit.energies(butane, a), 3, 36, learner.kT)
    assert grid.log_z == pytest.approx(coarser.log_z, abs=1e-3)  # converged in the grid spacing
    # Monte Carlo over uniform torsions: ESS ~1% of 200,000 draws, standard error ~0.025 nats
    x = np.random.default_rng(0).uniform(0, 2 * math.pi, (200_000, 3))
    log_r = -learner.rdkit.energies(butane, x) / learner.kT
    log_z_mc = float(np.logaddexp.reduce(log_r) - math.log(len(x)) + 3 * math.log(2 * math.pi))
    assert grid.log_z == pytest.approx(log_z_mc, abs=0.1)
    ev = learner.evaluate()
    three = [s for s in ev.structures if s["smiles"] == "CCCC"]
    assert three and all(0 <= s["jsd"] <= math.log(2) and math.isfinite(s["log_z_error"]) for s in three)
    assert all(len(row.torsions) == 3 for row in ev.samples if row.smiles == "CCCC")
