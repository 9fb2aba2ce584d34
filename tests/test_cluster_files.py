"""The cluster definitions in cluster/, offline: Ray's own launcher checks (`prepare_config` then
`validate_config`, which validates against ray/autoscaler/ray-schema.json with jsonschema), the shape the
project wants (worker types from 0, a GPU type with an accelerator resource, Ray 2.60.0 images, setup that
installs the project), security (SSH only, loopback dashboard, token auth, no secrets), the KubeRay
manifests' required fields, and the commands of cluster/README.md."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from orchestrator.spec import load_sweep
from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
LAUNCHER_FILES = sorted(CLUSTER.glob("*.yaml"))
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
LOCAL_AUTH_TOKEN = "~/.ray/auth_token"
"""Ray's token file on the laptop, which the launcher files sync to every node."""
ACCELERATORS = {"A10G", "L4", "A100", "H100", "T4", "V100"}


def node_paths(config: dict) -> tuple[str, str, str]:
    """(the node's home, the project folder on the node, the token file on the node), read from a launcher file's
    file_mounts: the project is what it mounts from ".", the token what it mounts from the laptop's token file.
    Both must sit in one home folder on the node (the image user's), the token where Ray looks: <home>/.ray/."""
    mounts = config["file_mounts"]
    (project,) = [node for node, local in mounts.items() if local == "."]
    (token,) = [node for node, local in mounts.items() if local == LOCAL_AUTH_TOKEN]
    home = str(PurePosixPath(project).parent)
    assert PurePosixPath(project).is_absolute() and token == f"{home}/.ray/auth_token", mounts
    return home, project, token


