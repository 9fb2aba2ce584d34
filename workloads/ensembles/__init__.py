"""Scalable Ensemble Diversification (SED, arXiv:2409.16797): M members trained on one task, pushed to disagree
(A2D) on the hard training samples, with one random pair of members per step; OOD detection by their
predictive disagreement score (PDS).

    config.py       SEDConfig, defaults in one place (data, mode full | heads, lambda, mu, pair selection, ...)
    data.py         ColorDSprites shapes / digits with held-out labels, corruptions of the test set (workloads/data)
    a2d.py          the A2D disagreement, hard-sample weights, a member's share L_m and the whole loss L
    coordinator.py  draws batch, active members and pairs; turns logits into each member's update
    members.py      hosts of members: whole networks, or linear heads on a frozen extractor (one einsum)
    metrics.py      accuracies, PDS / max-prob / entropy / mutual-information OOD scores, AUROC
    evaluation.py   Evaluator: every metric of an ensemble's weights, predictions, the figure (plots.py)
    run_local.py    the in-process training loop, no Ray
"""
