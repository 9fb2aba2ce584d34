"""Outsourced diffusion sampling (arXiv:2502.06999): a diffusion sampler in the noise space of a generator
(workloads/outsourced/). Generators are fitted once per generator key and cached in the sweep's MLflow store
(generators.py)."""

from orchestrator.registry import Family
from workloads.outsourced.config import OutsourcedConfig

REWARD_ROLE = "reward"
"""Optional worker role: r(f(z)) evaluated on a pool of actors where no gradient is needed (actors/reward.py)."""
CHAINS_ROLE = "chains"
"""Optional worker role: method mcmc's chains, split over these actors (actors/mcmc_chains.py)."""


def trial_roles(config: OutsourcedConfig) -> tuple[str, ...]:
    """The sampler's trial: a replay buffer (and reward actors); MCMC's: chain actors only."""
    return (CHAINS_ROLE,) if config.method == "mcmc" else ("replay_buffer", REWARD_ROLE)


FAMILY = Family(
    name="outsourced",
    config_model=OutsourcedConfig,
    driver="orchestrator.families.outsourced.driver:trial_driver",
    worker_roles={"replay_buffer": 1, REWARD_ROLE: None, CHAINS_ROLE: None},
    optional_roles=(REWARD_ROLE, CHAINS_ROLE),
    trial_roles="orchestrator.families.outsourced:trial_roles",
    prepare="orchestrator.families.outsourced.driver:prepare",
)
