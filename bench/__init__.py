"""Benchmarks: one script per target of BENCHMARKS.md, each printing one JSON line.

Run them as modules from the project root, e.g. ``python -m bench.grid_train``. Timings live
here and in BENCHMARKS.md, never in the tests.
"""
