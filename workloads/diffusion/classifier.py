"""A classifier of a DDPM prior's training images: the reward of posterior sampling and the feature map of its metrics.

    p_phi(c | x) = softmax(head(features(x)))_c,    x [C, H, W] in [-1, 1] exactly as the prior sees it

    phi <- AdamW on the cross-entropy -log p_phi(c | x) of the train part, a cosine learning rate (train.lr_factor)

The network is one of image_models' ARCHITECTURES (default convnet: features [B, 64]); it is fed the prior's [-1, 1]
images rather than image_models' [0, 1] convention, so that the reward needs no rescaling. A fraction of the images
(chosen by the seed) is held out of training and scores the accuracy.

The reward of RTB's class-conditional posterior p(x | target) ∝ p(x) r(x) (Venkatraman et al. 2024,
arXiv:2405.20971) is a class set S's probability:

    log r(x) = log sum_{c in S} p_phi(c | x) = logsumexp_{c in S} log_softmax(logits(x))_c

A target is an int index into `class_sets(K)`: 0 .. K - 1 the single classes, K = "even" {0, 2, 4, ...},
K + 1 = "odd" {1, 3, 5, ...} (`target_index` maps a class or a name to it).

Deterministic in `seed` on the CPU (cuDNN's convolutions need not be): the initialization (a forked global RNG),
the held-out split and every batch (a generator of its own) come from it; the global RNG is left as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.data.images import load_images
from workloads.diffusion.config import ClassifierConfig, DDPMConfig
from workloads.diffusion.train import lr_factor
from workloads.image_models import build_model

SET_NAMES = ("even", "odd")
"""The named class sets, in their order after the single classes in `class_sets`."""


def labelled_training_images(prior: DDPMConfig, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(images [N, C, H, W] in [-1, 1], labels [N]): train.training_images(prior, seed) and their labels."""
    return load_images(
        prior.dataset, prior.image_size, "train", prior.data_root, num_images=prior.num_images, seed=seed
    )


def class_sets(num_classes: int) -> Tensor:
    """Membership [K + 2, K] bool of the targets: row c < K is {c}, row K the even classes, row K + 1 the odd."""
    classes = torch.arange(num_classes)
    singles = classes[:, None] == classes[None, :]  # [K, K]
    return torch.cat([singles, (classes % 2 == 0)[None], (classes % 2 == 1)[None]])


def target_index(target: int | str, num_classes: int) -> int:
    """The row of `class_sets(num_classes)` of a class c in 0 .. K - 1 or a name in SET_NAMES."""
    if isinstance(target, str):
        if target not in SET_NAMES:
            raise ValueError(f"unknown class set {target!r}; known: {SET_NAMES}")
        return num_classes + SET_NAMES.index(target)
    if not 0 <= target < num_classes:
        raise ValueError(f"class {target} is not in 0 .. {num_classes - 1}")
    return target


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """Fraction of images whose argmax_c logits(x)_c is the label."""
    correct = sum(
        (model(x).argmax(1) == y).sum().item() for x, y in zip(images.split(batch_size), labels.split(batch_size))
    )
    return correct / len(labels)


def train_classifier(
    config: ClassifierConfig, images: Tensor, labels: Tensor, seed: int, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, float]]:
    """(the classifier in eval mode with requires_grad off, stats) after training on images [N, C, H, W] in [-1, 1]
    with labels [N] in 0 .. K - 1 (every class present); stats: heldout_accuracy, train_accuracy, final_loss, ..."""
    c = config
    num_classes = int(labels.max()) + 1
    if labels.min() < 0 or len(labels.unique()) != num_classes:
        raise ValueError(f"labels must cover 0 .. {num_classes - 1}, got classes {labels.unique().tolist()}")
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the split and batches do not depend on the device
    order = torch.randperm(len(images), generator=generator)
    num_heldout = round(c.heldout_fraction * len(images))
    heldout, train = order[:num_heldout], order[num_heldout:]
    x_train, y_train = images[train].to(device), labels[train].to(device)  # [N_train, C, H, W], [N_train]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(c.architecture, images.shape[1], images.shape[-1], num_classes).to(device)
    total_steps = c.epochs * -(-len(train) // c.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 0, total_steps))
    model.train()
    loss = torch.tensor(float("nan"))
    with torch.enable_grad():  # also when called under no_grad (a reward built lazily inside an evaluation)
        for _ in range(c.epochs):
            for batch in torch.randperm(len(train), generator=generator).to(device).split(c.batch_size):
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    model.eval().requires_grad_(False)
    stats = {
        "heldout_accuracy": accuracy(model, images[heldout].to(device), labels[heldout].to(device)),
        "train_accuracy": accuracy(model, x_train, y_train),
        "final_loss": loss.item(),
        "num_train": float(len(train)),
        "num_heldout": float(num_heldout),
        "num_classes": float(num_classes),
    }
    return model, stats


class ClassifierReward(nn.Module):
    """log r(x) = log sum_{c in S_target} p_phi(c | x) for a frozen classifier; differentiable in x (guidance, DPS).

    targets [B] int64 index the rows of `class_sets(K)` (module docstring); `target_index` names them.
    """

    def __init__(self, classifier: nn.Module, num_classes: int):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_classes = num_classes
        log_membership = torch.zeros(num_classes + len(SET_NAMES), num_classes)  # [S, K]: 0 in the set, -inf out
        self.register_buffer("log_membership", log_membership.masked_fill(~class_sets(num_classes), float("-inf")))

    def log_r(self, x: Tensor, targets: Tensor) -> Tensor:
        """x [B, C, H, W] in [-1, 1], targets [B] -> log r(x) [B]."""
        log_p = torch.log_softmax(self.classifier(x), dim=-1)  # [B, K]
        return torch.logsumexp(log_p + self.log_membership[targets], dim=-1)  # [B]

    def grad_log_r(self, x: Tensor, targets: Tensor) -> Tensor:
        """grad_x log r(x) [B, C, H, W] (each sample's log r depends on its own x only)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_r(x, targets).sum(), x)[0]

    def forward(self, x: Tensor, targets: Tensor) -> Tensor:
        return self.log_r(x, targets)
