"""TorsionalLearner: a conditional GFlowNet over torsion angles (Torsional-GFN, arXiv:2507.11759).

One training iteration (one batch mixes molecules and local structures L):
    pick `structures_per_batch` training structures (without replacement), `trajectories_per_structure` each;
    tau_b ~ PF_theta(. | G_b, L_b) with exploration (a step's std x noise_factor w.p. noise_prob), or, for a
        `replay.share` of the batch, tau_b ~ PB(. | x_b) back from replayed terminal torsions x_b;
    E_b = E(x_b | L_b) kcal/mol (energy_fn: in process here, the Ray energy pool later);
    log R'_b = -(E_b - E_{L_b}) / kT                               (torus.log_reward, applied once)
    TB:      L = mean_b ( log Z'_phi(G_b, L_b) + log PF(tau_b) - log PB(tau_b) - log R'_b )^2
    VarGrad: L = mean_b ( zeta_b - mean_{b' in s(b)} zeta_b' )^2,  zeta = log R' + log PB - log PF, centred per
             local structure s; log Z'_phi is then regressed on the detached per-structure means (it does not
             touch the policy) so that both losses give a conditional log Z.
    Adam step on (theta, phi), global-norm gradient clipping.

Energy shift. E_L, the energy of the local structure's own MD frame (computed once with RDKit), is subtracted
from every energy of that structure: the target density is unchanged (a constant factor), but log Z' is O(10)
instead of E_L / kT (which reaches hundreds between molecules), so one small network fits every structure:
    log Z = log Z' - E_L / kT        (what `evaluate` reports and compares with the grid's log Z)
Energies with E - E_L above `energy_clamp_kcal_mol` (overlapping atoms) or non-finite are set to E_L + clamp.
Reward floor. Training uses log R' = -min(E - E_L, reward_floor_kcal_mol) / kT: near-clashes (tens of kcal/mol)
otherwise give residuals of 100+ nats that dominate the squared loss and its gradient (measured: loss ~250 ->
~20 with a floor of 10 kcal/mol). The target changes only where its density is below exp(-floor / kT) = e^-17
(298 K) times that at E_L, which no histogram, log Z or energy metric can see; evaluation uses the true energies.

Score. With score_drift (default) the policy's drift takes a step along the score of the target smoothed by the
noise still to come (policy.py, smoothed_score.py), estimated at every step from J probes of the energy and its
gradient. Both come from TorchTorsionalEnergy (energy_torch.py: the exact MMFF energy of every entry, in torch on
the learner's device), while the rewards of terminal states still come from energy_fn.
Measured untrained (zero-initialized f, 2,000 samples per structure): mean JSD train / unseen structures / unseen
molecules 0.072 / 0.074 / 0.036 with 16 probes (smoothed_score.py), 0.50 / 0.50 / 0.44 without a score.

The learner splits an iteration into `sample_batch()` (no gradient) -> energies -> `loss_and_step(batch,
energies)` so that the energy pool can evaluate batch k while batch k+1 is sampled; `train(n)` is that loop
in process. log PF is recomputed with gradient in `loss_and_step` under the current parameters.
A plain class (no Ray); it owns its torch.Generator, so evaluation never perturbs training randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.special import logsumexp
from torch import Tensor, nn

from workloads.checkpoint import restore_training_state, training_state
from workloads.objectives import tb_loss, vargrad_loss
from workloads.torsional.basins import BasinMixtureScore
from workloads.torsional.config import METRIC_BIN_DEGREES, TorsionalConfig
from workloads.torsional.conformer import dihedral_angles, set_torsions
from workloads.torsional.data import SPLITS, StructureEntry, build_dataset
from workloads.torsional.energy_rdkit import RDKitEnergy
from workloads.torsional.energy_torch import TorchTorsionalEnergy
from workloads.torsional.features import MolecularGraph, collate
from workloads.torsional.ground_truth import (
    GridDensity,
    bins_for_width,
    effective_sample_size,
    energy_w1,
    grid_density,
    grid_torsion_problem,
    histogram_metrics,
)
from workloads.torsional.molecule import MoleculeError
from workloads.torsional.policy import ConditionalLogZ, TorsionPolicy
from workloads.torsional.smoothed_score import SmoothedScore
from workloads.torsional.torus import (
    DriftFn,
    Exploration,
    backward_log_prob,
    forward_log_prob,
    kt_kcal_mol,
    log_reward,
    sample_backward_angles,
    sample_forward_angles,
    sample_trajectories,
)

ScoreOfEntries = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(entry_index [B], torsion_index [M], x [P, M], k [P]) -> the score [P, M] of the policy's drift."""
EnergyRequests = list[tuple[StructureEntry, np.ndarray]]
"""[(entry, angles [n, K] radians), ...]; answered by [energies [n] kcal/mol, ...] in the same order."""


