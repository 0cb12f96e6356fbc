"""The test settings plus ``benchmarks.flushapp``'s thirty-six tables, for
``python -m benchmarks --rollback`` only: the test suite never installs them."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.flushapp"]
