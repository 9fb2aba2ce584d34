"""Small image classifiers shared by the image workloads (SED ensembles, WCST-ML), plain PyTorch.

    resnet20   He et al. 2016's CIFAR ResNet: 3 stages x 3 basic blocks, widths 16/32/64 (0.27 M params)
    convnet    4 conv-BN-ReLU layers, stride 2 from the second, global average pool
    mlp        flatten -> 2 hidden layers of 256 with ReLU
    vit        a 4-layer, 4-head ViT (torchvision's Encoder), patch size image_size / 8

Every model maps (B, C, H, W) images in [0, 1] to (B, num_classes) logits, and exposes
`features(x)` (the penultimate representation) and `head` (the last linear layer), so that
an ensemble of heads can share one frozen feature extractor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ARCHITECTURES = ("resnet20", "convnet", "mlp", "vit")


class Classifier(nn.Module):
    """logits = head(features(x)); subclasses set `body` (images -> [B, feature_dim]), `head` and `feature_dim`."""

    body: nn.Module
    head: nn.Linear
    feature_dim: int

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """y = relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); a 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet20(Classifier):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16, blocks_per_stage: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, stage_width, stride))
                channels = stage_width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)
        self.feature_dim = channels


class ConvNet(Classifier):
    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        widths = (width, width, 2 * width, 2 * width)
        layers: list[nn.Module] = []
        channels = in_channels
        for i, out in enumerate(widths):
            layers += [nn.Conv2d(channels, out, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)
        self.feature_dim = channels


class MLP(Classifier):
    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden


class ViT(Classifier):
    """Patches (image_size / 8)^2 pixels each -> 64 tokens + a class token -> Encoder -> class token."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        patches_per_side: int = 8,
    ):
        super().__init__()
        if image_size % patches_per_side:
            raise ValueError(f"vit: image_size {image_size} is not a multiple of {patches_per_side} patches per side")
        patch = image_size // patches_per_side
        self.patchify = nn.Conv2d(in_channels, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        # imported here: torchvision.models costs ~2.5 s to import, and only the ViT needs it
        from torchvision.models.vision_transformer import Encoder

        self.encoder = Encoder(patches_per_side**2 + 1, depth, heads, dim, 2 * dim, dropout=0.0, attention_dropout=0.0)
        self.head = nn.Linear(dim, num_classes)
        self.feature_dim = dim

    def features(self, x: Tensor) -> Tensor:
        tokens = self.patchify(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], dim=1)
        return self.encoder(tokens)[:, 0]


def build_model(architecture: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """One of ARCHITECTURES for (in_channels, image_size, image_size) inputs."""
    if architecture == "resnet20":
        return ResNet20(in_channels, num_classes)
    if architecture == "convnet":
        return ConvNet(in_channels, num_classes)
    if architecture == "mlp":
        return MLP(in_channels, image_size, num_classes)
    if architecture == "vit":
        return ViT(in_channels, image_size, num_classes)
    raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
