"""Test suite (a package so tests and benchmarks share tests/reference.py)."""
