"""tests.settings for mypy's Django plugin only: with the demo's app and the
benchmarks' API, so that the plugin knows their models. Test runs leave them
out."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS as _BASE_APPS

INSTALLED_APPS = [
    *_BASE_APPS,
    "django_safelive._tools.demo.apps.DemoConfig",
    "tests.benchmarks.ninjaapp",
]
