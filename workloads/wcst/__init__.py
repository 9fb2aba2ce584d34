"""WCST-ML, which shortcut cues DNNs choose (Scimeca et al., arXiv:2110.03095), on ColorDSprites made here.

Train a classifier on the diagonal set (every chosen cue at level l, label l: each cue alone explains the labels);
after every epoch measure its accuracy on each cue's off-diagonal set (only that cue gives the label): the cue
it adopted scores high, the others sit at chance. Compare with models forced onto one cue (diagonal + that
cue's off-diagonal set), and measure how flat each solution is.

    config.py     WcstConfig: cues, architecture, training mode, Adam, data size and resolution, flatness probe
    data.py       the trial's rendered training and test sets (rows from workloads/data/cue_conflict.py)
    metrics.py    diagonal and per-cue off-diagonal accuracies
    flatness.py   loss increase under random weight perturbations of exact norm r
    learner.py    WcstLearner: train / evaluate / flatness / state_dict (wrapped by actors.learner.Learner)
    run_local.py  one trial in process, no Ray or MLflow

The sweep-end figures (preference curves, flatness curves) are orchestrator/families/wcst/summary.py.
"""
