"""Ensemble members and their optimizers, held by a host (a member actor, or the process in run_local.py).

    MemberNetworks  several whole networks (mode "full"), each with its own Adam
    HeadEnsemble    linear heads on one frozen feature extractor (mode "heads"): the extractor is pretrained
                    briefly with plain CE, frozen, and the host's active heads run as one einsum
                    logits[a, b, c] = sum_d phi(x)[b, d] W[a, c, d] + bias[a, c]

A training step has two calls (workloads/ensembles/coordinator.py): `forward(batch, members)` returns the
members' logits (detached) and keeps their graph; `backward(updates)` minimizes each member's L_m
(workloads/ensembles/a2d.py) with the partner's probabilities as constants and steps the members' optimizers.
Members are initialized from a seed of their own (or all from one with shared_init), so which host holds a
member does not change its weights.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.ensembles.a2d import member_loss
from workloads.ensembles.config import SEDConfig
from workloads.ensembles.coordinator import MemberStepResult, MemberUpdate
from workloads.ensembles.data import Batch
from workloads.image_models import build_model


def member_seed(seed: int, member: int, shared_init: bool) -> int:
    """The seed of member `member`'s initial weights."""
    if shared_init:
        return seed
    return int(np.random.SeedSequence((seed, member)).generate_state(1)[0])


