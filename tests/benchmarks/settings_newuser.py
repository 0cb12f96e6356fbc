"""The benchmark settings plus ``tests.benchmarks.ninjaapp``'s API, under
Django's default CONN_MAX_AGE = 0, for ``python -m tests.benchmarks --newuser``
only."""

from __future__ import annotations

from tests.benchmarks.settings import *  # noqa: F403
from tests.benchmarks.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.benchmarks.ninjaapp"]
ROOT_URLCONF = "tests.benchmarks.ninjaapp.urls"
for _database in DATABASES.values():
    _database["CONN_MAX_AGE"] = 0
