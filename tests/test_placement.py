"""Does one trial fit the cluster? Without an autoscaler: the nodes that are up. With one: also the node types
it can add, read from its config (here the project's own cluster files, through Ray's `prepare_config`), so a
GPU trial fits a GPU cluster scaled to zero and an impossible one is still refused before Tune starts."""

from __future__ import annotations

import copy

import pytest
import yaml

from orchestrator.placement import (
    Autoscaler,
    NodeType,
    _types_from_config,
    autoscaler,
    cluster_fit_error,
    fit_error,
    trial_bundles,
)
from orchestrator.spec import load_sweep
from tests.conftest import ROOT

SWEEP = ROOT / "sweeps" / "samplers.yaml"
HEAD_ONLY = [{"CPU": 2.0, "memory": 8e9, "node:__internal_head__": 1.0}]  # a launcher cluster scaled to zero


def _spec(*overrides: str):
    return load_sweep(SWEEP, list(overrides))


def _launcher_types(name: str) -> list[NodeType]:
    from ray.autoscaler._private.util import prepare_config

    config = yaml.safe_load((ROOT / "cluster" / name).read_text())
    return _types_from_config(prepare_config(copy.deepcopy(config)))


def test_the_cluster_files_node_types_are_read():
    aws = {t.name: t for t in _launcher_types("aws-gpu.yaml")}
    assert set(aws) == {"gpu_learner", "cpu_spot"}  # the head is not a type the autoscaler adds
    assert aws["gpu_learner"].resources == {"CPU": 4, "GPU": 1, "A10G": 1} and aws["gpu_learner"].max_count == 2
    gcp = {t.name: t for t in _launcher_types("gcp-gpu.yaml")}
    assert gcp["gpu_learner"].resources["L4"] == 1


@pytest.mark.parametrize("cluster_file, accelerator", [("aws-gpu.yaml", "A10G"), ("gcp-gpu.yaml", "L4")])
def test_a_gpu_trial_fits_a_cluster_scaled_to_zero_only_through_its_autoscaler(cluster_file, accelerator):
    spec = _spec(
        f"resources.learner={{cpus: 2, gpus: 1, custom: {{{accelerator}: 1}}}}",
        "resources.workers.replay_buffer={count: 1, cpus: 4}",
    )
    scaler = Autoscaler(_launcher_types(cluster_file), cluster_file)
    assert fit_error(spec, HEAD_ONLY, scaler) is None
    without = fit_error(spec, HEAD_ONLY, None)  # the same nodes, no autoscaler: the old check's answer
    assert without is not None and "learner" in without and "GPU: 1" in without


def test_what_no_node_type_offers_is_refused_with_the_types_named():
    scaler = Autoscaler(_launcher_types("aws-gpu.yaml"), "aws-gpu.yaml")
    wrong_accelerator = fit_error(_spec("resources.learner={cpus: 1, gpus: 1, custom: {H100: 1}}"), HEAD_ONLY, scaler)
    assert wrong_accelerator is not None and "H100: 1" in wrong_accelerator
    assert "gpu_learner {CPU: 4, GPU: 1, A10G: 1}" in wrong_accelerator and "aws-gpu.yaml" in wrong_accelerator
    # Each bundle must fit one node: 2 GPUs for one actor fit no g5.xlarge, though the cluster may have 2 GPUs.
    assert "GPU: 2" in fit_error(_spec("resources.learner={cpus: 1, gpus: 2}"), HEAD_ONLY, scaler)


def test_the_sum_over_a_trial_counts_every_node_the_autoscaler_may_add():
    types = [NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, 2)]
    three_gpus = load_sweep(
        ROOT / "sweeps" / "torsional.yaml",
        ["resources.learner={cpus: 1, gpus: 1}", "resources.workers.energy={count: 2, cpus: 1, gpus: 1}"],
    )
    problem = fit_error(three_gpus, HEAD_ONLY, Autoscaler(types, "test"))
    assert problem is not None and "reserves 3 GPU" in problem and "may add: 2" in problem
    unlimited = Autoscaler([NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, -1)], "test")  # max_count -1: no limit
    assert fit_error(three_gpus, HEAD_ONLY, unlimited) is None
    assert fit_error(three_gpus, HEAD_ONLY + [{"CPU": 4.0, "GPU": 1.0}], Autoscaler([types[0]], "test")) is None


