"""Benchmarks that hold daytwo to its numbers (issue 8); see docs/benchmarks.md.

Each module is one command: ``python -m bench.<name> [--quick]``. It prints a table and
records a result block (machine, command, date, median and spread) in docs/benchmarks.md.
"""
