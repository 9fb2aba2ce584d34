"""Scalable ensemble diversification, SED (arXiv:2409.16797): ensemble members on their own actors
(workloads/ensembles/)."""

from orchestrator.registry import Family
from workloads.ensembles.config import SEDConfig

FAMILY = Family(
    name="sed",
    config_model=SEDConfig,
    driver="orchestrator.families.sed.driver:SEDDriver",
    worker_roles={"ensemble_member": None},
    summary="orchestrator.families.sed.summary:sed_summary",
    datasets="orchestrator.families.sed.datasets:image_sets",
)
