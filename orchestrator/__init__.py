"""Reads a sweep, builds the Ray Tune run, places each trial's actors, drives the loop, logs to MLflow.

Command line: `python -m orchestrator {run,validate,resume,report} ...` (see `orchestrator/cli.py`).
"""
