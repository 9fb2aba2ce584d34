"""Training a DDPM prior, and the key under which a trained prior can be cached.

    theta <- AdamW on L(theta) (ddpm.py), lr(s) = lr min(1, (s + 1) / warmup) (1 + cos(pi s' / S')) / 2,
    s' = max(0, s - warmup), S' = train_iters - warmup: a linear warm-up, then a cosine decay to 0.

Deterministic in `seed`: the initialization (a forked global RNG) and every batch, timestep and noise draw
(a generator of its own) come from it; the global RNG is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from workloads.data.images import load_images
from workloads.diffusion.config import NOT_TRAINING_FIELDS, DDPMConfig
from workloads.diffusion.ddpm import DDPM
from workloads.diffusion.unet import make_unet

PRIOR_FORMAT = 1
"""Part of `prior_key`: raise it when a change to this training would make a cached prior stale."""


def lr_factor(step: int, warmup_iters: int, total_iters: int) -> float:
    """lr(s) / lr: linear warm-up over warmup_iters steps, then a cosine from 1 to 0 at total_iters."""
    if step < warmup_iters:
        return (step + 1) / warmup_iters
    progress = (step - warmup_iters) / max(1, total_iters - warmup_iters)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class LossLog:
    """The per-step losses of a training run, as its `progress(step, loss)` callback; it calls `report(steps done,
    mean loss of the last `every`)` every `every` steps (report None: it only keeps the losses)."""

    def __init__(self, report: Callable[[int, float], None] | None = None, every: int = 200, offset: int = 0):
        self.report, self.every, self.offset = report, every, offset
        self.losses: list[float] = []

    def __call__(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        if self.report is not None and (step + 1) % self.every == 0:
            self.report(self.offset + step + 1, sum(self.losses[-self.every :]) / len(self.losses[-self.every :]))

    def final_loss(self) -> float:
        """The mean of the last tenth of the losses (NaN when there are none)."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail) if tail else math.nan


def training_images(config: DDPMConfig, seed: int = 0) -> Tensor:
    """images [N, C, H, W] in [-1, 1] of the config's data set: the train split's first num_images."""
    return load_images(
        config.dataset, config.image_size, "train", config.data_root, num_images=config.num_images, seed=seed
    )[0]


def train_ddpm(
    config: DDPMConfig,
    images: Tensor,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """The UNet (make_unet) after config.train_iters AdamW steps on images [N, C, H, W] in [-1, 1]; returned in
    eval mode with requires_grad off (a frozen prior: fine-tune a copy). progress(step, loss) after each step."""
    c = config
    expected = (c.channels, c.image_size, c.image_size)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"images are [N, {list(images.shape[1:])}], dataset={c.dataset!r} and image_size need {expected}"
        )
    ddpm = DDPM(c)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_unet(c).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, c.warmup_iters, c.train_iters))
    generator = torch.Generator(device=device).manual_seed(seed)
    images = images.to(device)
    for step in range(c.train_iters):
        batch = images[torch.randint(len(images), (c.batch_size,), generator=generator, device=device)]
        loss = ddpm.loss(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        scheduler.step()
        if progress is not None:
            progress(step, loss.item())
    return model.eval().requires_grad_(False)


def prior_key(config: DDPMConfig, seed: int) -> str:
    """sha256 (hex) of the canonical JSON of what determines the trained prior: the config's fields but
    NOT_TRAINING_FIELDS (the data set is named by them), the seed and PRIOR_FORMAT."""
    fields = {k: v for k, v in config.model_dump(mode="json").items() if k not in NOT_TRAINING_FIELDS}
    payload = {"config": fields, "seed": seed, "format": PRIOR_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
