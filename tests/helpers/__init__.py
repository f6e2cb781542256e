"""Helpers shared by several test files (and by benchmarks/bench_sandbox.py): see DEVELOPERS.md "Tests"."""