def test_without_an_autoscaler_the_nodes_up_now_decide():
    nodes = [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert fit_error(_spec("resources.learner={cpus: 1, gpus: 1}"), nodes, None) is None
    assert "reserves 4 CPU" in fit_error(
        _spec("resources.learner={cpus: 2}", "resources.workers.replay_buffer={count: 1, cpus: 2}"), nodes, None
    )
    # The trial function's own bundle (on the head) is not the user's to size and is not checked here.
    assert trial_bundles(_spec())[0] == {"node:__internal_head__": 0.001}


# ------------------------------------------------------------------ on a running Ray (no autoscaler)


def test_a_local_ray_has_no_autoscaler_and_refuses_a_gpu_trial(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/ray_bootstrap_config.yaml here
    assert autoscaler() is None
    assert cluster_fit_error(_spec()) is None
    problem = cluster_fit_error(_spec("resources.learner={cpus: 1, gpus: 1}"))
    assert problem is not None and "GPU" in problem and "autoscaler" not in problem


def test_the_launchers_bootstrap_config_on_the_head_is_the_autoscalers(ray_cluster, tmp_path, monkeypatch):
    """Ray's cluster launcher gives the head's autoscaler `~/ray_bootstrap_config.yaml` (Ray Tune looks for the
    same file to tell an autoscaling cluster); a job's driver runs on the head and reads it."""
    from ray.autoscaler._private.util import prepare_config

    monkeypatch.setenv("HOME", str(tmp_path))
    config = prepare_config(yaml.safe_load((ROOT / "cluster" / "aws-gpu.yaml").read_text()))
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    found = autoscaler()
    assert found is not None and found.source.endswith("ray_bootstrap_config.yaml")
    assert {t.name for t in found.node_types} == {"gpu_learner", "cpu_spot"}
    assert cluster_fit_error(_spec("resources.learner={cpus: 1, gpus: 1, custom: {A10G: 1}}")) is None
    assert "L4" in cluster_fit_error(_spec("resources.learner={cpus: 1, gpus: 1, custom: {L4: 1}}"))


def test_an_autoscaler_process_counts_before_its_first_status_report(ray_cluster, tmp_path, monkeypatch):
    """Just after `ray start --head --autoscaling-config=...` the autoscaler has not reported a status yet; its
    process, found by its command line (monitor.py for this cluster's GCS), tells its node types already."""
    import subprocess
    import sys

    import ray
    from ray.autoscaler._private.util import prepare_config

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/ray_bootstrap_config.yaml here
    assert autoscaler() is None
    config_path = tmp_path / "autoscaling.yaml"
    config_path.write_text(
        yaml.safe_dump(prepare_config(yaml.safe_load((ROOT / "cluster" / "gcp-gpu.yaml").read_text())))
    )
    gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[-1]
    monitor = subprocess.Popen(  # argv as Ray's services.start_monitor writes it; the process only waits
        [sys.executable, "-c", "import time; time.sleep(120)", "/ray/autoscaler/_private/monitor.py",
         f"--gcs-address=127.0.0.1:{gcs_port}", f"--autoscaling-config={config_path}"]
    )  # fmt: skip
    try:
        found = autoscaler()
        problem = cluster_fit_error(_spec("resources.learner={cpus: 1, gpus: 1, custom: {L4: 1}}"))
    finally:
        monitor.kill()
        monitor.wait()
    assert found is not None and found.source == str(config_path)
    assert {t.name for t in found.node_types} == {"gpu_learner", "cpu_spot"}
    assert problem is None


def test_node_types_of_unknown_size_turn_the_check_off(ray_cluster, tmp_path, monkeypatch):
    """A launcher config may leave a type's resources to the cloud to fill in: then nothing is refused."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = yaml.safe_load((ROOT / "cluster" / "aws-gpu.yaml").read_text())
    del config["available_node_types"]["gpu_learner"]["resources"]
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    found = autoscaler()
    assert found is not None and found.node_types == [] and "without resources" in found.source
    assert cluster_fit_error(_spec("resources.learner={cpus: 1, gpus: 8}")) is None


def test_custom_resources_go_into_the_bundle_and_the_actor(ray_cluster):
    from orchestrator.errors import SpecError
    from orchestrator.placement import TrialContext

    spec = _spec("resources.learner={cpus: 2, gpus: 1, custom: {A10G: 1}}")
    assert trial_bundles(spec)[1] == {"CPU": 2, "GPU": 1, "A10G": 1}
    context = TrialContext(spec=spec, config=spec.config, seed=0, trial_id="t_00000")
    options = context.actor_options("learner")
    assert options["resources"] == {"A10G": 1} and options["num_gpus"] == 1
    assert "resources" not in context.actor_options("replay_buffer")
    assert context._bundle_index == {("learner", 0): 1, ("replay_buffer", 0): 2}  # after the trial's own bundle
    for bad, words in [
        ("{GPU: 1}", "custom resource name"),
        ("{'node:x': 1}", "custom resource name"),
        ("{A10G: 0}", "greater than 0"),
    ]:
        with pytest.raises(SpecError, match=words):
            _spec(f"resources.learner={{cpus: 1, custom: {bad}}}")
