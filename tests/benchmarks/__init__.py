"""Benchmarks: not collected by pytest (norecursedirs); run `python -m tests.benchmarks.run`."""
