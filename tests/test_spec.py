"""Sweep-file validation: good files load; each class of mistake is one readable SpecError."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError, SpecError
from orchestrator.spec import AshaScheduler, Domain, PbtScheduler, SweepSpec, load_sweep
from workloads.samplers.config import SamplerConfig

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "sweeps_bad"
SAMPLERS = ROOT / "sweeps" / "samplers.yaml"
MINIMAL = {"name": "t", "workload": "samplers", "tune": {"metric": "eval/delta_log_z_rw", "mode": "min"}}


def spec_error(path: Path, overrides=()) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_sweep(path, overrides)
    message = str(info.value)
    assert str(path) in message
    assert "Traceback" not in message and "\n" not in message
    assert info.value.__context__ is None or info.value.__suppress_context__  # no chained traceback
    return info.value


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_good_sweeps_load(path):
    spec = load_sweep(path)
    assert spec.source == path
    assert SweepSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()


def test_samplers_sweep_contents():
    spec = load_sweep(SAMPLERS)
    assert isinstance(spec.config, SamplerConfig)
    assert (spec.config.num_steps, spec.config.diffusion_sigma2, spec.config.batch_size, spec.config.loss) == (
        100,
        5.0,
        300,
        "tb",
    )
    assert set(spec.search_space) == {"lr_policy", "exploration_factor"}
    assert spec.tune.scheduler is None and spec.tune.metric == "eval/delta_log_z_rw"
    # Two trials side by side on a 2-core laptop: one trial's actors reserve at most one CPU.
    assert spec.resources.learner.cpus + spec.resources.workers["replay_buffer"].cpus <= 1
    assert spec.mlflow.experiment == "samplers-25gmm" and spec.trial_count_hint() == 2


# (file, key path, words the message must contain)
BAD_CASES = [
    ("yaml_syntax", "", ["expected valid YAML", "line 6"]),
    ("not_mapping", "", ["expected a mapping", "found a list"]),
    ("unknown_top_key", "searchspace", ["unknown key 'searchspace'", "Did you mean 'search_space'?"]),
    (
        "unknown_nested_key",
        "config.replay.capcity",
        ["unknown key 'capcity'", "capacity, prioritization", "Did you mean 'capacity'?"],
    ),
    ("wrong_type", "tune.num_samples", ["expected an integer", "found 'many'"]),
    ("negative_grace_period", "tune.scheduler.grace_period", ["expected a number greater than 0, found -1."]),
    ("unknown_workload", "workload", ["one of: samplers", "found 'gflownets'"]),
    ("unknown_role", "resources.workers.energy", ["replay_buffer", "unknown role 'energy'"]),
    ("empty_bundle", "resources.workers.replay_buffer", ["cannot be empty"]),
    ("fractional_gpus", "resources.learner.gpus", ["whole number", "found 1.5"]),
    ("search_path_missing", "search_space.lr", ["field of SamplerConfig", "Did you mean 'lr_policy'?"]),
    ("search_value_invalid", "search_space.lr_policy", ["greater than 0", "found -0.001"]),
    ("loguniform_low", "search_space.lr_policy", ["0 < low < high", "found [0, 0.001]"]),
    ("pbt_grid", "search_space.exploration_factor", ["with pbt", "found grid"]),
]


def test_every_bad_file_has_a_case():
    assert {p.stem for p in BAD.glob("*.yaml")} == {name for name, _, _ in BAD_CASES}


@pytest.mark.parametrize("name,key,words", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_sweep(name, key, words):
    path = BAD / f"{name}.yaml"
    error = spec_error(path)
    assert error.key == key and error.file == str(path)
    assert str(error).startswith(f"{path}: {key}: " if key else f"{path}: expected ")
    for word in words:
        assert word in str(error)
    assert isinstance(error, OrchestratorError)


def test_missing_file():
    error = spec_error(BAD / "nope.yaml")
    assert "readable sweep file" in str(error)


def test_set_overrides_applied():
    spec = load_sweep(
        SAMPLERS,
        [
            "config.lr_policy=3e-4",
            "tune.num_samples=5",
            "config.replay={enabled: true}",
            "tune.scheduler={type: asha, grace_period: 3}",
        ],
    )
    assert spec.config.lr_policy == 3e-4 and isinstance(spec.config.lr_policy, float)
    assert spec.tune.num_samples == 5 and spec.config.replay.enabled
    assert spec.tune.scheduler == AshaScheduler(grace_period=3)
    assert load_sweep(SAMPLERS, ["tune.scheduler=none"]).tune.scheduler is None
    # a new nested key through absent mappings
    assert load_sweep(SAMPLERS, ["tune.stop.time_total_s=60"]).tune.stop.time_total_s == 60


@pytest.mark.parametrize(
    "override,words",
    [
        ("tune.num_samples", ["--set: expected dotted.key=value", "'tune.num_samples'"]),
        ("tune..num_samples=2", ["--set: expected dotted.key=value"]),
        ("name.first=x", ["--set name.first", "name is not one", "'samplers-25gmm'"]),
        ("config.lr_policy=[1, 2", ["--set config.lr_policy", "a YAML value"]),
    ],
)
def test_set_overrides_rejected(override, words):
    error = spec_error(SAMPLERS, [override])
    for word in words:
        assert word in str(error)


def test_override_validated_like_the_file():
    error = spec_error(SAMPLERS, ["config.loss=kl"])
    assert error.key == "config.loss" and "expected one of: tb, vargrad, subtb, fl_subtb, pis, found 'kl'" in str(error)


def test_smoke_shrinks():
    spec = SweepSpec.from_dict(
        {
            **MINIMAL,
            "search_space": {"lr_policy": {"grid": [1e-3, 2e-3, 3e-3]}, "num_layers": {"randint": [1, 4]}},
            "tune": {**MINIMAL["tune"], "num_samples": 10, "stop": {"training_iteration": 50}},
        }
    )
    assert spec.trial_count_hint() == 30
    smoke = spec.smoke()
    assert smoke.trial_count_hint() == 2 and smoke.search_space["lr_policy"] == Domain(
        kind="choice", values=[1e-3, 2e-3, 3e-3]
    )
    assert smoke.tune.stop.training_iteration == 2 and smoke.tune.max_concurrent_trials == 2
    assert smoke.config == SamplerConfig().smoke() and smoke.config.total_iters < spec.config.total_iters
    assert spec.tune.num_samples == 10 and spec.config.total_iters == 5000  # the original is untouched
    one = SweepSpec.from_dict({**MINIMAL, "tune": {**MINIMAL["tune"], "stop": {"training_iteration": 1}}}).smoke()
    assert one.tune.stop.training_iteration == 1 and one.trial_count_hint() == 1


def test_resolved_config():
    spec = load_sweep(SAMPLERS)
    config = spec.resolved_config({"lr_policy": 2e-3, "exploration_factor": 0.1, "replay.capacity": 1000})
    assert isinstance(config, SamplerConfig)
    assert (config.lr_policy, config.exploration_factor, config.replay.capacity) == (2e-3, 0.1, 1000)
    assert spec.config.lr_policy == 1e-3  # base unchanged
    with pytest.raises(SpecError, match=r"config\.replay\.capacity: expected a number greater than 0, found -5"):
        spec.resolved_config({"replay.capacity": -5})
    with pytest.raises(SpecError, match=r"config\.lr: expected a field of SamplerConfig"):
        spec.resolved_config({"lr": 1.0})


def test_scheduler_forms():
    def scheduler(value):
        return SweepSpec.from_dict(
            {
                **MINIMAL,
                "search_space": {"lr_policy": {"choice": [1e-3]}},
                "tune": {**MINIMAL["tune"], "scheduler": value},
            }
        ).tune.scheduler

    assert scheduler("none") is None and scheduler({"type": "none"}) is None and scheduler(None) is None
    assert scheduler({"type": "pbt"}) == PbtScheduler()
    with pytest.raises(SpecError, match=r"tune\.scheduler\.type: expected one of: asha, pbt, none, found 'hyperband'"):
        scheduler({"type": "hyperband"})


@pytest.mark.parametrize(
    "patch,key,words",
    [
        ({"tune": {"metric": "loss", "mode": "min"}}, "tune.metric", "'eval/...' or 'train/...'"),
        (
            {"tune": {"metric": "eval/x", "mode": "min", "scheduler": {"type": "pbt"}}},
            "search_space",
            "at least one domain",
        ),
        (
            {
                "tune": {"metric": "eval/x", "mode": "min", "scheduler": {"type": "pbt"}, "search": "optuna"},
                "search_space": {"lr_policy": {"choice": [1e-3]}},
            },
            "tune.search",
            "random when tune.scheduler is pbt",
        ),
        (
            {
                "tune": {"metric": "eval/x", "mode": "min", "search": "optuna"},
                "search_space": {"loss": {"grid": ["tb", "vargrad"]}},
            },
            "tune.search",
            "Optuna cannot enumerate",
        ),
        (
            {"search_space": {"replay": {"choice": [{"enabled": True}, {"capcity": 3}]}}},
            "search_space.replay",
            "valid for config.replay.capcity",
        ),
        ({"name": "my sweep"}, "name", "letters, digits"),
        (
            {"search_space": {"num_layers": {"uniform": [1, 3]}}},
            "search_space.num_layers",
            "randint or choice for an integer field",
        ),
        ({"search_space": {"num_layers": {"randint": [1.5, 3]}}}, "search_space.num_layers", "integer bounds"),
        ({"search_space": {"loss": {"choice": ["tb", "kl"]}}}, "search_space.loss", "one of: tb, vargrad"),
        ({"search_space": {"lr_policy": 1e-3}}, "search_space.lr_policy", "exactly one key"),
        ({"search_space": {"lr_policy": {"uniform": [2e-3, 1e-3]}}}, "search_space.lr_policy", "low < high"),
        ({"config": {"lr_policy": "fast"}}, "config.lr_policy", "expected a number, found 'fast'"),
        ({"config": []}, "config", "expected a mapping"),
        ({"resources": {"learner": {"count": 2}}}, "resources.learner.count", "one learner per trial"),
        (
            {"resources": {"workers": {"replay_buffer": {"cpu": 1}}}},
            "resources.workers.replay_buffer.cpu",
            "Did you mean 'cpus'?",
        ),
        (
            {"tune": {"metric": "eval/x", "mode": "min", "scheduler": {"type": "asha", "grace": 2}}},
            "tune.scheduler.grace",
            "Did you mean 'grace_period'?",
        ),
        ({"tune": {"mode": "min"}}, "tune.metric", "required"),
    ],
)
def test_more_mistakes(patch, key, words):
    with pytest.raises(SpecError) as info:
        SweepSpec.from_dict({**MINIMAL, **patch}, source="s.yaml")
    assert info.value.key == key and str(info.value).startswith(f"s.yaml: {key}: expected ")
    assert words in str(info.value)


def test_defaults_filled():
    spec = SweepSpec.from_dict(MINIMAL)
    assert spec.config == SamplerConfig() and spec.resources.workers["replay_buffer"].cpus == 1
    assert spec.mlflow.experiment == "t" and spec.storage_path is None and spec.tune.max_failures == 0
    assert "source" not in spec.to_dict()


def test_several_errors_counted():
    with pytest.raises(SpecError, match=r"\(and 1 more error\)"):
        SweepSpec.from_dict({**MINIMAL, "seed": "x", "storage_path": 3})


BENCHMARK = ROOT / "sweeps" / "samplers_benchmark.yaml"
METHODS = {"method": {"PIS": {"loss": "pis", "exploration_factor": 0.0}, "TB": {"loss": "tb"}}}


def test_benchmark_sweep_crosses_methods_targets_and_seeds():
    spec = load_sweep(BENCHMARK)
    assert list(spec.variants) == ["method", "target"]
    assert list(spec.variants["method"]) == [
        "PIS",
        "TB",
        "TB + Expl.",
        "FL-SubTB + LP",
        "TB + Expl. + LS",
        "VarGrad + Expl. + LP + LS",
    ]
    # each axis is sampled as a grid over its names, and every grid point is repeated once per seed
    assert spec.search_space["variants.method"] == Domain(kind="grid", values=list(spec.variants["method"]))
    assert spec.trial_count_hint() == 6 * 4 * 3
    config = spec.resolved_config({"variants.method": "VarGrad + Expl. + LP + LS", "variants.target": "Manywell"})
    method = (config.loss, config.langevin, config.exploration, config.exploration_decay, config.replay.enabled)
    assert method == ("vargrad", True, 0.1, 0.2, True)  # Manywell's own exploration
    gmm = spec.resolved_config({"variants.method": "TB + Expl.", "variants.target": "25GMM"})
    assert (gmm.exploration, gmm.exploration_decay) == (0.2, 0.5)
    assert (config.target, config.sigma2, config.num_steps, config.batch_size) == ("manywell", 1.0, 100, 300)
    assert (config.lr_policy, config.lr_log_z) == (1e-3, 0.1)
    for target, sigma2 in (("25GMM", 5.0), ("Funnel", 1.0), ("40GMM", 5.0)):
        assert spec.resolved_config({"variants.method": "PIS", "variants.target": target}).sigma2 == sigma2
    pis = spec.resolved_config({"variants.method": "PIS", "variants.target": "Funnel"})
    assert (pis.loss, pis.exploration_factor, pis.replay.enabled) == ("pis", 0.0, False)


def test_variants_reach_a_trial_through_tune_by_name():
    """Tune samples variant names by dotted key (`{'variants.method': grid}`); the trial turns its point into
    settings, keys unchanged."""
    from ray import tune

    from orchestrator.tuner import param_space

    spec = load_sweep(BENCHMARK)
    space = param_space(spec)
    assert space["variants.method"] == tune.grid_search(list(spec.variants["method"]))
    assert space["variants.target"] == tune.grid_search(["25GMM", "Funnel", "Manywell", "40GMM"])
    point = {"variants.method": "FL-SubTB + LP", "variants.target": "Funnel"}
    config = spec.resolved_config(point)
    assert (config.loss, config.langevin, config.target, config.sigma2) == ("fl_subtb", True, "funnel", 1.0)


def test_smoke_draws_variants_at_random():
    smoke = load_sweep(BENCHMARK).smoke()
    assert smoke.trial_count_hint() == 2 and smoke.tune.stop.training_iteration == 2
    assert {d.kind for d in smoke.search_space.values()} == {"choice"}
    assert smoke.config.total_iters <= 40 and smoke.config.batch_size < 300
    # a variant changes the method and target, not the smoke budget
    config = smoke.resolved_config({"variants.method": "TB + Expl. + LS", "variants.target": "Manywell"})
    assert (config.total_iters, config.num_steps, config.replay.enabled) == (smoke.config.total_iters, 20, True)


def test_variants_sampled_by_choice_and_with_other_domains():
    spec = SweepSpec.from_dict(
        {
            **MINIMAL,
            "variants": METHODS,
            "search_space": {"variants.method": {"choice": ["TB"]}, "lr_policy": {"grid": [1e-3, 2e-3]}},
        }
    )
    assert spec.search_space["variants.method"] == Domain(kind="choice", values=["TB"])
    assert spec.trial_count_hint() == 2
    config = spec.resolved_config({"variants.method": "PIS", "lr_policy": 2e-3})
    assert (config.loss, config.exploration_factor, config.lr_policy) == ("pis", 0.0, 2e-3)
    assert SweepSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    with pytest.raises(SpecError, match=r"variants\.method: expected the name of one of its variants, found 'SAC'"):
        spec.resolved_config({"variants.method": "SAC"})


@pytest.mark.parametrize(
    "patch,key,words",
    [
        ({"variants": {"method": {"PIS": {"los": "pis"}}}}, "variants.method.PIS.los", "Did you mean 'loss'?"),
        (
            {"variants": {"method": {"X": {"replay.capacity": -1}}}},
            "variants.method.X.replay.capacity",
            "greater than 0, found -1",
        ),
        (
            {"variants": {"method": {"PIS": {"loss": "pis", "exploration_factor": 0.1}}}},
            "variants.method.PIS",
            "settings valid (loss='pis' is on-policy",
        ),
        ({"variants": {"method": []}}, "variants.method", "expected a mapping"),
        ({"variants": {"method": {}}}, "variants.method", "at least one named variant"),
        ({"variants": {"a b": {"x": {}}}}, "variants.a b", "axis name of letters"),
        (
            {"variants": {**METHODS, "explore": {"on": {"exploration_factor": 0.3}}}},
            "variants.explore.on.exploration_factor",
            "no other variants axis sets, found variants.method sets it too",
        ),
        (
            {"variants": {**METHODS, "replay": {"on": {"replay.enabled": True}}}},
            "variants.replay.on",
            "settings valid together with variants.method.PIS (loss='pis' is on-policy",
        ),
        (
            {"variants": METHODS, "search_space": {"loss": {"grid": ["tb"]}}},
            "variants.method.PIS.loss",
            "search_space does not also sample",
        ),
        (
            {"variants": METHODS, "search_space": {"variants.methods": {"grid": ["TB"]}}},
            "search_space.variants.methods",
            "Did you mean 'method'?",
        ),
        (
            {"variants": METHODS, "search_space": {"variants.method": {"choice": ["TB", "SAC"]}}},
            "search_space.variants.method",
            "names in variants.method (PIS, TB), found 'SAC'",
        ),
        (
            {"variants": METHODS, "search_space": {"variants.method": {"uniform": [0, 1]}}},
            "search_space.variants.method",
            "found uniform",
        ),
        (
            {
                "variants": METHODS,
                "tune": {"metric": "eval/x", "mode": "min", "scheduler": {"type": "pbt"}},
                "search_space": {"lr_policy": {"choice": [1e-3]}},
            },
            "variants",
            "no variants with tune.scheduler pbt",
        ),
    ],
)
def test_variant_mistakes(patch, key, words):
    with pytest.raises(SpecError) as info:
        SweepSpec.from_dict({**MINIMAL, **patch}, source="s.yaml")
    assert info.value.key == key and str(info.value).startswith(f"s.yaml: {key}: expected ")
    assert words in str(info.value)


@pytest.mark.parametrize(
    "override, key, words",
    [
        ("config.total_iters=true", "config.total_iters", "expected an integer, found true"),
        ("config.total_iters='2000'", "config.total_iters", "expected an integer, found '2000'"),
        ("config.lr_policy=true", "config.lr_policy", "expected a number, found true"),
        ("config.lr_policy='1e-3'", "config.lr_policy", "expected a number, found '1e-3'"),
        ("config.replay.enabled=1", "config.replay.enabled", "expected true or false, found 1"),
        ("config.replay.enabled=on", "config.replay.enabled", None),  # YAML 1.1's `on` is true: a flag
        ("config.target=3", "config.target", "expected one of: gmm25, gmm40, funnel, manywell, found 3"),
        ("config.sigma2=null", "config.sigma2", None),
        ("tune.num_samples=true", "tune.num_samples", "expected an integer, found true"),
        ("seed=false", "seed", "expected an integer, found false"),
        ("resources.learner.cpus='1'", "resources.learner.cpus", "expected a number, found '1'"),
        ("search_space.num_steps={choice: [true, 10]}", "search_space.num_steps", "found true"),
    ],
)
def test_values_are_taken_strictly(override, key, words):
    """A flag is no number, a number no flag, text neither (pydantic's lax mode read `true` as 1 and "3" as 3)."""
    if words is None:
        load_sweep(SAMPLERS, [override])
        return
    error = spec_error(SAMPLERS, [override])
    assert error.key == key and words in str(error), str(error)


def test_an_integer_is_still_a_number_and_a_list_still_a_tuple():
    spec = load_sweep(SAMPLERS, ["config.lr_policy=1", "search_space.lr_log_z={choice: [1, 0.1]}"])
    assert spec.config.lr_policy == 1.0 and isinstance(spec.config.lr_policy, float)
    assert spec.resolved_config({"lr_log_z": 1}).lr_log_z == 1.0
    wcst = load_sweep(ROOT / "sweeps" / "wcst.yaml", ["config.flatness_radii=[0, 2, 4.5]"])
    assert wcst.config.flatness_radii == (0.0, 2.0, 4.5)
    with pytest.raises(SpecError, match="config.flatness_radii: expected a number, found"):
        load_sweep(ROOT / "sweeps" / "wcst.yaml", ["config.flatness_radii=[0, true]"])
    config = spec.config.model_copy()
    with pytest.raises(ValueError, match="valid integer"):
        config.total_iters = True  # assignment is validated as strictly
