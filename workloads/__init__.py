"""The science, as plain PyTorch: targets, policies, losses, metrics and ground truths.

Nothing under `workloads/` imports `ray` or `mlflow` (a test enforces it), so every piece
can be imported, run and tested in a plain Python process.
"""