def ray_pin() -> str:
    """The Ray version pyproject.toml pins (`ray[...]==X.Y.Z`)."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [re.fullmatch(r"ray(?:\[[^\]]*\])?==([\d.]+)", d) for d in dependencies]
    found = [pin.group(1) for pin in pins if pin]
    assert len(found) == 1, dependencies
    return found[0]


def launcher(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every mapping entry in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def test_the_launcher_files_are_there():
    assert [p.name for p in LAUNCHER_FILES] == ["aws-gpu.yaml", "gcp-gpu.yaml"]


# ------------------------------------------------------------------ cluster launcher


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_file_passes_rays_own_checks(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = launcher(path)
    for key in (
        "cluster_name",
        "max_workers",
        "idle_timeout_minutes",
        "provider",
        "auth",
        "docker",
        "available_node_types",
        "head_node_type",
        "file_mounts",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        assert key in config, f"{path.name}: no {key}"
    prepared = prepare_config(copy.deepcopy(config))  # merged with Ray's defaults.yaml for the provider
    validate_config(prepared)  # jsonschema against ray-schema.json, then Ray's own consistency checks
    # Ray's defaults.yaml must not have slipped in a command of its own (it installs a nightly Ray).
    commands = " ".join(prepared["head_setup_commands"] + prepared["worker_setup_commands"])
    assert "ray-wheels" not in commands and "ray-3.0.0.dev0" not in commands


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_worker_types_scale_from_zero_and_one_is_a_gpu_learner(path):
    config = launcher(path)
    assert config["idle_timeout_minutes"] > 0 and isinstance(config["max_workers"], int)
    head = config["available_node_types"][config["head_node_type"]]
    assert not head["resources"].get("GPU"), "the head is a CPU node"
    workers = worker_types(config)
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, name
        assert isinstance(node_type["max_workers"], int) and 1 <= node_type["max_workers"] <= config["max_workers"]
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert len(gpu) == 1, f"one GPU worker type, found {sorted(gpu)}"
    (gpu_type,) = gpu.values()
    assert ACCELERATORS & set(gpu_type["resources"]), "the GPU type names its accelerator as a custom resource"
    setup = " ".join(gpu_type["worker_setup_commands"])
    assert f"pip install --quiet -e {node_paths(config)[1]}" in setup and "openmm-cuda-" in setup
    cpu = [t for t in workers.values() if not t["resources"].get("GPU")]
    assert cpu and all(_is_spot(t["node_config"]) for t in cpu), "CPU workers are spot / preemptible"


def _is_spot(node_config: dict[str, Any]) -> bool:
    aws = node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    gcp = scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True
    return aws or gcp


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_images_name_the_pinned_ray(path):
    config = launcher(path)
    docker = config["docker"]
    images = [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]
    images += [t["docker"]["worker_image"] for t in config["available_node_types"].values() if "docker" in t]
    assert len(images) >= 2
    for image in images:
        match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-(cpu|cu12\d)", image)
        assert match and match.group(1) == ray_pin(), image
    gpu_type = next(t for t in worker_types(config).values() if t["resources"].get("GPU"))
    assert "-cu12" in gpu_type["docker"]["worker_image"]


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_setup_installs_the_project_and_the_head_runs_mlflow(path):
    config = launcher(path)
    home, project, _ = node_paths(config)
    assert f"pip install --quiet -e {project}" in config["setup_commands"]
    start = " ".join(config["head_start_ray_commands"])
    store = "s3" if config["provider"]["type"] == "aws" else "gs"
    assert "mlflow server" in start and f"--backend-store-uri sqlite:///{home}/mlflow/mlflow.db" in start
    assert f"--artifacts-destination {store}://" in start
    # Jobs log to MLflow on the head's loopback and keep Tune's storage in the bucket (orchestrator/storage.py).
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in start and f"ORCHESTRATOR_STORAGE_PATH={store}://" in start
    assert "mlflow server --host 127.0.0.1 " in start and "0.0.0.0" not in start


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_only_ssh_is_open_and_token_auth_stays_on(path):
    config, text = launcher(path), path.read_text()
    # No rule of ours opens anything to the internet: Ray's default group opens SSH (22) only.
    assert "0.0.0.0/0" not in text and "::/0" not in text
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])
        ]
        if {"0.0.0.0/0", "::/0"} & set(ranges):
            assert rule["FromPort"] == rule["ToPort"] == 22, rule
    if config["provider"]["type"] == "gcp":  # the subnetwork whose firewall cluster/README.md creates
        for node_type in config["available_node_types"].values():
            (interface,) = node_type["node_config"]["networkInterfaces"]
            assert interface["subnetwork"].endswith("/subnetworks/ray-amortized")
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "--dashboard-host=0.0.0.0" not in head_start
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        ray_start = next(c for c in commands if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in ray_start, ray_start
    assert "RAY_AUTH_MODE=disabled" not in text
    _, _, token = node_paths(config)
    assert config["file_mounts"][token] == LOCAL_AUTH_TOKEN


# ------------------------------------------------------------------ no secrets anywhere in cluster/

SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|private_?key|access_?key|api_?key|token|credential)")
SECRET_VALUE = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY"),
    re.compile(r"(?i)aws_secret_access_key\s*[:=]"),
    re.compile(r"(?i)\bpassword\s*[:=]\s*\S"),
    re.compile(r"\b[A-Za-z0-9+]{32,}={0,2}(?![\w/])"),  # a long random-looking token
]
REFERENCES = {"secretName"}  # keys whose value names a Secret rather than holding one


def _secret_looking(key: Any, value: Any) -> bool:
    if not isinstance(key, str) or not SECRET_KEY.search(key) or key in REFERENCES:
        return False
    if not isinstance(value, str) or not value:
        return False
    return not value.startswith(("~/", "/"))  # a file path (e.g. the token file mount), not a value


@pytest.mark.parametrize(
    "path",
    sorted(p for p in CLUSTER.rglob("*") if p.is_file() and p.suffix != ".md"),
    ids=lambda p: str(p.relative_to(CLUSTER)),
)
def test_no_secret_looking_values(path):
    text = path.read_text()
    for pattern in SECRET_VALUE:
        assert not pattern.search(text), f"{path.name}: {pattern.search(text).group(0)!r}"
    if path.suffix != ".yaml":
        return
    for document in yaml.safe_load_all(text):
        for where, key, value in walk(document):
            assert not _secret_looking(key, value), f"{path.name}{where}: {key}: {value!r}"
            if key == "env":  # container env: a secret-named variable takes its value from a Secret
                for variable in value:
                    assert not (SECRET_KEY.search(variable["name"]) and "value" in variable), variable


def test_the_secret_check_catches_what_it_should():
    assert _secret_looking("aws_secret_access_key", "abc") and _secret_looking("password", "hunter2")
    assert not _secret_looking("secretName", "amortized-ray-token")
    assert not _secret_looking(node_paths(launcher(LAUNCHER_FILES[0]))[2], LOCAL_AUTH_TOKEN)
    leaks = [
        "AKIAIOSFODNN7EXAMPLE",
        "-----BEGIN RSA PRIVATE KEY-----",
        "aws_secret_access_key = x",
        "token: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    ]
    assert all(any(p.search(leak) for p in SECRET_VALUE) for leak in leaks)
    assert not any(
        p.search("resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04")
        for p in SECRET_VALUE
    )


# ------------------------------------------------------------------ KubeRay


def _manifests(path: Path) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    containers = pod_template["spec"]["containers"]
    for container in containers:
        assert container["name"] and container["image"], container
    return containers


def _custom_resources(ray_start_params: dict[str, str]) -> dict[str, float]:
    """KubeRay's `resources` start param: a JSON object inside a quoted string, '"{\\"L4\\": 1}"'."""
    raw = ray_start_params.get("resources")
    return json.loads(json.loads(raw)) if raw else {}


