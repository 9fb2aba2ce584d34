"""Benchmarks that print figures (`python -m orchestrator.benchmarks.<name>`); speed targets live here, not in tests."""
