"""A Schemathesis property test in the shape users write, as in ROOT_CAUSES.md.

A loop over the API's operations, a nested ``@given`` per operation,
``case.call_and_validate`` with a Bearer token, and a new HTTP session per
example that is never closed, under CONN_MAX_AGE = 600.
"""

from __future__ import annotations

from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.scenarios._impl import HypothesisLiveServerTestCase, report
from tests.testapp.views import OPENAPI, TOKEN

OPERATIONS = [("/items/", "GET"), ("/items/", "POST"), ("/items/{item_id}/", "GET")]


class ShopAPITests(HypothesisLiveServerTestCase):
    sessions: list[requests.Session] = []

    @classmethod
    def tearDownClass(cls) -> None:
        for session in cls.sessions:
            session.close()
        super().tearDownClass()

    def test_api(self) -> None:
        """Every operation conforms to the schema for thirty examples."""
        schema = schemathesis.openapi.from_dict(OPENAPI)
        calls = 0
        for path, method in OPERATIONS:
            strategy = schema[path][method].as_strategy()

            @given(case=strategy)
            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                nonlocal calls
                session = requests.Session()
                self.sessions.append(session)
                calls += 1
                case.call_and_validate(
                    base_url=self.live_server_url,
                    session=session,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )

            check()
        report(calls=calls)
