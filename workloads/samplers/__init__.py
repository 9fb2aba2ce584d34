"""Diffusion samplers for unnormalized densities (arXiv:2402.05098, "Improved off-policy training of
diffusion samplers").

Targets: gmm25 (2-d), gmm40 (2-d), funnel (10-d), manywell (32-d). Losses: tb, vargrad, subtb,
fl_subtb, pis; each optionally with the Langevin-parameterized drift, exploration noise and (all but
pis) replay with local search.

    config.py       SamplerConfig / ReplayConfig, defaults in one place (sigma^2 per target)
    targets/        log R(x), exact samples, exact log Z
    policy.py       forward-SDE drift f_theta(x, t) (plain or Langevin), flow log F(x, t) of (FL-)SubTB
    sde.py          forward / Brownian-bridge backward trajectories with log PF, log PB
    losses.py       the intermediate target of FL-SubTB's flows (the objectives: workloads/objectives.py)
    metrics.py      Delta log Z (ELBO), Delta log Z_RW, EUBO, log-likelihood of exact samples, W2, W1
    replay.py       terminal-state batches and a prioritized ring buffer
    local_search.py parallel MALA on log R; LocalSearchReplay, the buffers of "+ LS" and rounds between them
    learner.py      SamplerLearner: train chunks, evaluate, state_dict
    plots.py        samples over target contours (2-d), marginal histograms (Funnel, Manywell)
    run_local.py    in-process training loop (replay + local search), no Ray
"""
