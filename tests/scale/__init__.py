"""Test suites that tests/test_scale.py runs in processes of their own."""