class EnergyFn(Protocol):
    """fn(requests) answers at once; submit(requests) -> handle, then result(handle), lets the caller work
    (sample the next batch) while the energies are computed elsewhere (the Ray energy pool)."""

    def __call__(self, requests: EnergyRequests) -> list[np.ndarray]: ...
    def submit(self, requests: EnergyRequests) -> Any: ...
    def result(self, handle: Any) -> list[np.ndarray]: ...


EVAL_METRICS = (
    "jsd",
    "kl_model_to_true",
    "kl_true_to_model",
    "log_z_error",
    "log_z_error_is",
    "ess_fraction",
    "energy_w1",
)


class RDKitEnergies:
    """The in-process EnergyFn: one RDKitEnergy (one MMFF force field) per local structure, built once."""

    def __init__(self, variant: str = "MMFF94s"):
        self.variant = variant
        self._ff: dict[str, RDKitEnergy] = {}

    def force_field(self, entry: StructureEntry) -> RDKitEnergy:
        if entry.structure_id not in self._ff:
            self._ff[entry.structure_id] = RDKitEnergy(entry.molecule, entry.positions, self.variant)
        return self._ff[entry.structure_id]

    def energies(self, entry: StructureEntry, angles: np.ndarray) -> np.ndarray:
        """angles [n, K] -> [n] kcal/mol."""
        return self.force_field(entry).energies(set_torsions(entry.positions, entry.molecule, angles))

    def __call__(self, requests: EnergyRequests) -> list[np.ndarray]:
        return [self.energies(entry, angles) for entry, angles in requests]

    def submit(self, requests: EnergyRequests) -> EnergyRequests:
        return requests  # in process there is nothing to overlap with: computed in result()

    def result(self, handle: EnergyRequests) -> list[np.ndarray]:
        return self(handle)


@dataclass
class TorsionalBatch:
    """Trajectories of one training iteration (no gradient); torsions of trajectory b are contiguous."""

    entry_index: Tensor
    """[B] long, index into learner.entries of each trajectory's (molecule, local structure)."""
    angles: Tensor
    """[M, S+1] x_0..x_S of every torsion of every trajectory (M = sum_b K_b)."""
    torsion_index: Tensor
    """[M] long, trajectory of each torsion."""
    replay_energy: Tensor
    """[B] float64 kcal/mol of replayed terminal states; NaN for forward trajectories (energies to compute)."""

    def __len__(self) -> int:
        return self.entry_index.numel()

    def terminal(self, rows: Tensor) -> Tensor:
        """[n, K] terminal angles of the given rows, all of one structure (K torsions)."""
        starts = torch.zeros(len(self) + 1, dtype=torch.long)
        starts[1:] = torch.bincount(self.torsion_index, minlength=len(self)).cumsum(0)
        K = int(starts[rows[0] + 1] - starts[rows[0]])
        return self.angles[starts[rows][:, None] + torch.arange(K), -1]  # [n, K]

    def energy_requests(self, entries: list[StructureEntry]) -> tuple[EnergyRequests, list[Tensor]]:
        """Forward rows grouped by structure: ([(entry, angles [n, K])], [rows [n]]), for an EnergyFn."""
        requests, groups = [], []
        forward = torch.isnan(self.replay_energy)
        for e in torch.unique(self.entry_index[forward]).tolist():
            rows = torch.nonzero(forward & (self.entry_index == e)).squeeze(1)
            requests.append((entries[e], self.terminal(rows).double().numpy()))
            groups.append(rows)
        return requests, groups


@dataclass
class TorsionalTerminals:
    """Terminal states with their energies (what the replay buffer stores)."""

    entry_index: np.ndarray
    """[n] int64."""
    angles: np.ndarray
    """[n, K_max] float32 radians, NaN-padded for structures with fewer torsions."""
    energy_kcal_mol: np.ndarray
    """[n] float64."""

    def __len__(self) -> int:
        return len(self.entry_index)


