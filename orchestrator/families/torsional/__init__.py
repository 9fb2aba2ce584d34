"""Torsional-GFN (arXiv:2507.11759): a conditional GFlowNet over torsion angles with RDKit / OpenMM energies
(workloads/torsional/)."""

from orchestrator.registry import Family
from workloads.torsional.config import TorsionalConfig

FAMILY = Family(
    name="torsional",
    config_model=TorsionalConfig,
    driver="orchestrator.families.torsional.driver:TorsionalDriver",
    worker_roles={"energy": None, "replay_buffer": 1},
    datasets="orchestrator.families.torsional.datasets:molecule_sets",
    commands=("orchestrator.families.torsional.sample_command",),
)
