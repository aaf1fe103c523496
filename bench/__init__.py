"""Benchmarks: `python3 -m bench` (see README, "Benchmarks")."""
