"""Sweep files: YAML parsed into typed models and fully validated before anything starts.

`load_sweep(path, overrides)` is the entry point; every problem becomes one `SpecError` that names
the file, the key path from the top of the file, what was expected and what was found.
The format is documented in docs/sweeps.md. No ray / torch imports here.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.errors import SpecError
from orchestrator.registry import family_names, get_family

# ---------------------------------------------------------------- helpers


def _show(value: Any) -> str:
    """A short, one-line rendering of a value found in the file."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _invalid(expected: str, found: str, hint: str = "") -> PydanticCustomError:
    """A validation error carrying readable `expected` / `found` words (raise it in a validator)."""
    return PydanticCustomError(
        "spec", "expected {expected}, found {found}", {"expected": expected, "found": found, "hint": hint}
    )


def _fail_at(loc: tuple, expected: str, found: str, hint: str = "") -> ValidationError:
    """Like `_invalid`, at `loc` below the field or model being validated (pydantic prefixes it)."""
    return ValidationError.from_exception_data(
        "spec", [{"type": _invalid(expected, found, hint), "loc": loc, "input": None}]
    )


def _set_path(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        data = data[part]
    data[leaf] = value


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted path into `model`, nested models included (`optim`, `optim.lr`, ...)."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += _field_paths(field.annotation, f"{prefix}{name}.")
    return paths


def _with_overrides(config: BaseModel, overrides: dict[str, Any]) -> BaseModel:
    """`config` with dotted-path values set, validated again (raises pydantic's ValidationError)."""
    data = config.model_dump()
    for path, value in overrides.items():
        _set_path(data, path, value)
    return type(config).model_validate(data)


def _first_error(config: BaseModel, overrides: dict[str, Any]) -> dict | None:
    """The first validation error of `config` with `overrides` set, or None when that config is valid."""
    try:
        _with_overrides(config, overrides)
    except ValidationError as error:
        return error.errors()[0]
    return None


def _field_annotation(model: Any, path: str) -> Any:
    for part in path.split("."):
        model = model.model_fields[part].annotation
    return model


# ---------------------------------------------------------------- models


class _Spec(BaseModel):
    """Strict: `true` is no number, `1` no flag, `"3"` no integer (an integer is still a number). The family's
    config takes its values as strictly (workloads/typed_config.py)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Unchecked(BaseModel):
    """Stands in for `config` when the workload is unknown (that error is the one reported)."""


_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")

VARIANTS = "variants"
"""Search-space key prefix of a variants axis: `variants.<axis>` samples that axis's variant names."""


class Domain(_Spec):
    """A search-space domain; in YAML a one-key mapping such as `{loguniform: [3e-4, 3e-3]}`."""

    kind: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    values: list = []
    """Candidates of choice / grid."""
    low: int | float | None = None
    high: int | float | None = None
    """Bounds of uniform / loguniform / randint (randint: ints, high exclusive)."""

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" in data:  # already in field form (Python callers)
            return data
        expected = f"a mapping with exactly one key among {', '.join(_KINDS)}"
        if not (isinstance(data, dict) and len(data) == 1 and next(iter(data)) in _KINDS):
            raise _invalid(expected, _show(data))
        ((kind, arg),) = data.items()
        if kind in ("choice", "grid"):
            if not isinstance(arg, list) or not arg:
                raise _invalid(f"a non-empty list of values for {kind}", _show(arg))
            return {"kind": kind, "values": arg}
        if not isinstance(arg, list) or len(arg) != 2 or not all(_is_number(x) for x in arg):
            raise _invalid(f"a list [low, high] of two numbers for {kind}", _show(arg))
        return {"kind": kind, "low": arg[0], "high": arg[1]}

    @model_validator(mode="after")
    def _check_bounds(self) -> Domain:
        if self.kind in ("choice", "grid"):
            if not self.values:
                raise _invalid(f"a non-empty list of values for {self.kind}", "[]")
            return self
        found = _show([self.low, self.high])
        if self.low is None or self.high is None or not self.low < self.high:
            raise _invalid(f"[low, high] with low < high for {self.kind}", found)
        if self.kind == "loguniform" and self.low <= 0:
            raise _invalid("[low, high] with 0 < low < high for loguniform", found)
        if self.kind == "randint" and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise _invalid("integer bounds [low, high] for randint", found)
        return self

    @model_serializer
    def _to_mapping(self) -> dict[str, list]:
        return {self.kind: self.values if self.kind in ("choice", "grid") else [self.low, self.high]}

    def sample_points(self) -> list:
        """Values that must all be valid for the target field (randint's high is exclusive)."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        if self.kind == "randint":
            return [self.low, self.high - 1]
        return [self.low, self.high, self.low + (self.high - self.low) / math.pi]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class AshaScheduler(_Spec):
    type: Literal["asha"] = "asha"
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(2, gt=1)
    max_t: int | None = Field(None, gt=0)


class PbtScheduler(_Spec):
    type: Literal["pbt"] = "pbt"
    perturbation_interval: int = Field(2, gt=0)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)


class StopSpec(_Spec):
    """Per-trial stopping criteria (Tune's `stop=`); None means no limit of that kind."""

    training_iteration: int | None = Field(None, gt=0)
    time_total_s: float | None = Field(None, gt=0)


_SCHEDULERS = {"asha": AshaScheduler, "pbt": PbtScheduler}


class TuneSpec(_Spec):
    num_samples: int = Field(1, gt=0)
    metric: str
    mode: Literal["min", "max"]
    scheduler: AshaScheduler | PbtScheduler | None = None
    search: Literal["random", "optuna"] = "random"
    max_concurrent_trials: int | None = Field(None, gt=0)
    stop: StopSpec = Field(default_factory=StopSpec)
    max_failures: int = Field(0, ge=0)
    """Tune's per-trial retries."""

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, metric: str) -> str:
        if not re.fullmatch(r"(eval|train)/[\w./-]+", metric):
            raise _invalid("a metric name such as 'eval/...' or 'train/...'", _show(metric))
        return metric

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_by_type(cls, value: Any) -> Any:
        if value is None or value == "none" or value == {"type": "none"}:
            return None
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise _invalid("none or a mapping with type: asha or pbt", _show(value))
        model = _SCHEDULERS.get(value.get("type"))
        if model is None:
            raise _fail_at(("type",), "one of: asha, pbt, none", _show(value.get("type")))
        return model.model_validate(value)


class RoleResources(_Spec):
    """Resources of one actor of a role: one placement-group bundle each."""

    cpus: float = Field(1, ge=0)
    gpus: float = Field(0, ge=0)
    """Fractions below 1 share a GPU; above 1 must be whole GPUs."""
    count: int = Field(1, ge=1)
    """Actors of this role per trial (workers only)."""
    custom: dict[str, float] = {}
    """Ray custom resources of each actor, e.g. {A10G: 1}: the accelerator a cluster's node type names
    (cluster/*.yaml), so that the actor lands on (and an autoscaler starts) a node of that type."""

    @field_validator("gpus")
    @classmethod
    def _whole_above_one(cls, gpus: float) -> float:
        if gpus > 1 and gpus != int(gpus):
            raise _invalid("a fraction below 1 or a whole number of GPUs", _show(gpus))
        return gpus

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, custom: dict[str, float]) -> dict[str, float]:
        for name, amount in custom.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory") or name.startswith("node:"):
                raise _fail_at(
                    (name,),
                    "a custom resource name (cpus and gpus have their own keys; node:... is Ray's)",
                    _show(name),
                )
            if not amount > 0:
                raise _fail_at((name,), "an amount greater than 0", _show(amount))
        return custom

    @model_validator(mode="after")
    def _not_empty(self) -> RoleResources:
        if self.cpus == 0 and self.gpus == 0 and not self.custom:
            raise _invalid("cpus > 0 or gpus > 0 (a Ray placement-group bundle cannot be empty)", "cpus: 0, gpus: 0")
        return self


