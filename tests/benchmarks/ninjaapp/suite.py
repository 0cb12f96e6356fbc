"""A Schemathesis suite for the API as its users write one, on Hypothesis's
live server: ``_newuser.py`` runs it as it is and with only the import below
swapped for django-safelive's.

Two test cases: every operation in a nested ``@given`` per operation, and one
``@given`` on the test method over all operations (Hypothesis then runs
Django's set-up and teardown, the flush, around every example). Every example
puts the token the API checks in the database first, since the flush takes it
away.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.extra.django import LiveServerTestCase

from tests.benchmarks.ninjaapp.api import TOKEN, api
from tests.benchmarks.ninjaapp.models import Token

spec = api.get_openapi_schema()
schema = schemathesis.openapi.from_dict(spec)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 25  # per operation; the method's test runs four times as many
ALL_OPERATIONS = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


class EveryOperationTests(LiveServerTestCase):
    def test_operations(self) -> None:
        """Each operation's responses conform to the schema."""
        for path, methods in spec["paths"].items():
            for method in methods:

                @given(case=schema[path][method].as_strategy())
                @settings(ALL_OPERATIONS, max_examples=EXAMPLES)
                def check(case: Any) -> None:
                    Token.objects.get_or_create(key=TOKEN)
                    case.call_and_validate(base_url=self.live_server_url, headers=AUTH)

                check()


class APITests(LiveServerTestCase):
    @given(case=schema.as_strategy())
    @settings(ALL_OPERATIONS, max_examples=4 * EXAMPLES)
    def test_api(self, case: Any) -> None:
        """Any operation's response conforms to the schema."""
        Token.objects.get_or_create(key=TOKEN)
        case.call_and_validate(base_url=self.live_server_url, headers=AUTH)
