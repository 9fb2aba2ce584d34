"""The SED driver on a real local Ray: member actors, the driver as coordinator, the evaluator actor.

One driver (heads mode, which adds to "full" only the copy of actor 0's pretrained extractor to the others;
tests/test_sed_a2d.py splits both modes in process) with 2 member actors and the evaluator: its first step's
gradients, read back from the member actors, equal the gradient of the whole SED loss computed in this process
from the same initial weights; then it trains to the end through `advance` (metrics, predictions.parquet,
figure) and reloads a checkpoint."""

import pyarrow.parquet as pq
import pytest
import ray
import torch

from orchestrator.trial import stop_actors
from tests.conftest import family_driver
from workloads.ensembles.a2d import sed_loss
from workloads.ensembles.members import make_host

CONFIG = {
    "dataset": "digits",
    "architecture": "mlp",
    "mode": "heads",
    "num_members": 3,
    "pair_selection": "all_pairs",
    "lam": 0.5,
    "mu": 1.0,
    "batch_size": 32,
    "total_iters": 12,
    "eval_every": 6,
    "pretrain_iters": 5,
    "corruptions": ["contrast", "pixelate"],
    "severities": [1, 5],
}


@pytest.fixture(scope="module")
def driver(ray_cluster):
    resources = {"learner": {"cpus": 0.4}, "workers": {"ensemble_member": {"count": 2, "cpus": 0.4}}}
    driver = family_driver("sed", "sed", CONFIG, "eval/ood_auroc_pds", "max", resources)
    yield driver
    stop_actors(driver)


def test_gradients_from_member_actors_equal_the_whole_loss_gradient(driver):
    config = driver.config
    assert driver.members == [[0, 2], [1]]
    extractors = [w["extractor"] for w in ray.get([host.weights.remote() for host in driver.hosts])]
    assert all(torch.equal(extractors[0][k], extractors[1][k]) for k in extractors[0])  # actor 0's, pretrained
    reference = make_host(config, [0, 1, 2], seed=0)
    reference.load_weights(ray.get([host.weights.remote() for host in driver.hosts]))
    seen = {}

    def forward(draw):
        seen["draw"] = draw
        return driver._forward(draw)

    def backward(updates):
        seen["updates"] = updates
        return driver._backward(updates)

    _, refs = driver.coordinator.run_step(forward, backward)
    ray.get(refs)
    split = {m: g for host in driver.hosts for m, g in ray.get(host.gradients.remote()).items()}
    draw = seen["draw"]
    logits = reference.member_logits(draw.batch.images, draw.active)
    position = {m: i for i, m in enumerate(draw.active)}
    weights = seen["updates"][draw.active[0]].sample_weights
    loss = sed_loss(
        logits,
        draw.batch.labels,
        [(position[m], position[r]) for m, r in draw.pairs],
        weights,
        config.lam,
        config.mu,
        config.a2d_eps,
    )
    for m in draw.active:
        whole = torch.autograd.grad(loss, reference.parameters_of(m), retain_graph=True)
        for g_split, g_whole in zip(split[m], whole):
            assert torch.allclose(g_split, g_whole, rtol=1e-4, atol=1e-6), (m, (g_split - g_whole).abs().max())


def test_advance_to_the_end_with_artifacts_and_checkpoint(driver, tmp_path):
    reports = []
    while not driver.finished:
        reports.append(driver.advance())
    assert driver.step == CONFIG["total_iters"] and len(reports) == 2
    metrics, files = reports[-1]
    for key in (
        "eval/id_accuracy",
        "eval/id_accuracy_min_member",
        "eval/ood_auroc_pds",
        "eval/ood_auroc_entropy",
        "eval/ood_auroc_mutual_info",
        "eval/ood_auroc_max_prob",
        "eval/shift/pixelate_s5/best_member",
        "eval/shift_mean_s1/ensemble",
        "train/member_ce",
        "train/a2d",
        "train/sample_weight_max",
    ):
        assert key in metrics, key
    assert "eval/id_accuracy_soup" in metrics  # heads always average into a meaningful soup
    assert set(files) == {"predictions.parquet", "ensemble.png"}
    for name, write in files.items():
        write(tmp_path / name)
    table = pq.read_table(tmp_path / "predictions.parquet").to_pydict()
    assert set(table["split"]) == {"id", "ood"} and len(table["member_predictions"][0]) == 3
    assert (tmp_path / "ensemble.png").read_bytes()[:4] == b"\x89PNG"

    state = driver.state()
    before = ray.get(driver.hosts[1].weights.remote())
    driver.load_state(driver.initial_state)
    assert driver.step == 0 and not driver.finished
    driver.load_state(state)
    after = ray.get(driver.hosts[1].weights.remote())
    assert all(torch.equal(a, b) for m in before["heads"] for a, b in zip(before["heads"][m], after["heads"][m]))
    assert driver.step == CONFIG["total_iters"] and driver.finished
