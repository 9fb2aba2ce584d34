"""A short SED training against a deep ensemble (in process, digits with 8 and 9 held out): SED's members
disagree far more on the held-out digits, while the ensemble keeps its ID accuracy and no member collapses.

Recorded (200 iterations, 3 MLP members, seeds 0 / 1): OOD disagreement SED 0.64 / 0.39, deep ensemble
0.13 / 0.11; ID accuracy 0.975 / 0.975 vs 0.979 / 0.984; lowest SED member 0.92 / 0.96 (chance 0.125)."""

from workloads.ensembles.config import SEDConfig
from workloads.ensembles.run_local import run

BASE = {
    "dataset": "digits",
    "num_members": 3,
    "total_iters": 200,
    "eval_every": 200,
    "corruptions": ["contrast"],
    "severities": [1],
    "lam": 0.5,
    "mu": 0.1,
}


def test_sed_members_disagree_more_on_ood_than_a_deep_ensemble():
    sed = run(SEDConfig(**BASE, pair_selection="random_pair"), seed=0, log=lambda *a, **k: None)[0][-1]
    deep = run(SEDConfig(**BASE, pair_selection="none"), seed=0, log=lambda *a, **k: None)[0][-1]
    assert sed["eval/ood_disagreement"] > deep["eval/ood_disagreement"] + 0.15, (sed, deep)
    assert sed["eval/ood_disagreement"] > 2 * sed["eval/id_disagreement"]
    assert sed["eval/id_accuracy"] > deep["eval/id_accuracy"] - 0.03
    assert sed["eval/id_accuracy_min_member"] > 1 / 8 + 0.1
    assert "eval/shift/contrast_s1/ensemble" in sed and "train/a2d" in sed and "train/a2d" not in deep
