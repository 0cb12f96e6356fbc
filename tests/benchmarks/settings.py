"""The test settings plus ``tests.benchmarks.flushapp``'s thirty-six tables, for
``python -m tests.benchmarks --rollback`` only: the test suite never installs them."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.benchmarks.flushapp"]
