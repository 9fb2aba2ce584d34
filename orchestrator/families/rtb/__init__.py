"""Relative Trajectory Balance (arXiv:2405.20971): fine-tuning a diffusion prior into the posterior p(x) r(x)^beta,
with classifier guidance and RL baselines (workloads/rtb/). Priors are fitted once per prior key and cached in
the sweep's MLflow store (priors.py)."""

from orchestrator.registry import Family
from workloads.rtb.trial_config import RTBTrialConfig

REWARD_ROLE = "reward"
"""The optional worker role that evaluates log r on actors when a sweep's resources name it (actors/reward.py)."""

FAMILY = Family(
    name="rtb",
    config_model=RTBTrialConfig,
    driver="orchestrator.families.rtb.driver:RTBDriver",
    worker_roles={"replay_buffer": 1, REWARD_ROLE: None},
    optional_roles=(REWARD_ROLE,),
    prepare="orchestrator.families.rtb.priors:prepare",
    report_table="orchestrator.families.rtb.report:results_table",
)