def build_network(config: SEDConfig, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        return build_model(config.architecture, config.in_channels, config.image_size, config.num_classes)


class MemberHost:
    """What both kinds of host share: the two-call training step and chunked prediction."""

    config: SEDConfig
    members: list[int]
    device: torch.device

    def __init__(self) -> None:
        self._pending: tuple[list[int], Tensor, Tensor] | None = None  # members, logits [a, B, C], labels [B]

    # ---------------------------------------------------------------- implemented per kind
    def member_logits(self, images: Tensor, members: list[int]) -> Tensor:
        """Logits [a, B, C] of `members` in training mode, with their graph."""
        raise NotImplementedError

    def parameters_of(self, member: int) -> list[nn.Parameter]:
        raise NotImplementedError

    def zero_grad(self, members: list[int]) -> None:
        raise NotImplementedError

    def optimizer_step(self, members: list[int]) -> None:
        raise NotImplementedError

    def predict(self, images: Tensor) -> Tensor:
        """Logits [M_host, N, C] of every member held, in evaluation mode."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the training step
    def forward(self, batch: Batch, members: list[int]) -> Tensor:
        logits = self.member_logits(batch.images.to(self.device), members)  # [a, B, C]
        self._pending = (list(members), logits, batch.labels.to(self.device))
        return logits.detach().cpu()

    def backward(self, updates: list[MemberUpdate]) -> list[MemberStepResult]:
        if self._pending is None:
            raise RuntimeError("backward() without a forward() before it")
        members, logits, labels = self._pending
        self._pending = None
        by_member = {u.member: u for u in updates}
        if sorted(by_member) != sorted(members):
            raise ValueError(f"updates for members {sorted(by_member)}, forward ran {sorted(members)}")
        total, results = logits.new_zeros(()), []
        for f_m, m in zip(logits, members):
            u = by_member[m]
            loss, ce, disagreement = member_loss(
                f_m,
                labels,
                [t.partner_probs.to(self.device) for t in u.terms],
                [t.predicted.to(self.device) for t in u.terms],
                u.sample_weights.to(self.device),
                u.ce_weight,
                u.disagreement_weight,
                self.config.a2d_eps,
            )
            total = total + loss  # members share no parameter: one backward gives each its own gradient
            results.append(MemberStepResult(m, ce.item(), disagreement.item(), len(u.terms)))
        self.zero_grad(members)
        total.backward()
        self.optimizer_step(members)
        return results

    def gradients(self) -> dict[int, list[Tensor]]:
        """Gradients of the last backward per member (copies; None where a parameter got none)."""
        return {
            m: [None if p.grad is None else p.grad.detach().cpu().clone() for p in self.parameters_of(m)]
            for m in self.members
        }

    def _chunks(self, images: Tensor) -> list[Tensor]:
        return list(images.split(self.config.eval_batch_size))


class MemberNetworks(MemberHost):
    """Whole networks `members` (mode "full"), each with its own Adam."""

    def __init__(self, config: SEDConfig, members: list[int], seed: int, device: str = "cpu"):
        super().__init__()
        self.config, self.members, self.seed, self.device = config, list(members), seed, torch.device(device)
        self.networks = {
            m: build_network(config, member_seed(seed, m, config.shared_init)).to(self.device) for m in self.members
        }
        self.optimizers = {m: torch.optim.Adam(net.parameters(), lr=config.lr) for m, net in self.networks.items()}

    def member_logits(self, images: Tensor, members: list[int]) -> Tensor:
        return torch.stack([self.networks[m](images) for m in members])

    def parameters_of(self, member: int) -> list[nn.Parameter]:
        return list(self.networks[member].parameters())

    def zero_grad(self, members: list[int]) -> None:
        for m in members:
            self.optimizers[m].zero_grad(set_to_none=True)

    def optimizer_step(self, members: list[int]) -> None:
        for m in members:
            self.optimizers[m].step()

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        return torch.stack([_predict(self.networks[m], self._chunks(images), self.device) for m in self.members])

    @torch.no_grad()
    def soup_predict(self, images: Tensor) -> Tensor:
        """Logits [N, C] of the uniform soup: every parameter and buffer averaged over the members held."""
        states = [self.networks[m].state_dict() for m in self.members]
        soup = build_network(self.config, self.seed).to(self.device)
        soup.load_state_dict(
            {
                k: (torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v)
                for k, v in states[0].items()
            }
        )
        return _predict(soup, self._chunks(images), self.device)

    def weights(self) -> dict[str, Any]:
        return {"networks": {m: _cpu(net.state_dict()) for m, net in self.networks.items()}}

    def load_weights(self, weights: list[dict[str, Any]]) -> None:
        """Loads the members held from the weights of one or several hosts."""
        for w in weights:
            for m, state in w["networks"].items():
                if m in self.networks:
                    self.networks[m].load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({**self.weights(), "optimizers": {m: o.state_dict() for m, o in self.optimizers.items()}})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_weights([state])
        for m, optimizer in self.optimizers.items():
            optimizer.load_state_dict(copy.deepcopy(state["optimizers"][m]))


class HeadEnsemble(MemberHost):
    """Linear heads `members` on one frozen feature extractor phi (mode "heads"), one Adam over all heads (a head
    without a gradient in a step, i.e. inactive, is skipped by it). Heads start from their own seeded nn.Linear
    initialization, or with shared_init all as the extractor's own head (the reference's heads start from the
    pretrained classifier).

    With `train`, phi is pretrained here: pretrain_iters Adam steps of CE with the network's own head, batches
    drawn with replacement. Without, phi stays at its seeded initialization until `load_weights` sets it."""

    def __init__(
        self, config: SEDConfig, members: list[int], seed: int, device: str = "cpu", train: Batch | None = None
    ):
        super().__init__()
        self.config, self.members, self.device = config, list(members), torch.device(device)
        self.extractor = build_network(config, seed).to(self.device)
        self.pretrain_loss = pretrain_extractor(self.extractor, train, config, seed) if train is not None else None
        self.extractor.eval().requires_grad_(False)
        dim, classes = self.extractor.feature_dim, config.num_classes
        bound = 1 / math.sqrt(dim)  # nn.Linear's initialization
        self.head_weights, self.head_biases = {}, {}
        for m in self.members:
            if config.shared_init:  # every head starts as the extractor's own (pretrained) head
                weight, bias = self.extractor.head.weight.detach(), self.extractor.head.bias.detach()
            else:
                g = torch.Generator().manual_seed(member_seed(seed, m, False))
                weight = (torch.rand(classes, dim, generator=g) * 2 - 1) * bound
                bias = (torch.rand(classes, generator=g) * 2 - 1) * bound
            self.head_weights[m] = nn.Parameter(weight.clone().to(self.device))
            self.head_biases[m] = nn.Parameter(bias.clone().to(self.device))
        self.optimizer = torch.optim.Adam([p for m in self.members for p in self.parameters_of(m)], lr=config.lr)

    def _heads(self, members: list[int]) -> tuple[Tensor, Tensor]:
        weights = torch.stack([self.head_weights[m] for m in members])  # [a, C, D]
        biases = torch.stack([self.head_biases[m] for m in members])  # [a, C]
        return weights, biases

    def member_logits(self, images: Tensor, members: list[int]) -> Tensor:
        with torch.no_grad():
            features = self.extractor.features(images)  # [B, D]
        weights, biases = self._heads(members)
        return torch.einsum("bd,acd->abc", features, weights) + biases[:, None, :]  # [a, B, C]

    def parameters_of(self, member: int) -> list[nn.Parameter]:
        return [self.head_weights[member], self.head_biases[member]]

    def zero_grad(self, members: list[int]) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_step(self, members: list[int]) -> None:
        self.optimizer.step()

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        weights, biases = self._heads(self.members)
        return torch.cat(
            [
                torch.einsum("bd,acd->abc", self.extractor.features(x.to(self.device)), weights) + biases[:, None, :]
                for x in self._chunks(images)
            ],
            dim=1,
        ).cpu()

    @torch.no_grad()
    def soup_predict(self, images: Tensor) -> Tensor:
        """Logits [N, C] of the averaged head (on shared features, the mean-logit ensemble)."""
        weights, biases = self._heads(self.members)
        weight, bias = weights.mean(0), biases.mean(0)
        return torch.cat(
            [self.extractor.features(x.to(self.device)) @ weight.T + bias for x in self._chunks(images)]
        ).cpu()

    def weights(self) -> dict[str, Any]:
        return {
            "extractor": _cpu(self.extractor.state_dict()),
            "heads": {
                m: (self.head_weights[m].detach().cpu().clone(), self.head_biases[m].detach().cpu().clone())
                for m in self.members
            },
        }

    def load_weights(self, weights: list[dict[str, Any]]) -> None:
        """The extractor from the first weights, and the heads held from any of them."""
        self.extractor.load_state_dict(weights[0]["extractor"])
        with torch.no_grad():
            for w in weights:
                for m, (weight, bias) in w["heads"].items():
                    if m in self.head_weights:
                        self.head_weights[m].copy_(weight)
                        self.head_biases[m].copy_(bias)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({**self.weights(), "optimizer": self.optimizer.state_dict()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_weights([state])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))


def pretrain_extractor(network: nn.Module, train: Batch, config: SEDConfig, seed: int) -> float:
    """pretrain_iters Adam steps of CE on batches of `train`; returns the mean loss of the last 10% of steps."""
    device = next(network.parameters()).device
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    network.train()
    losses = []
    for _ in range(config.pretrain_iters):
        index = torch.randint(len(train), (config.batch_size,), generator=generator)
        loss = F.cross_entropy(network(train.images[index].to(device)), train.labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 10) :]
    return float(np.mean(tail)) if tail else float("nan")


def make_host(
    config: SEDConfig, members: list[int], seed: int, device: str = "cpu", train: Batch | None = None
) -> MemberNetworks | HeadEnsemble:
    """The host of `members` for config.mode; `train` pretrains a head ensemble's extractor (ignored in "full")."""
    if config.mode == "heads":
        return HeadEnsemble(config, members, seed, device, train)
    return MemberNetworks(config, members, seed, device)


def _predict(network: nn.Module, chunks: list[Tensor], device: torch.device) -> Tensor:
    was_training = network.training
    network.eval()
    logits = torch.cat([network(x.to(device)) for x in chunks]).cpu()
    network.train(was_training)
    return logits


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