class ResourcesSpec(_Spec):
    learner: RoleResources = Field(default_factory=RoleResources)
    workers: dict[str, RoleResources] = {}
    """Role name (one of the workload's worker_roles) -> resources; missing roles get the defaults (optional
    roles: none)."""

    @field_validator("learner")
    @classmethod
    def _one_learner(cls, learner: RoleResources) -> RoleResources:
        if learner.count != 1:
            raise _fail_at(("count",), "1 (one learner per trial)", _show(learner.count))
        return learner


class MlflowSpec(_Spec):
    experiment: str | None = None
    """Defaults to the sweep name (filled in at validation)."""
    tracking_uri: str | None = None
    """None: the CLI's default."""
    train_points: int = Field(100, gt=0)
    """About how many points each trial's training metrics (train/*) get: they are logged every
    total_iters / train_points iterations, at the granularity of the driver's training calls."""


class SweepSpec(_Spec):
    """One sweep: a workload, its base config, a search space, and how Tune runs the trials."""

    name: str
    workload: str
    seed: int = 0
    config: SerializeAsAny[BaseModel] = Field(None, validate_default=True)
    """An instance of the family's `config_model` (orchestrator/registry.py)."""
    search_space: dict[str, Domain] = {}
    """Dotted path into `config` -> domain; `variants.<axis>` -> choice or grid of that axis's variant names
    (filled in at validation as a grid over all of them when absent)."""
    variants: dict[str, dict[str, dict[str, Any]]] = {}
    """Named bundles of settings: axis -> variant name -> {dotted path into `config`: value}. A trial takes
    one variant of every axis, so axes cross like grids (e.g. methods x targets)."""
    tune: TuneSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)
    storage_path: str | None = None
    """Tune storage (results, checkpoints): a local folder or a URI that pyarrow opens (s3://bucket/prefix,
    gs://..., file://...); None: $ORCHESTRATOR_STORAGE_PATH, else `./ray_results` (`~/ray_results` under
    `ray job submit`)."""
    source: Path | None = Field(None, exclude=True)
    """The file this spec was loaded from."""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise _invalid("a non-empty name of letters, digits, '_', '-' and '.'", _show(name))
        return name

    @field_validator("workload")
    @classmethod
    def _known_workload(cls, workload: str) -> str:
        if workload not in family_names():
            raise _invalid(f"one of: {', '.join(family_names())}", _show(workload))
        return workload

    @field_validator("config", mode="before")
    @classmethod
    def _workload_config(cls, config: Any, info: ValidationInfo) -> Any:
        if "workload" not in info.data:  # the workload's own error is reported instead
            return _Unchecked()
        return get_family(info.data["workload"]).config_model.model_validate({} if config is None else config)

    @model_validator(mode="after")
    def _check_against_workload(self) -> SweepSpec:
        entry = get_family(self.workload)
        self._check_variants()
        self._sample_variants()
        for key, domain in self.search_space.items():
            if not key.startswith(f"{VARIANTS}."):
                _check_domain(type(self.config), self.config, key, domain)
        for role in self.resources.workers:
            if role not in entry.worker_roles:
                expected = f"a worker role of workload {self.workload}: {', '.join(entry.worker_roles)}"
                raise _fail_at(("resources", "workers", role), expected, f"unknown role {role!r}")
            most = entry.worker_roles[role]
            if most is not None and self.resources.workers[role].count > most:
                raise _fail_at(
                    ("resources", "workers", role, "count"),
                    f"at most {most} (the workload makes no more)",
                    str(self.resources.workers[role].count),
                )
        named = self.resources.workers
        self.resources.workers = {
            r: named.get(r, RoleResources()) for r in entry.worker_roles if r in named or r not in entry.optional_roles
        }
        grids = [key for key, domain in self.search_space.items() if domain.kind == "grid"]
        if self.tune.search == "optuna" and grids:
            raise _fail_at(
                ("tune", "search"),
                "random when the search space has a grid (Optuna cannot enumerate one)",
                f"'optuna' with grid search_space.{grids[0]}",
            )
        if isinstance(self.tune.scheduler, PbtScheduler):
            if self.variants:
                raise _fail_at(
                    (VARIANTS,),
                    "no variants with tune.scheduler pbt (it mutates values, not named bundles)",
                    f"axes {', '.join(self.variants)}",
                )
            if self.tune.search != "random":
                raise _fail_at(("tune", "search"), "random when tune.scheduler is pbt", _show(self.tune.search))
            if not self.search_space:
                raise _fail_at(("search_space",), "at least one domain for pbt to perturb", "an empty search space")
            if grids:
                raise _fail_at(("search_space", grids[0]), "choice, uniform, loguniform or randint with pbt", "grid")
        if self.mlflow.experiment is None:
            self.mlflow.experiment = self.name
        return self

    def _check_variants(self) -> None:
        """Every variant sets existing fields to valid values, no setting has two sources, and every
        combination of one variant per axis is a valid config."""
        model = type(self.config)
        paths = _field_paths(model)
        setter: dict[str, str] = {}  # config path -> the axis whose variants set it
        for axis, variants in self.variants.items():
            if not re.fullmatch(r"[\w-]+", axis):
                raise _fail_at((VARIANTS, axis), "an axis name of letters, digits, '_' and '-'", _show(axis))
            if not variants:
                raise _fail_at((VARIANTS, axis), "at least one named variant", "{}")
            for name, overrides in variants.items():
                for path in overrides:
                    where = (VARIANTS, axis, name, path)
                    if path not in paths:
                        raise _fail_at(
                            where,
                            f"a dotted path to a field of {model.__name__}",
                            f"{path!r} (no such field)",
                            _suggest(path, paths),
                        )
                    if path in self.search_space:
                        raise _fail_at(
                            where, "a setting that search_space does not also sample", f"search_space.{path}"
                        )
                    if setter.setdefault(path, axis) != axis:
                        raise _fail_at(
                            where, "a setting that no other variants axis sets", f"variants.{setter[path]} sets it too"
                        )
                if error := _first_error(self.config, overrides):
                    raise _variant_error((VARIANTS, axis, name), overrides, error)
        # A combination can fail where each variant alone is valid (e.g. an on-policy loss with exploration).
        for combination in itertools.product(*[[(a, n) for n in variants] for a, variants in self.variants.items()]):
            settings = {path: value for a, n in combination for path, value in self.variants[a][n].items()}
            if error := _first_error(self.config, settings):
                (axis, name), others = combination[-1], combination[:-1]
                raise _variant_error(
                    (VARIANTS, axis, name),
                    self.variants[axis][name],
                    error,
                    ", ".join(f"variants.{a}.{n}" for a, n in others),
                )

    def _sample_variants(self) -> None:
        """Each axis is sampled by the domain `variants.<axis>`: a choice or grid of its names, by default
        a grid over all of them (filled in here, so the saved spec says how it was sampled)."""
        for key, domain in self.search_space.items():
            axis = key.removeprefix(f"{VARIANTS}.")
            if axis == key:
                continue
            if axis not in self.variants:
                axes = list(self.variants)
                expected = f"variants.<axis> for an axis of variants ({', '.join(axes) or 'none'})"
                raise _fail_at(("search_space", key), expected, _show(key), _suggest(axis, axes))
            unknown = [v for v in domain.sample_points() if v not in self.variants[axis]]
            if domain.kind not in ("choice", "grid") or unknown:
                found = domain.kind if domain.kind not in ("choice", "grid") else _show(unknown[0])
                raise _fail_at(
                    ("search_space", key),
                    f"choice or grid of names in variants.{axis} ({', '.join(self.variants[axis])})",
                    found,
                )
        for axis, variants in self.variants.items():
            self.search_space.setdefault(f"{VARIANTS}.{axis}", Domain(kind="grid", values=list(variants)))

    # ------------------------------------------------------------ methods

    def trial_count_hint(self) -> int:
        """num_samples x the product of grid sizes (Tune repeats the whole grid num_samples times)."""
        grids = [len(d.values) for d in self.search_space.values() if d.kind == "grid"]
        return self.tune.num_samples * math.prod(grids)

    def smoke(self) -> SweepSpec:
        """At most 2 trials of at most 2 iterations each, on the workload's smoke config."""
        space = {
            k: Domain(kind="choice", values=d.values) if d.kind == "grid" else d for k, d in self.search_space.items()
        }
        tune = self.tune
        stop = tune.stop.model_copy(update={"training_iteration": min(tune.stop.training_iteration or 2, 2)})
        tune = tune.model_copy(
            update={
                "num_samples": min(tune.num_samples, 2),
                "max_concurrent_trials": min(tune.max_concurrent_trials or 2, 2),
                "stop": stop,
            }
        )
        return self.model_copy(update={"search_space": space, "tune": tune, "config": self.config.smoke()})

    def resolved_config(self, overrides: dict[str, Any]) -> BaseModel:
        """The typed config with a sampled search-space point applied: each `variants.<axis>: name` sets
        that variant's settings, every other key is a dotted path into the config."""
        model = type(self.config)
        settings: dict[str, Any] = {}
        for path, value in overrides.items():
            axis = path.removeprefix(f"{VARIANTS}.")
            if axis != path:
                if value not in self.variants.get(axis, {}):
                    raise SpecError(self.source, f"{VARIANTS}.{axis}", "the name of one of its variants", _show(value))
                settings.update(self.variants[axis][value])
            elif path not in _field_paths(model):
                raise SpecError(self.source, f"config.{path}", f"a field of {model.__name__}", "no such field")
            else:
                settings[path] = value
        try:
            return _with_overrides(self.config, settings)
        except ValidationError as error:
            raise _spec_error(error, {"workload": self.workload}, self.source, prefix=("config",)) from None

    def discrete_configs(self) -> list[BaseModel]:
        """The config of every combination of the search space's choice and grid values (variants included),
        continuous domains left at the base config's values: e.g. what models a sweep's trials may share."""
        keys = [key for key, domain in self.search_space.items() if domain.kind in ("choice", "grid")]
        combinations = itertools.product(*[self.search_space[key].values for key in keys])
        return [self.resolved_config(dict(zip(keys, values))) for values in combinations]

    def searched_paths(self) -> set[str]:
        """Config paths that differ between trials: sampled by `search_space` or set by a variant."""
        paths = {key for key in self.search_space if not key.startswith(f"{VARIANTS}.")}
        return paths | {path for variants in self.variants.values() for v in variants.values() for path in v}

    def train_every(self, config: BaseModel) -> int:
        """Iterations between two logged points of a trial's training metrics (`mlflow.train_points` per run)."""
        return max(1, config.total_iters // self.mlflow.train_points)

    def description(self) -> dict[str, Any]:
        """What the sweep's parent run shows as params (nested like the sweep file): the sweep's own keys, the
        search space (each domain as JSON, each variants axis as its names), and of the config only the fixed
        paths, the values every trial runs with (not the base values that a search or a variant replaces)."""
        data = self.to_dict()
        data["config"] = _without(data["config"] or {}, self.searched_paths())
        data["search_space"] = {key: json.dumps(domain) for key, domain in data["search_space"].items()}
        data["variants"] = {axis: json.dumps(list(names)) for axis, names in data["variants"].items()}
        return data

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, the same shape as the YAML file (`from_dict` reads it back)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> SweepSpec:
        """Validate a parsed sweep; any problem raises `SpecError` naming `source` and the key path."""
        if "source" in data:
            raise SpecError(source, "source", "no 'source' key (it is set from the file path)", "a 'source' key")
        try:
            return cls.model_validate({**data, "source": None if source is None else Path(source)})
        except ValidationError as error:
            raise _spec_error(error, data, source) from None


def _without(config: dict[str, Any], paths: set[str], prefix: str = "") -> dict[str, Any]:
    """`config` (nested) less the dotted `paths` and everything below them."""
    return {key: _without(value, paths, f"{prefix}{key}.") if isinstance(value, dict) else value
            for key, value in config.items() if f"{prefix}{key}" not in paths}  # fmt: skip


def _variant_error(where: tuple, overrides: dict[str, Any], error: dict, together_with: str = "") -> ValidationError:
    """A variant whose settings make an invalid config: reported at the field at fault when there is one,
    else at the variant (a rule across fields, or a clash with the variants it is combined with)."""
    expected, found, _ = _describe(error)
    if error["loc"] and not together_with:
        return _fail_at(where + tuple(error["loc"]), expected, found)
    context = f" together with {together_with}" if together_with else ""
    return _fail_at(where, f"settings valid{context} ({expected})", _show(overrides))


def _check_domain(model: type[BaseModel], config: BaseModel, key: str, domain: Domain) -> None:
    """Every value the domain can produce must be valid for the config field at `key`."""
    paths = _field_paths(model)
    if key not in paths:
        expected = f"a dotted path to a field of {model.__name__}"
        raise _fail_at(("search_space", key), expected, f"{key!r} (no such field)", _suggest(key, paths))
    if domain.kind in ("uniform", "loguniform") and _field_annotation(model, key) is int:
        raise _fail_at(("search_space", key), "randint or choice for an integer field", domain.kind)
    for value in domain.sample_points():
        if first := _first_error(config, {key: value}):
            expected = f"{domain.kind} values valid for config.{_dotted(first['loc'])} ({_describe(first)[0]})"
            raise _fail_at(("search_space", key), expected, _show(value))


# ---------------------------------------------------------------- ValidationError -> SpecError

_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "missing": "a value (this key is required)",
    "extra_forbidden": "known keys only",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _describe(error: dict) -> tuple[str, str, str]:
    """(expected, found, hint) in readable words for one pydantic error."""
    kind, ctx, found = error["type"], error.get("ctx", {}), _show(error.get("input"))
    if kind == "spec":
        return ctx["expected"], ctx["found"], ctx.get("hint", "")
    if kind == "missing":
        return _WORDS[kind], "nothing", ""
    if kind in _WORDS:
        return _WORDS[kind], found, ""
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"a number {words} {ctx[key]}", found, ""
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", ctx["expected"]) or [ctx["expected"]]
        return f"one of: {', '.join(options)}", found, ""
    return re.sub(r"^(Input should be |Value error, )", "", error["msg"]), found, ""


def _model_at(data: dict, loc: Sequence) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` (used to list the known keys)."""
    model, raw, parts = SweepSpec, data, list(loc)
    while parts and model is not None:
        part = parts.pop(0)
        raw = raw.get(part) if isinstance(raw, dict) else None
        if model is SweepSpec and part == "config":
            entry = get_family(data["workload"]) if data.get("workload") in family_names() else None
            model = entry.config_model if entry else None
            continue
        if part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        if get_origin(annotation) is dict:  # the next part is a key of the dict
            annotation = get_args(annotation)[1]
            key = parts.pop(0) if parts else None
            raw = raw.get(key) if isinstance(raw, dict) else None
        models = [
            a for a in (get_args(annotation) or (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if len(models) > 1:  # a union told apart by `type` (the scheduler)
            models = [
                m
                for m in models
                if isinstance(raw, dict) and raw.get("type") in get_args(m.model_fields["type"].annotation)
            ]
        model = models[0] if len(models) == 1 else None
    return model


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1) or [o for o in options if o.startswith(word)]
    return f"Did you mean '{close[0]}'?" if close else ""


def _dotted(loc: Sequence) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _spec_error(error: ValidationError, data: dict, source: str | Path | None, prefix: tuple = ()) -> SpecError:
    errors = error.errors()
    first, more = errors[0], len(errors) - 1
    loc = prefix + tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        model = _model_at(data, loc[:-1])
        known = [k for k in model.model_fields if k != "source"] if model else []
        expected = f"a known key ({', '.join(known)})" if known else "no such key"
        found, hint = f"unknown key {str(loc[-1])!r}", _suggest(str(loc[-1]), known)
    else:
        expected, found, hint = _describe(first)
    if more:
        hint = f"{hint} (and {more} more {'error' if more == 1 else 'errors'})".strip()
    return SpecError(source, _dotted(loc), expected, found, hint)


# ---------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), f"the value {_show(value)}")


def _apply_override(data: dict, override: str, file: str) -> None:
    """Apply one `--set dotted.key=value` (value read as YAML) to the parsed file."""
    path, sep, text = override.partition("=")
    parts = path.strip().split(".")
    if not sep or not all(re.fullmatch(r"[\w-]+", p) for p in parts):
        raise SpecError(file, "--set", "dotted.key=value", _show(override))
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        raise SpecError(file, f"--set {path}", "a YAML value after '='", _show(text)) from None
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parts[: i + 1])
            raise SpecError(file, f"--set {path}", f"a path through mappings ({where} is not one)", _show(node))
    node[parts[-1]] = value


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override (`--set dotted.key=value`) and validate a sweep file; raises `SpecError`."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise SpecError(file, "", "a readable sweep file", error.strerror or type(error).__name__) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(file, "", "valid YAML", f"{error.problem or error.context}{where}") from None
    except yaml.YAMLError as error:
        raise SpecError(file, "", "valid YAML", type(error).__name__) from None
    if not isinstance(data, dict):
        raise SpecError(file, "", "a mapping of top-level keys (name, workload, config, tune, ...)", _kind(data))
    for override in overrides:
        _apply_override(data, override, file)
    return SweepSpec.from_dict(data, source=Path(path))
