"""Django's test runner, with django-safelive's session summary at the end.

Set ``TEST_RUNNER = "django_safelive.runner.SafeLiveRunner"`` (or pass
``--testrunner``) to see, after ``manage.py test``, the tests with the highest
session peaks, the budget and any overruns.
"""

from __future__ import annotations

import sys
import unittest
from typing import Any

from django.test.runner import DiscoverRunner

from django_safelive import _summary

__all__ = ["SafeLiveRunner"]


class SafeLiveRunner(DiscoverRunner):
    """``DiscoverRunner`` printing django-safelive's session summary after the run.

    Tests run with ``--parallel`` report from other processes, so the summary
    covers only the tests this process ran.
    """

    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> Any:
        result = super().run_suite(suite, **kwargs)
        lines = _summary.run.lines()
        if lines:
            print("\ndjango-safelive sessions", *lines, sep="\n", file=sys.stderr)
        return result
