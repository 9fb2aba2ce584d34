"""Diffusion samplers for unnormalized densities (arXiv:2402.05098, "Improved off-policy training of
diffusion samplers").

    targets/       log R(x), exact samples, exact log Z
    policy.py      forward-SDE drift f_theta(x, t)
    sde.py         forward / Brownian-bridge backward trajectories with log PF, log PB
    losses.py      TB and VarGrad as pure functions of tensors
    metrics.py     Delta log Z (ELBO), Delta log Z_RW, W2
    replay.py      terminal-state batches and a prioritized ring buffer
    local_search.py parallel MALA on log R
    learner.py     SamplerLearner: train chunks, evaluate, state_dict
    plots.py       samples over target contours
    run_local.py   in-process training loop (replay + local search), no Ray
"""