class SampleRow(NamedTuple):
    smiles: str
    local_structure: str
    torsions: list[float]
    """radians"""
    energy_kcal_mol: float
    log_pf: float
    """log PF of the sampled trajectory (uniform x_0 included)."""


@dataclass
class TorsionalEvaluation:
    metrics: dict[str, float]
    """eval/<split>/<metric> (mean over the split's structures) and eval/<metric> (mean over splits)."""
    samples: list[SampleRow]
    figures: dict[str, Figure]
    """'density/<smiles>': model vs exact density on the first torsion pair and energy histograms."""
    structures: list[dict]
    """Per (molecule, local structure): smiles, local_structure, split, its metrics, log_z_grid, log_z_learned."""
    files: dict[str, bytes]
    """structures.sdf and torsions.json (workloads/torsional/export.py): what samples.parquet refers to."""


class TorsionalLearner:
    def __init__(
        self,
        config: TorsionalConfig,
        seed: int,
        device: str = "cpu",
        energy_fn: EnergyFn | None = None,
        entries: list[StructureEntry] | None = None,
    ):
        c = self.config = config
        self.seed, self.device = seed, torch.device(device)
        self.entries = entries if entries is not None else build_dataset(config)
        self.train_entries = [i for i, e in enumerate(self.entries) if e.split == "train_structures"]
        self._structure_files: dict[str, bytes] | None = None
        self.rdkit = RDKitEnergies(c.variant)
        self.energy_fn = energy_fn or self.rdkit
        self.kT = kt_kcal_mol(c.temperature_k)
        # E_L: the energy of each local structure's own frame (the shift of log R, module docstring)
        self.structure_energy = torch.tensor(
            [float(self.rdkit.force_field(e).energies(e.positions)[0]) for e in self.entries], dtype=torch.float64
        )
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            self.policy = TorsionPolicy(
                c.hidden_dim,
                c.encoder_layers,
                c.step_layers,
                c.torsion_layers,
                score_drift=c.score_drift,
                basin_variance=None if c.score_probes or c.score_guide == "basins" else c.basin_variance_rad2,
                std_basin_variance=c.basin_variance_rad2 if c.forward_std == "reverse_basin" else None,
                learn_std=c.learn_std,
            ).to(self.device)
            self.log_z_net = ConditionalLogZ(c.log_z_hidden_dim).to(self.device)
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.policy.parameters()), "lr": c.lr},
                {"params": list(self.log_z_net.parameters()), "lr": c.lr_log_z},
            ]
        )
        # exact, differentiable E(x | L) of every entry: the score grad_x log R of the policy's drift
        self.torch_energy = TorchTorsionalEnergy(self.entries, c.variant, self.device) if c.score_drift else None
        self.score: ScoreOfEntries | None = None  # grad log p_k by probes, or the local -dE/dx / kT
        if self.torch_energy is not None and c.score_guide == "basins":
            self.score = BasinMixtureScore(self.torch_energy, self.kT, c.num_steps, cache_dir=c.cache_dir)
        elif self.torch_energy is not None and c.score_probes:
            self.score = SmoothedScore(self.torch_energy, self.kT, c.num_steps, c.score_probes, c.basin_variance_rad2)
        elif self.torch_energy is not None:
            energy = self.torch_energy
            self.score = lambda entries, tidx, x, k: energy.gradient(entries, tidx, x) / -self.kT
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # structures, noise, replay rows
        self.step = 0
        self._grids: dict[str, GridDensity] = {}

    # ---------------------------------------------------------------- helpers
    def _graph(self, entry_index: Tensor) -> MolecularGraph:
        return collate([self.entries[i].graph for i in entry_index.tolist()]).to(self.device)

    def _drift_fn(self, entry_index: Tensor, graph: MolecularGraph) -> DriftFn:
        """The policy's drift for trajectories of these entries [B] (graph = self._graph(entry_index)); with
        score_drift, its score is self.score's grad log p_k of the true energies (no floor, no clamp)."""
        if self.torch_energy is None:
            return self.policy.drift_fn(graph, self.config.num_steps)
        entries, tidx = entry_index.to(self.device), graph.torsion_graph_index
        return self.policy.drift_fn(graph, self.config.num_steps, lambda x, k: self.score(entries, tidx, x, k))

    def log_reward(self, entry_index: Tensor, energies: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training's shifted log R' = -min(E - E_L, reward_floor) / kT [B] float64, and two flags [B] bool:
        clamped (non-finite or above energy_clamp: overlapping atoms) and floored (above reward_floor)."""
        e_rel = energies.double() - self.structure_energy[entry_index]  # [B]
        clamped = ~torch.isfinite(e_rel) | (e_rel > self.config.energy_clamp_kcal_mol)
        floored = clamped | (e_rel > self.config.reward_floor_kcal_mol)
        e_rel = torch.where(floored, torch.full_like(e_rel, self.config.reward_floor_kcal_mol), e_rel)
        return log_reward(e_rel, self.config.temperature_k), clamped, floored

    def log_z(self, entry_index: Tensor) -> Tensor:
        """Unshifted learned log Z = log Z'_phi - E_L / kT per given structure [U] float64 (no gradient)."""
        with torch.no_grad():
            lz = self.log_z_net(self._graph(entry_index)).double().cpu()
        return lz - self.structure_energy[entry_index] / self.kT

    # ---------------------------------------------------------------- training
    @torch.no_grad()
    def sample_batch(self, replay: TorsionalTerminals | None = None) -> TorsionalBatch:
        c, g = self.config, self.generator
        n_structures = min(c.structures_per_batch, len(self.train_entries))
        perm = torch.randperm(len(self.train_entries), generator=g, device=self.device).cpu()
        chosen = torch.tensor(self.train_entries)[perm[:n_structures]]  # [U] structures of this batch
        entry_index = chosen.repeat_interleave(c.trajectories_per_structure)  # [B]
        B = entry_index.numel()
        n_replay = round(c.replay.share * B) if (c.replay.enabled and replay is not None and len(replay)) else 0
        if n_replay:
            keep = torch.randperm(B, generator=g, device=self.device)[: B - n_replay].sort().values.cpu()  # forward
            entry_index = entry_index[keep]
        graph = self._graph(entry_index)
        angles = sample_forward_angles(
            self._drift_fn(entry_index, graph),
            graph.torsion_graph_index,
            entry_index.numel(),
            c.num_steps,
            Exploration(c.noise_prob, c.noise_factor),
            g,
        )
        angles, torsion_index = angles.cpu(), graph.torsion_graph_index.cpu()
        replay_energy = torch.full((entry_index.numel(),), float("nan"), dtype=torch.float64)
        if n_replay:
            rows = torch.randint(len(replay), (n_replay,), generator=g, device=self.device).cpu()
            r_entry = torch.as_tensor(replay.entry_index[rows.numpy()], dtype=torch.long)  # [R]
            r_angles = torch.as_tensor(replay.angles[rows.numpy()], dtype=torch.float32)  # [R, K_max]
            terminal = r_angles[~torch.isnan(r_angles)]  # [M_R] contiguous per row
            r_graph = self._graph(r_entry)
            with torch.no_grad():
                r_paths = sample_backward_angles(terminal.to(self.device), c.num_steps, g)  # [M_R, S+1]
            angles = torch.cat([angles, r_paths.cpu()])
            torsion_index = torch.cat([torsion_index, r_graph.torsion_graph_index.cpu() + entry_index.numel()])
            replay_energy = torch.cat([replay_energy, torch.as_tensor(replay.energy_kcal_mol[rows.numpy()])])
            entry_index = torch.cat([entry_index, r_entry])
        return TorsionalBatch(entry_index, angles, torsion_index, replay_energy)

    def submit_energies(self, batch: TorsionalBatch) -> tuple[Any, list[Tensor]]:
        """Send the forward rows' terminal conformers to energy_fn; returns (handle, row groups)."""
        requests, groups = batch.energy_requests(self.entries)
        return self.energy_fn.submit(requests), groups

    def batch_energies(self, batch: TorsionalBatch, pending: tuple[Any, list[Tensor]] | None = None) -> Tensor:
        """[B] float64 kcal/mol: energy_fn for forward rows (`pending` = submit_energies(batch) if already
        sent), the stored energies for replayed ones."""
        handle, groups = pending if pending is not None else self.submit_energies(batch)
        energies = batch.replay_energy.clone()
        for rows, e in zip(groups, self.energy_fn.result(handle)):
            energies[rows] = torch.as_tensor(np.asarray(e, dtype=np.float64))
        return energies

    def loss_and_step(self, batch: TorsionalBatch, energies: Tensor) -> dict[str, float]:
        c = self.config
        B = len(batch)
        log_r, clamped, floored = self.log_reward(batch.entry_index, torch.as_tensor(energies))
        log_r = log_r.float().to(self.device)  # [B]
        graph = self._graph(batch.entry_index)
        angles, tidx = batch.angles.to(self.device), batch.torsion_index.to(self.device)
        log_pf = forward_log_prob(self._drift_fn(batch.entry_index, graph), angles, tidx, B)  # [B]
        log_pb = backward_log_prob(angles, tidx, B)  # [B]
        structures, inverse = torch.unique(batch.entry_index, return_inverse=True)  # [U], [B]
        inverse = inverse.to(self.device)
        log_z = self.log_z_net(self._graph(structures))  # [U] log Z'_phi
        zeta = (log_r + log_pb - log_pf).detach()  # [B]
        counts = torch.zeros(len(structures), device=self.device).index_add_(0, inverse, torch.ones_like(zeta))
        zeta_mean = torch.zeros_like(counts).index_add_(0, inverse, zeta) / counts  # [U] per-structure log Z'
        if c.loss == "tb":
            loss = tb_loss(log_pf, log_pb, log_r, log_z[inverse])
        else:
            loss = (
                vargrad_loss(log_pf, log_pb, log_r, zeta_mean[inverse])  # VarGrad centred per structure
                + (log_z - zeta_mean).pow(2).mean()
            )  # second term: only phi
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(params, c.grad_clip)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
        self.step += 1
        return {
            "train/loss": loss.item(),
            "train/log_z_shifted": log_z.mean().item(),
            "train/log_z_batch_shifted": zeta_mean.mean().item(),
            "train/mean_log_reward_shifted": log_r.mean().item(),
            "train/grad_norm": grad_norm.item(),
            "train/clamped_fraction": clamped.double().mean().item(),
            "train/floored_fraction": floored.double().mean().item(),
            "train/replay_fraction": (~torch.isnan(batch.replay_energy)).double().mean().item(),
            "train/num_molecules": float(len({self.entries[i].smiles for i in structures.tolist()})),
        }

    def train(
        self, num_iters: int, replay: TorsionalTerminals | None = None
    ) -> tuple[dict[str, float], TorsionalTerminals]:
        """num_iters of sample_batch -> energies (energy_fn) -> loss_and_step; chunk-mean metrics and the
        forward terminal states with their energies (for the replay buffer).

        Pipelined: batch k+1 is sampled while the energies of batch k are computed, so batch k+1 comes from
        the parameters before step k (one step off-policy, which TB and VarGrad allow: log PF is recomputed
        under the current parameters in loss_and_step)."""
        logs: list[dict[str, float]] = []
        terminals: list[tuple[TorsionalBatch, Tensor, Tensor]] = []
        in_flight: tuple[TorsionalBatch, tuple[Any, list[Tensor]]] | None = None
        for i in range(num_iters + 1):
            sent = None
            if i < num_iters:
                batch = self.sample_batch(replay)
                sent = (batch, self.submit_energies(batch))
            if in_flight is not None:
                done, pending = in_flight
                energies = self.batch_energies(done, pending)
                logs.append(self.loss_and_step(done, energies))
                terminals.append((done, torch.isnan(done.replay_energy), energies))
            in_flight = sent
        metrics = {k: float(np.mean([m[k] for m in logs])) for k in logs[0]} if logs else {}
        return metrics, self._terminals(terminals)

    def _terminals(self, parts: list[tuple[TorsionalBatch, Tensor, Tensor]]) -> TorsionalTerminals:
        k_max = max(e.num_torsions for e in self.entries)
        idx, ang, en = [], [], []
        for batch, forward, energies in parts:
            for e in torch.unique(batch.entry_index[forward]).tolist():
                rows = torch.nonzero(forward & (batch.entry_index == e)).squeeze(1)
                a = np.full((len(rows), k_max), np.nan, dtype=np.float32)
                a[:, : self.entries[e].num_torsions] = batch.terminal(rows).numpy()
                idx.append(np.full(len(rows), e, dtype=np.int64))
                ang.append(a)
                en.append(energies[rows].numpy())
        if not idx:
            return TorsionalTerminals(np.zeros(0, np.int64), np.zeros((0, k_max), np.float32), np.zeros(0))
        return TorsionalTerminals(np.concatenate(idx), np.concatenate(ang), np.concatenate(en))

    def replay_seeds(self) -> TorsionalTerminals:
        """Replay seeds from MD: for each training structure L of molecule m, the torsions of every training MD
        frame of m (the frames are a physical sample at T) with their energies E(x | L). Never from held-out frames."""
        k_max = max(e.num_torsions for e in self.entries)
        idx, ang, en = [], [], []
        for i in self.train_entries:
            entry = self.entries[i]
            frames = np.stack(
                [self.entries[j].positions for j in self.train_entries if self.entries[j].smiles == entry.smiles]
            )  # [F, N, 3]
            angles = dihedral_angles(frames, entry.molecule.torsions)  # [F, K]
            padded = np.full((len(angles), k_max), np.nan, dtype=np.float32)
            padded[:, : entry.num_torsions] = angles
            idx.append(np.full(len(angles), i, dtype=np.int64))
            ang.append(padded)
            en.append(self.rdkit.energies(entry, angles))
        return TorsionalTerminals(np.concatenate(idx), np.concatenate(ang), np.concatenate(en))

    # ---------------------------------------------------------------- evaluation
    def grid(self, entry: StructureEntry) -> GridDensity:
        """Exact Boltzmann grid of one structure (cached): grid_bins per torsion for K <= 2, <= 48 for K = 3; a
        MoleculeError beyond MAX_GRID_TORSIONS (a sweep's config refuses such molecules before)."""
        if entry.structure_id not in self._grids:
            K = entry.num_torsions
            if problem := grid_torsion_problem(K):
                raise MoleculeError(entry.smiles, problem)
            bins = self.config.grid_bins if K <= 2 else min(self.config.grid_bins, 48)
            self._grids[entry.structure_id] = grid_density(lambda a: self.rdkit.energies(entry, a), K, bins, self.kT)
        return self._grids[entry.structure_id]

    @torch.no_grad()
    def sample(self, entry_index: int, n: int, generator: torch.Generator) -> tuple[np.ndarray, Tensor, Tensor]:
        """n on-policy samples of one structure: (angles [n, K], log_pf [n], log_pb [n])."""
        c = self.config
        entry = self.entries[entry_index]
        out = []
        for start in range(0, n, c.eval_chunk):
            m = min(c.eval_chunk, n - start)
            rows = torch.full((m,), entry_index, dtype=torch.long)
            graph = self._graph(rows)
            traj = sample_trajectories(
                self._drift_fn(rows, graph), graph.torsion_graph_index, m, c.num_steps, None, generator
            )
            out.append((traj.terminal.reshape(m, entry.num_torsions).cpu(), traj.log_pf.cpu(), traj.log_pb.cpu()))
        angles, log_pf, log_pb = (torch.cat(t) for t in zip(*out))
        return angles.double().numpy(), log_pf.double(), log_pb.double()

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> TorsionalEvaluation:
        n = num_samples or self.config.eval_samples
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_033 + self.step)
        bins = bins_for_width(METRIC_BIN_DEGREES)
        learned = self.log_z(torch.arange(len(self.entries)))  # [E] unshifted
        per_split: dict[str, list[dict[str, float]]] = {s: [] for s in SPLITS}
        rows: list[SampleRow] = []
        figures: dict[str, Figure] = {}
        structures: list[dict] = []
        for i, entry in enumerate(self.entries):
            angles, log_pf, log_pb = self.sample(i, n, g)
            energies = np.asarray(self.energy_fn([(entry, angles)])[0], dtype=np.float64)  # [n]
            energies = np.where(np.isfinite(energies), energies, np.inf)
            energies = np.minimum(energies, float(self.structure_energy[i]) + self.config.energy_clamp_kcal_mol)
            log_w = log_reward(energies, self.config.temperature_k) + (log_pb - log_pf).numpy()  # [n] unshifted
            grid = self.grid(entry)
            m = histogram_metrics(angles, grid, bins)
            m["log_z_error"] = abs(float(learned[i]) - grid.log_z)
            m["log_z_error_is"] = abs(float(logsumexp(log_w) - math.log(n)) - grid.log_z)
            m["ess_fraction"] = effective_sample_size(log_w)[1]
            m["energy_w1"] = energy_w1(energies, grid)
            per_split[entry.split].append(m)
            structures.append(
                {
                    "smiles": entry.smiles,
                    "local_structure": entry.structure_id,
                    "split": entry.split,
                    **m,
                    "log_z_grid": grid.log_z,
                    "log_z_learned": float(learned[i]),
                }
            )
            rows += [
                SampleRow(entry.smiles, entry.structure_id, a, e, lp)
                for a, e, lp in zip(angles.tolist(), energies.tolist(), log_pf.tolist())
            ]
            name = f"density/{entry.smiles}"
            if name not in figures:
                figures[name] = self._figure(entry, angles, energies, grid)
        metrics: dict[str, float] = {}
        for split, ms in per_split.items():
            for k in EVAL_METRICS:
                if ms:
                    metrics[f"eval/{split}/{k}"] = float(np.mean([m[k] for m in ms]))
        for k in EVAL_METRICS:
            vals = [metrics[f"eval/{s}/{k}"] for s in SPLITS if f"eval/{s}/{k}" in metrics]
            metrics[f"eval/{k}"] = float(np.mean(vals))
        return TorsionalEvaluation(metrics, rows, figures, structures, self.structure_files())

    def structure_files(self) -> dict[str, bytes]:
        """structures.sdf and torsions.json of this learner's entries, as bytes (rendered once: entries are fixed)."""
        if self._structure_files is None:
            import tempfile
            from pathlib import Path

            from workloads.torsional.export import write_structures_sdf, write_torsions_json  # imports this module

            with tempfile.TemporaryDirectory() as folder:
                write_structures_sdf(Path(folder) / "structures.sdf", self.entries)
                write_torsions_json(Path(folder) / "torsions.json", self.entries)
                self._structure_files = {
                    name: (Path(folder) / name).read_bytes() for name in ("structures.sdf", "torsions.json")
                }
        return self._structure_files

    def _figure(self, entry: StructureEntry, angles: np.ndarray, energies: np.ndarray, grid: GridDensity) -> Figure:
        """Model histogram vs exact density on torsions (0, 1) (others marginalized), and energy histograms."""
        bins = bins_for_width(METRIC_BIN_DEGREES)
        p = grid.cell_probabilities()
        p = p.sum(axis=tuple(range(2, p.ndim))) if p.ndim > 2 else p  # [n, n] (or [n] for one torsion)
        f = p.shape[0] // bins
        if p.ndim == 1:
            exact, y_bins, y = p.reshape(bins, f).sum(1)[:, None], 1, np.zeros(len(angles))  # [bins, 1]
        else:
            exact, y_bins, y = p.reshape(bins, f, bins, f).sum(axis=(1, 3)), bins, angles[:, 1]  # [bins, bins]
        model, _, _ = np.histogram2d(
            np.mod(angles[:, 0], 2 * math.pi),
            np.mod(y, 2 * math.pi),
            bins=[bins, y_bins],
            range=[[0, 2 * math.pi], [0, 2 * math.pi]],
        )
        fig = Figure(figsize=(12, 3.8))
        axes = fig.subplots(1, 3)
        for ax, h, title in zip(axes, (model / model.sum(), exact / exact.sum()), ("model samples", "exact (grid)")):
            ax.imshow(h.T, origin="lower", extent=(0, 360, 0, 360), aspect="auto", cmap="viridis")
            ax.set(title=title, xlabel="torsion 0 (deg)", ylabel="torsion 1 (deg)")
        e = grid.energies.reshape(-1)
        lo, hi = float(min(e.min(), energies.min())), float(np.quantile(e, 0.9))
        hist_kw = {"bins": 40, "range": (lo, hi), "density": True, "histtype": "step"}
        axes[2].hist(energies, label="sampled", **hist_kw)
        axes[2].hist(e, weights=grid.cell_probabilities().reshape(-1), label="Boltzmann (grid)", **hist_kw)
        axes[2].hist(e, label="uniform torsions", **hist_kw)
        axes[2].set(xlabel="E (kcal/mol)", title="energies")
        axes[2].legend(fontsize=7)
        fig.suptitle(f"{entry.structure_id} step {self.step}")
        fig.tight_layout()
        return fig

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """A snapshot (deep copy): later training does not alter it."""
        return training_state(
            {"policy": self.policy, "log_z_net": self.log_z_net},
            self.optimizer,
            self.step,
            self.seed,
            self.generator,
            self.config,
        )

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seed = restore_training_state(
            state,
            {"policy": self.policy, "log_z_net": self.log_z_net},
            self.optimizer,
            (self.config.lr, self.config.lr_log_z),
            self.generator,
        )
