"""Outsourced diffusion sampling (arXiv:2502.06999): a diffusion sampler in the noise space of a generator
(workloads/outsourced/). Generators are fitted once per generator key and cached in the sweep's MLflow store
(generators.py)."""

from orchestrator.registry import Family
from workloads.outsourced.config import OutsourcedConfig

FAMILY = Family(
    name="outsourced",
    config_model=OutsourcedConfig,
    driver="orchestrator.families.outsourced.driver:OutsourcedDriver",
    worker_roles={"replay_buffer": 1},
    prepare="orchestrator.families.outsourced.generators:prepare",
)
