"""Benchmarks for django-safelive: `python -m tests.benchmarks` or `nox -s bench`."""
