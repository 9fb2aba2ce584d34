"""WCST-ML (arXiv:2110.03095): which shortcut cue a network adopts on ColorDSprites (workloads/wcst/)."""

from orchestrator.registry import Family
from workloads.wcst.config import WcstConfig

FAMILY = Family(
    name="wcst",
    config_model=WcstConfig,
    driver="orchestrator.families.wcst.driver:WcstDriver",
    summary="orchestrator.families.wcst.summary:wcst_summary",
    datasets="orchestrator.families.wcst.datasets:cue_conflict_sets",
)
