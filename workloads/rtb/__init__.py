"""Relative Trajectory Balance (RTB, arXiv:2405.20971): fine-tuning a diffusion prior into the posterior
p_post(x) ~ p(x) r(x)^beta, with classifier guidance and RL baselines, on the paper's 2-D toy.

config.py (RTBConfig), toy.py (the 25-mode prior and the 9-mode constraint), prior.py (the prior's maximum-likelihood
fit), trajectories.py (gradient through a subset of steps), guidance.py (classifier guidance), losses.py (the RL
baselines; RTB's objectives are in workloads/objectives.py), metrics.py (against the exact posterior), plots.py,
learner.py (RTBLearner), run_local.py (one process, no Ray).
"""
