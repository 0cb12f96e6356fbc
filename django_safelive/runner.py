"""Django's test runner, with django-safelive's session summary at the end.

Set ``TEST_RUNNER = "django_safelive.runner.SafeLiveRunner"`` (or pass
``--testrunner``) to see, after ``manage.py test``, the tests with the highest
session peaks, the budget and any overruns. Under ``--parallel N`` it also
splits TOTAL_MAX_SESSIONS across the N processes and collects their
records, and with SERVER_BUDGET set it takes the run's slots before the test
databases are created.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import unittest
from typing import Any

from django.db import connections
from django.test.runner import DiscoverRunner

from django_safelive._core import server_budget, summary
from django_safelive._core.config import DJANGO_PARALLEL_VARIABLE, resolve, total_budget

__all__ = ["SafeLiveRunner"]


class SafeLiveRunner(DiscoverRunner):
    """``DiscoverRunner`` splitting the total budget across ``--parallel``
    processes and printing django-safelive's session summary after the run."""

    safelive_processes = 1

    def build_suite(self, *args: Any, **kwargs: Any) -> Any:
        suite = super().build_suite(*args, **kwargs)
        # Django's ParallelTestSuite says how many processes it will start
        # (never more than there are test classes); any other suite runs here.
        self.safelive_processes = max(1, int(getattr(suite, "processes", 1)))
        if self.safelive_processes > 1:
            os.environ[DJANGO_PARALLEL_VARIABLE] = str(self.safelive_processes)
            if total_budget() is not None:
                # A total too small to split fails now, before any database.
                resolve(processes=self.safelive_processes)
        return suite

    def setup_databases(self, **kwargs: Any) -> Any:
        server_budget.reserve_for_run()
        return super().setup_databases(**kwargs)

    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> Any:
        records = None
        if self.safelive_processes > 1:
            # The processes take their own slots; this one only waits for them.
            connections.close_all()
            server_budget.release_all()
            records = tempfile.mkdtemp(prefix="safelive-summary-")
            os.environ[summary.RECORDS_VARIABLE] = records
        try:
            result = super().run_suite(suite, **kwargs)
        finally:
            os.environ.pop(DJANGO_PARALLEL_VARIABLE, None)
            if records is not None:
                os.environ.pop(summary.RECORDS_VARIABLE, None)
                summary.read_records(records)
                shutil.rmtree(records, ignore_errors=True)
        lines = summary.run.lines()
        if lines:
            print("\ndjango-safelive sessions", *lines, sep="\n", file=sys.stderr)
        return result
