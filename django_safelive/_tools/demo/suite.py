"""The demo's property test, in the shape Schemathesis users write it.

A loop over the API's operations with a nested ``@given``,
``case.call_and_validate`` with a Bearer token, and a new HTTP session per
example that is never closed. SAFELIVE_DEMO_IMPL picks the base class:
Hypothesis's ``LiveServerTestCase`` ("stock") or django-safelive's ("safelive"):
the only line that differs.
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from django_safelive._tools.demo.views import OPENAPI, TOKEN

if os.environ.get("SAFELIVE_DEMO_IMPL") == "stock":
    from hypothesis.extra.django import LiveServerTestCase
else:
    from django_safelive.hypothesis import LiveServerTestCase

EXAMPLES = int(os.environ.get("SAFELIVE_DEMO_EXAMPLES", "30"))


class Stats:
    """What the run did, reported by the runner."""

    calls = 0
    server_errors = 0
    sessions: list[requests.Session] = []


class ShopAPITests(LiveServerTestCase):
    @classmethod
    def tearDownClass(cls) -> None:
        for session in Stats.sessions:
            session.close()
        super().tearDownClass()

    def test_api(self) -> None:
        """Every operation conforms to the schema."""
        schema = schemathesis.openapi.from_dict(OPENAPI)
        for path, method in [
            ("/items/", "GET"),
            ("/items/", "POST"),
            ("/items/{item_id}/", "GET"),
        ]:

            @given(case=schema[path][method].as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                session = requests.Session()  # never closed, as users' often are
                Stats.sessions.append(session)
                Stats.calls += 1
                response = case.call(
                    base_url=self.live_server_url,
                    session=session,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                Stats.server_errors += response.status_code >= 500
                case.validate_response(response)

            check()
