"""Diffusion samplers for unnormalized densities (arXiv:2402.05098): TB / VarGrad / SubTB with exploration,
local search and replay (workloads/samplers/)."""

from orchestrator.registry import Family
from workloads.samplers.config import SamplerConfig

FAMILY = Family(
    name="samplers",
    config_model=SamplerConfig,
    driver="orchestrator.families.samplers.driver:SamplerDriver",
    worker_roles={"replay_buffer": 1},
    report_table="orchestrator.families.samplers.report:results_table",
)
