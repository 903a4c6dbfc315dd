"""Benchmarks of the package: handler overhead, the calculator, the price catalog, scale.

Run from the repository root: `python -m benchmarks` (full) or `python -m benchmarks --quick` (< 60 s).
Not part of the test run (pytest collects `tests/` only). See `benchmarks/README.md`.
"""
