"""One driver per workload: creates the trial's actors in its placement group and runs the
loop between two reports. `orchestrator/trial.py` does what every workload shares (restore,
report, checkpoint, recovery from a dead actor)."""
