"""Outsourced diffusion sampling (arXiv:2502.06999): a diffusion sampler in the noise space of a generator
(workloads/outsourced/)."""

from orchestrator.registry import Family
from workloads.outsourced.config import OutsourcedConfig

FAMILY = Family(
    name="outsourced",
    config_model=OutsourcedConfig,
    driver="orchestrator.families.outsourced.driver:OutsourcedDriver",
    worker_roles={},
)