def test_raycluster_autoscales_from_zero_with_a_gpu_and_a_cpu_group():
    manifests = _manifests(RAYCLUSTER)
    cluster = manifests["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == ray_pin()
    assert spec["authOptions"]["mode"] == "token"
    # What the ray.io/v1 CRD requires: headGroupSpec {template, rayStartParams}; each worker group
    # {groupName, minReplicas, maxReplicas, rayStartParams, template}; rayStartParams map strings to strings.
    head = spec["headGroupSpec"]
    groups = spec["workerGroupSpecs"]
    for group in [head, *groups]:
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
        _containers(group["template"])
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    for group in groups:
        for key in ("groupName", "minReplicas", "maxReplicas"):
            assert key in group, (group.get("groupName"), key)
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0 and group["maxReplicas"] >= 1
    gpu = [g for g in groups if any("nvidia.com/gpu" in c["resources"]["limits"] for c in _containers(g["template"]))]
    assert len(gpu) == 1 and len(groups) == 2
    assert ACCELERATORS & set(_custom_resources(gpu[0]["rayStartParams"]))
    # The MLflow server beside the head, on the head pod's loopback: no Service, a probe from inside the pod.
    mlflow = next(c for c in _containers(head["template"]) if c["name"] == "mlflow")
    command = " ".join(mlflow["command"])
    assert "mlflow server" in command and "--backend-store-uri=sqlite:////mlflow/mlflow.db" in command
    assert re.search(r"--artifacts-destination=(s3|gs)://", command)
    assert "--host=127.0.0.1" in mlflow["command"] and "0.0.0.0" not in command
    assert "exec" in mlflow["readinessProbe"] and "ports" not in mlflow
    ray_head = next(c for c in _containers(head["template"]) if c["name"] == "ray-head")
    env = {v["name"]: v.get("value") for v in ray_head["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert re.fullmatch(r"(s3|gs)://YOUR_BUCKET/ray_results", env["ORCHESTRATOR_STORAGE_PATH"])
    assert "Service" not in manifests and "Secret" not in manifests


def test_rayjob_runs_the_torsional_sweep_on_that_cluster():
    job = _manifests(RAYJOB)["RayJob"]
    cluster = _manifests(RAYCLUSTER)["RayCluster"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert spec["entrypoint"] == "python -m orchestrator run sweeps/torsional.yaml"
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "orchestrator", "run"]
    load_sweep(ROOT / argv[4], [])  # the sweep it names exists and validates
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    # The RayJob runs from the folder the launcher files put the project in (one layout for every cluster).
    assert {node_paths(launcher(path))[1] for path in LAUNCHER_FILES} == {runtime_env["working_dir"]}
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"  # the driver runs on the head pod
    assert re.fullmatch(r"(s3|gs)://YOUR_BUCKET/ray_results", runtime_env["env_vars"]["ORCHESTRATOR_STORAGE_PATH"])
    (submitter,) = _containers(spec["submitterPodTemplate"])
    env = {v["name"]: v for v in submitter["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": cluster["spec"]["authOptions"]["secretName"], "key": "auth_token"}


def test_kuberay_images_name_the_pinned_ray():
    images = [
        c["image"]
        for g in [
            _manifests(RAYCLUSTER)["RayCluster"]["spec"]["headGroupSpec"],
            *_manifests(RAYCLUSTER)["RayCluster"]["spec"]["workerGroupSpecs"],
        ]
        for c in _containers(g["template"])
    ]
    images += [c["image"] for c in _containers(_manifests(RAYJOB)["RayJob"]["spec"]["submitterPodTemplate"])]
    pin = ray_pin()
    assert images and all(f"ray{pin}-py311-cu12" in image for image in images), images
    dockerfile = (CLUSTER / "kuberay" / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(pin)}-py311-cu12\d$", dockerfile, re.M)
    (project,) = {node_paths(launcher(path))[1] for path in LAUNCHER_FILES}  # the image has it where the VMs do
    assert f"pip install --no-cache-dir -e {project}" in dockerfile and "openmm-cuda-" in dockerfile


# ------------------------------------------------------------------ the walk-through's commands exist


def _readme_commands() -> list[str]:
    """The indented command lines of cluster/README.md, continuations joined, comments dropped."""
    lines, current = [], ""
    for line in (CLUSTER / "README.md").read_text().splitlines():
        if not line.startswith("    ") and not current:
            continue
        part = line.strip()
        current = f"{current} {part}" if current else part
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        lines.append(current.split("  #")[0].strip())
        current = ""
    return [line for line in lines if line]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Serve's pydantic fields, imported by Ray's CLI
def test_readme_ray_and_orchestrator_commands_exist():
    from ray.scripts.scripts import cli

    checked = 0
    for line in _readme_commands():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
            words.pop(0)
        if words and words[0].endswith("/ray"):
            words[0] = "ray"
        if not words or words[0] != "ray" or words[1] == "exec":
            continue
        command = cli.commands[words[1]]
        rest = words[2:]
        if hasattr(command, "commands"):  # a group: `ray job submit`
            command, rest = command.commands[rest[0]], rest[1:]
        options = {opt for param in command.params for opt in param.opts}
        for word in rest:
            if word == "--":
                python = rest[rest.index("--") + 1 :]
                assert python[:4] == ["python", "-m", "orchestrator", "run"], line
                load_sweep(ROOT / python[4], [])
                break
            if word.startswith("-"):
                assert word.split("=")[0] in options, f"{line}: ray {words[1]} has no {word}"
        checked += 1
    assert checked >= 8
