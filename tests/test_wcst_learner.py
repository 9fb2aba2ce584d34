"""WCST-ML learning (workloads/wcst/learner.py), small: trained on the {color, shape, scale} diagonal, an MLP
adopts color (the paper's finding): color's off-diagonal accuracy near 1, shape's and scale's near the
other-cue chance level. A restored checkpoint continues exactly like the original."""

import math

import torch

from workloads.wcst.config import WcstConfig
from workloads.wcst.learner import WcstLearner, flatness_metric

SMALL = WcstConfig(
    architecture="mlp",
    cues=("color", "shape", "scale"),
    train_size=2_000,
    test_size=600,
    resolution=16,
    supersample=2,
    total_iters=4,
    flatness_radii=(0.0, 8.0, 64.0),
    flatness_directions=2,
    flatness_samples=300,
)


def test_diagonal_training_adopts_color():
    learner = WcstLearner(SMALL, seed=0)
    metrics, states = learner.train(4)
    evaluation = learner.evaluate().metrics
    assert states is None and learner.step == 4
    assert metrics["train/acc"] > 0.95 and evaluation["eval/diagonal_acc"] > 0.95
    chance = evaluation["eval/chance_other_cue"]
    assert evaluation["eval/offdiag_acc/color"] > 0.85, evaluation
    for cue in ("shape", "scale"):
        assert abs(evaluation[f"eval/offdiag_acc/{cue}"] - chance) < 0.1, evaluation
    flatness = learner.flatness()
    assert flatness[flatness_metric(0.0)] == 0.0
    assert math.isfinite(flatness["flatness/loss"]) and flatness[flatness_metric(64.0)] > flatness[flatness_metric(8.0)]


def test_restored_checkpoint_trains_on_identically():
    config = SMALL.model_copy(update={"train_size": 300, "test_size": 90})
    original = WcstLearner(config, seed=1)
    original.train(1)
    state = original.state_dict()
    restored = WcstLearner(config, seed=1)
    restored.load_state_dict(state)
    assert restored.step == 1
    after_original, _ = original.train(1)
    after_restored, _ = restored.train(1)
    assert after_original["train/loss"] == after_restored["train/loss"]
    assert all(torch.equal(a, b) for a, b in zip(original.model.parameters(), restored.model.parameters()))
