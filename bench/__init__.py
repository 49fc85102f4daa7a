"""Benchmarks: `make bench` (compare.py) and the focused scripts beside it."""
