"""django_safelive.schemathesis: every operation as a property test, server reset
between examples, in unittest (subTest per operation) and pytest (one test each)."""

from __future__ import annotations

import copy
import json
import tempfile
import time
import unittest
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.test import LiveServerTestCase as DjangoLiveServerTestCase
from django.test import SimpleTestCase

from django_safelive import LiveServerTestCase
from django_safelive import schemathesis as safelive_schemathesis
from django_safelive._pytest_server import SafeLiveServer
from tests import _pg
from tests._clients import AUTH
from tests._waiting import wait_for
from tests.testapp.views import OPENAPI

api = safelive_schemathesis.from_dict(OPENAPI, headers=AUTH, max_examples=10)


class Recorder:
    """A Schemathesis check recording each response's status and the worker
    sessions open after it."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.worker_pids: list[int] = []

    def check(self, ctx: Any, response: Any, case: Any) -> bool:
        self.statuses[response.status_code] += 1
        # The previous example's session, closed at the reset, leaves
        # pg_stat_activity as its backend exits.
        wait_for(lambda: len(_pg.worker_sessions()) <= 1)
        self.worker_pids += [pid for pid, _, _ in _pg.worker_sessions()]
        return True


class UnittestHelperTests(LiveServerTestCase):
    def test_every_operation_runs_with_a_reset_between_examples(self) -> None:
        """Each example's worker session is a new one: the server was reset."""
        recorder = Recorder()
        schema = safelive_schemathesis.from_dict(
            OPENAPI, headers=AUTH, max_examples=8, checks=[recorder.check]
        )
        schema.check_all(self)
        calls = sum(recorder.statuses.values())
        # GET /items/ takes no input: Hypothesis tries it once.
        self.assertGreaterEqual(calls, 1 + 2 * 4)
        # One worker session per call, each a different backend.
        self.assertEqual(len(recorder.worker_pids), calls)
        self.assertEqual(len(set(recorder.worker_pids)), calls)
        self.assertTrue(wait_for(lambda: _pg.worker_sessions() == []))

    def test_headers_reach_the_api(self) -> None:
        """With the Bearer header no call is refused; without it every call is."""
        with_token, without = Recorder(), Recorder()
        for recorder, headers in ((with_token, AUTH), (without, {})):
            safelive_schemathesis.from_dict(
                OPENAPI, headers=headers, max_examples=5, checks=[recorder.check]
            ).check_all(self)
        self.assertNotIn(401, with_token.statuses)
        self.assertEqual(set(without.statuses), {401})

    def test_rate_limit_spaces_the_requests(self) -> None:
        """rate_limit="4/s" holds nine calls to four a second."""
        recorder = Recorder()
        schema = safelive_schemathesis.from_dict(
            OPENAPI,
            headers=AUTH,
            max_examples=9,
            rate_limit="4/s",
            checks=[recorder.check],
        )
        (item,) = [op for op in schema.operations() if "{item_id}" in op.label]
        started = time.monotonic()
        schema.check(self, item)
        calls = sum(recorder.statuses.values())
        self.assertGreaterEqual(calls, 9)
        self.assertGreaterEqual(time.monotonic() - started, (calls - 4) / 4)

    def test_schema_served_by_the_live_server(self) -> None:
        """from_path() loads the schema the app serves, over the live server."""
        schema = safelive_schemathesis.from_path("/openapi.json", headers=AUTH)
        labels = [op.label for op in schema.operations(self.live_server_url)]
        self.assertEqual(
            labels, ["GET /items/", "POST /items/", "GET /items/{item_id}/"]
        )

    def test_schema_from_a_file(self) -> None:
        """from_file() loads a JSON (or YAML) schema and runs it like a dict's."""
        recorder = Recorder()
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "openapi.json"
            path.write_text(json.dumps(OPENAPI))
            schema = safelive_schemathesis.from_file(
                path, headers=AUTH, max_examples=3, checks=[recorder.check]
            )
            schema.check_all(self)
        self.assertEqual(len(schema.operations()), 3)
        self.assertGreaterEqual(sum(recorder.statuses.values()), 3)
        self.assertNotIn(401, recorder.statuses)

    def test_a_broken_operation_fails_its_subtest_only(self) -> None:
        """A response that contradicts the schema fails that operation's subTest."""
        broken = copy.deepcopy(OPENAPI)
        listing = broken["paths"]["/items/"]["get"]["responses"]["200"]
        listing["content"]["application/json"]["schema"] = {"type": "object"}
        schema = safelive_schemathesis.from_dict(broken, headers=AUTH, max_examples=3)
        server = self

        class Inner(unittest.TestCase):
            def runTest(self) -> None:
                """Runs the schema against the outer test's live server."""
                self.live_server_url = server.live_server_url
                self.reset_live_server = server.reset_live_server
                schema.check_all(self)

        result = unittest.TestResult()
        Inner().run(result)
        problems = [str(test) for test, _ in result.failures + result.errors]
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("operation='GET /items/'", problems[0])


class StockServerTests(DjangoLiveServerTestCase):
    def test_client_leaves_no_keep_alive_socket(self) -> None:
        """On Django's own server the helper's calls leave no thread or session."""

        class Adapter:
            url = self.live_server_url

            def reset(self, aliases: list[str] | None = None) -> None:
                """Django's server has nothing to reset."""

        (listing,) = [op for op in api.operations() if op.label == "GET /items/"]
        api.check(Adapter(), listing)
        # Every client closed its socket, so every request thread has ended and
        # closed its session (CONN_MAX_AGE = 600 would otherwise keep them).
        wait_for(lambda: _pg.sessions() == [])
        self.assertEqual(_pg.sessions(), [])


class BadInputTests(SimpleTestCase):
    def test_needs_a_bounded_server(self) -> None:
        """Anything but a django-safelive server is refused, saying what to pass."""
        with self.assertRaisesMessage(TypeError, "safe_live_server fixture"):
            api.check(object(), api.operations()[0])

    def test_bad_options(self) -> None:
        """Bad max_examples and a path that is not a URL path are refused."""
        with self.assertRaisesMessage(ValueError, "max_examples must be at least 1"):
            safelive_schemathesis.from_dict(OPENAPI, max_examples=0)
        with self.assertRaisesMessage(TypeError, "max_examples must be an int"):
            safelive_schemathesis.from_dict(OPENAPI, max_examples="5")
        with self.assertRaisesMessage(ValueError, "use from_file()"):
            safelive_schemathesis.from_path("openapi.json")

    def test_a_path_that_serves_no_schema(self) -> None:
        """A path that answers 404 says to check the URLconf."""
        with self.assertRaisesMessage(ValueError, "answered 404"):
            safelive_schemathesis.from_path("/nowhere.json").operations()


@api.parametrize()
def test_operation(safe_live_server: SafeLiveServer, operation: Any) -> None:
    """Each operation is its own pytest test, against the bounded fixture."""
    api.check(safe_live_server, operation)


def test_parametrize_has_one_test_per_operation(
    request: pytest.FixtureRequest,
) -> None:
    """The parametrized tests above are one per operation, named by label."""
    names = [
        item.name
        for item in request.session.items
        if item.name.startswith("test_operation[")
    ]
    assert names == [
        "test_operation[GET /items/]",
        "test_operation[POST /items/]",
        "test_operation[GET /items/{item_id}/]",
    ]
