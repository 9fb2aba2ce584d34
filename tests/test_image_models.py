"""The shared image classifiers: shapes, a learnable signal, and the features/head split."""

import pytest
import torch

from workloads.image_models import ARCHITECTURES, build_model


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("channels,size", [(3, 32), (1, 16)])
def test_logits_shape_and_features_head_split(architecture, channels, size):
    torch.manual_seed(0)
    model = build_model(architecture, channels, size, num_classes=5).eval()
    x = torch.rand(4, channels, size, size)
    logits = model(x)
    assert logits.shape == (4, 5)
    assert torch.allclose(model.head(model.features(x)), logits, atol=1e-6)
    assert model.features(x).shape == (4, model.feature_dim)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_learns_a_brightness_rule(architecture):
    """Label = which half of the image is bright: every model fits it within 60 Adam steps."""
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 0.2
    y = torch.randint(0, 2, (64,))
    x[y == 0, :, :8] += 0.8
    x[y == 1, :, 8:] += 0.8
    model = build_model(architecture, 1, 16, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.95


def test_unknown_architecture_and_bad_vit_size():
    with pytest.raises(ValueError, match="unknown architecture 'lenet'"):
        build_model("lenet", 3, 32, 10)
    with pytest.raises(ValueError, match="not a multiple"):
        build_model("vit", 3, 30, 10)
