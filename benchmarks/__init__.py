"""Benchmarks: run with ``scripts/bench`` (all) or ``python -m benchmarks.NAME``."""
