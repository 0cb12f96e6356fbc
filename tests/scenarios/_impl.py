"""The base classes a scenario runs on: Django's stock ones, django-safelive's,
or django-safelive's rollback classes.

Scenarios are run in a subprocess by tests/test_root_causes.py, which picks the
implementation with SCENARIO_IMPL and samples pg_stat_activity meanwhile.
"""

from __future__ import annotations

import os

IMPL = os.environ.get("SCENARIO_IMPL", "safelive")

if IMPL == "stock":
    from django.test import LiveServerTestCase
    from hypothesis.extra.django import (
        LiveServerTestCase as HypothesisLiveServerTestCase,
    )
elif IMPL == "safelive":
    from django_safelive import LiveServerTestCase
    from django_safelive.hypothesis import (
        LiveServerTestCase as HypothesisLiveServerTestCase,
    )
elif IMPL == "rollback":
    # Inside the test's transaction: only for scenarios whose tests need no
    # committed data (tests/test_rollback.py runs schemathesis_shop on it).
    from django_safelive import RollbackLiveServerTestCase as LiveServerTestCase
    from django_safelive.hypothesis import (  # type: ignore[assignment]
        RollbackLiveServerTestCase as HypothesisLiveServerTestCase,
    )
else:
    raise RuntimeError(
        f"SCENARIO_IMPL must be 'stock', 'safelive' or 'rollback', got {IMPL!r}"
    )

__all__ = ["HypothesisLiveServerTestCase", "LiveServerTestCase", "report"]


def report(**values: object) -> None:
    """Print values for the parent test to read."""
    print(
        "SCENARIO",
        " ".join(f"{key}={value}" for key, value in values.items()),
        flush=True,
    )
