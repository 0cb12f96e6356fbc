"""Benchmarks for django-safelive: `python -m benchmarks` or `nox -s bench`."""
