"""Session diagnostics: accounting, assertions, self-explaining errors, summaries.

Also the URL configuration of the views below, which send secrets both ways.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import unittest
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import SimpleTestCase, override_settings
from django.urls import path

from django_safelive import (
    LiveServerTestCase,
    RequestStuck,
    SafeLiveError,
    SessionBudgetExceeded,
    max_sessions,
)
from django_safelive._core.config import resolve
from django_safelive._core.holders import (
    SERVER_WORKER,
    TEST_THREAD,
    short_test_id,
)
from django_safelive._core.hooks import registry
from django_safelive._pytest_server import SafeLiveServer
from django_safelive.plugin import SESSIONS_PROPERTY, _SessionSummary
from tests._clients import get
from tests._waiting import wait_for
from tests.testapp import urls, views

ROOT = Path(__file__).resolve().parent.parent
# Made up at run time (and handed to subprocesses), so it appears in no source
# line that a traced stack could quote.
SECRET = os.environ.get("SAFELIVE_DIAG_SECRET") or uuid.uuid4().hex
SECRET_HEADERS = {"Authorization": f"Bearer {SECRET}", "Cookie": f"sessionid={SECRET}"}


def _with_secret_cookie(view: Callable[[HttpRequest], HttpResponse]) -> Any:
    def secret_view(request: HttpRequest, **path_values: str) -> HttpResponse:
        response = view(request)
        response.set_cookie("sessionid", SECRET)
        return response

    return secret_view


urlpatterns = [
    path("secret-spawn/", _with_secret_cookie(views.spawn)),
    path("secret-spawn/<str:token>/", _with_secret_cookie(views.spawn)),
    path("secret-slow/", _with_secret_cookie(views.slow)),
    *urls.urlpatterns,
]


def get_with_secrets(url: str) -> requests.Response:
    """A GET carrying the secret in its headers, its cookie and its query string."""
    base, _, query = url.partition("?")
    with requests.Session() as client:
        return client.get(
            f"{base}?token={SECRET}&{query}", headers=SECRET_HEADERS, timeout=30
        )


class AccountingTests(LiveServerTestCase):
    server_mode = "single"

    def test_history_records_when_sessions_opened_and_closed(self) -> None:
        """A worker's session is kept in the history once closed, with its request."""
        get(f"{self.live_server_url}/items/")
        self.reset_live_server()
        closed = [h for h in self.safelive_account.history if h.role == SERVER_WORKER]
        self.assertTrue(closed)
        holder = closed[-1]
        self.assertEqual(holder.request, "GET /items/")
        self.assertEqual(holder.test, self.id())
        assert holder.closed_at is not None
        self.assertGreaterEqual(holder.closed_at, holder.opened_at)
        self.assertIn("closed after", holder.describe())
        self.assertIsNone(holder.stack)

    def test_application_name_names_the_test_and_ends_with_tag_and_role(self) -> None:
        """pg_stat_activity shows the test, and the tag and role stay at the end."""
        name = get(f"{self.live_server_url}/session/").json()["application_name"]
        self.assertTrue(name.endswith(f"{self.safelive_account.tag}:worker"), name)
        self.assertLessEqual(len(name.encode()), 63)
        # Too long to fit: the start of the test's id is what gets cut.
        self.assertIn(
            f"{self._testMethodName[-20:]} {self.safelive_account.tag}:", name
        )

    def test_short_test_ids(self) -> None:
        """Unittest ids keep class and method; pytest node ids drop the file."""
        self.assertEqual(
            short_test_id("tests.test_x.ShopTests.test_a"), "ShopTests.test_a"
        )
        self.assertEqual(short_test_id("tests/test_x.py::test_a[1]"), "test_a[1]")


class TraceTests(LiveServerTestCase):
    server_mode = "single"
    trace = True

    def test_stack_points_at_the_code_that_opened_the_session(self) -> None:
        """With tracing on, a worker's session records the view that opened it."""
        get(f"{self.live_server_url}/items/")
        (worker,) = [h for h in registry.holders() if h.role == SERVER_WORKER]
        assert worker.stack is not None
        last_frame = worker.stack.strip().splitlines()[-2]
        self.assertIn("testapp/views.py", last_frame)
        self.assertIn("in items", last_frame)
        self.assertIn("opened at:", worker.describe())


class TraceSettingTests(SimpleTestCase):
    def test_environment_variable(self) -> None:
        """SAFELIVE_TRACE accepts 1/0/true/false and refuses anything else."""
        for value, expected in [("1", True), ("true", True), ("0", False)]:
            with mock.patch.dict(os.environ, {"SAFELIVE_TRACE": value}):
                self.assertIs(resolve().trace, expected)
        with (
            mock.patch.dict(os.environ, {"SAFELIVE_TRACE": "yes"}),
            self.assertRaisesMessage(
                ImproperlyConfigured,
                "the environment variable SAFELIVE_TRACE must be 1, 0, true or "
                "false, got 'yes'.",
            ),
        ):
            resolve()

    @override_settings(SAFELIVE={"TRACE": "true"})
    def test_setting_must_be_a_bool(self) -> None:
        """SAFELIVE["TRACE"] must be a real bool, and the class attribute wins."""
        with self.assertRaisesMessage(
            ImproperlyConfigured, "SAFELIVE['TRACE'] must be True or False, got str"
        ):
            resolve()
        self.assertIs(resolve(type("Owner", (), {"trace": True})).trace, True)


class AssertionTests(LiveServerTestCase):
    server_mode = "single"
    max_sessions = 4

    def setUp(self) -> None:
        connection.ensure_connection()

    def test_passes_within_the_limit(self) -> None:
        """The test thread and one worker: two sessions, within a limit of two."""
        with self.assertMaxSessions(2) as sessions:
            get(f"{self.live_server_url}/items/")
        self.assertEqual(sessions.peak, 2)

    def test_fails_listing_the_holders_at_the_peak(self) -> None:
        """A thread the view starts makes three sessions: the failure names them."""
        with (
            self.assertRaises(AssertionError) as caught,
            self.assertMaxSessions(2),
        ):
            get(f"{self.live_server_url}/spawn/?threads=1")
        message = str(caught.exception)
        self.assertIn(
            "3 database sessions were open at once on alias 'default'", message
        )
        self.assertIn("more than the 2 expected", message)
        self.assertIn("test thread 'MainThread'", message)
        self.assertIn(
            "server worker 'safelive-worker-1', opened while serving GET /spawn/",
            message,
        )
        self.assertIn("other thread", message)

    def test_plain_context_manager_inside_a_test_case(self) -> None:
        """max_sessions() works in a test case too, and counts what is already open."""
        get(f"{self.live_server_url}/items/")
        with max_sessions(2) as sessions:
            pass
        self.assertEqual(sessions.peak, 2)
        with self.assertRaises(AssertionError), max_sessions(1):
            pass

    def test_an_error_in_the_block_is_not_masked(self) -> None:
        """An exception raised in the block propagates instead of a count failure."""
        with self.assertRaises(KeyError), self.assertMaxSessions(0):
            raise KeyError("from the block")


class AssertionMisuseTests(SimpleTestCase):
    def test_needs_an_active_server(self) -> None:
        """Outside a django-safelive test, max_sessions() says it cannot count."""
        # The session-scoped safe_live_server fixture may be running: hide it.
        with (
            mock.patch.object(registry, "accounts", []),
            self.assertRaisesMessage(SafeLiveError, "only while a django-safelive"),
            max_sessions(1),
        ):
            pass

    def test_bad_arguments(self) -> None:
        """A negative limit or an unknown alias is refused."""
        with self.assertRaises(ValueError), max_sessions(-1):
            pass
        with self.assertRaisesMessage(ValueError, "'other'"), max_sessions(1, "other"):
            pass


class PeakCase(LiveServerTestCase):
    """Run by test_session_peak_is_recorded_per_test, not collected itself."""

    __test__ = False
    server_mode = "single"

    def test_spawn(self) -> None:
        """One extra thread in a view: test thread, worker and thread."""
        connection.ensure_connection()
        get(f"{self.live_server_url}/spawn/?threads=1")


@pytest.mark.django_db(transaction=True)
def test_session_peak_is_recorded_per_test() -> None:
    """After a test, session_peak holds its peak per alias."""
    case = PeakCase("test_spawn")
    result = unittest.TestResult()
    unittest.TestSuite([case]).run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert case.session_peak == {"default": 3}


def test_max_sessions_with_the_fixture(safe_live_server: SafeLiveServer) -> None:
    """max_sessions() bounds a pytest test using safe_live_server."""
    connection.ensure_connection()
    with max_sessions(2) as sessions:
        get(safe_live_server + "/items/")
    assert sessions.peak == 2
    safe_live_server.reset()
    with (
        pytest.raises(AssertionError, match="3 database sessions were open at once"),
        max_sessions(2),
    ):
        get(safe_live_server + "/spawn/?threads=1")


@override_settings(ROOT_URLCONF=__name__)
class SecretBudgetTests(LiveServerTestCase):
    server_mode = "single"
    max_sessions = 3
    trace = True

    def setUp(self) -> None:
        connection.ensure_connection()

    def test_budget_error_lists_holders_without_secrets(self) -> None:
        """A forced overrun lists the holders, with stacks, and no header value."""
        response = get_with_secrets(f"{self.live_server_url}/secret-spawn/?threads=2")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(response.cookies["sessionid"], SECRET)
        with self.assertRaises(SessionBudgetExceeded) as caught:
            self.reset_live_server()
        error = caught.exception
        message = str(error)
        self.assertIn("opened while serving GET /secret-spawn/", message)
        self.assertIn("opened at:", message)
        # The test thread's session opened before counting began: no stack.
        opened_later = [h for h in error.holders if h.role != TEST_THREAD]
        self.assertTrue(opened_later)
        self.assertTrue(all(holder.stack for holder in opened_later))
        reports = [
            message,
            *(holder.describe() for holder in self.safelive_account.history),
        ]
        for report in reports:
            self.assertNotIn(SECRET, report)

    def test_tokens_in_the_path_are_redacted(self) -> None:
        """A path segment that looks like a token never reaches the report."""
        url = f"{self.live_server_url}/secret-spawn/{SECRET}/?threads=2"
        self.assertEqual(get(url).status_code, 500)
        with self.assertRaises(SessionBudgetExceeded) as caught:
            self.reset_live_server()
        message = str(caught.exception)
        self.assertIn("GET /secret-spawn/<redacted>/", message)
        self.assertNotIn(SECRET, message)


@override_settings(ROOT_URLCONF=__name__)
class SecretStuckTests(LiveServerTestCase):
    server_mode = "single"
    drain_timeout = 0.3
    trace = True

    def test_stuck_request_lists_holders_without_secrets(self) -> None:
        """A stuck request names itself and its session, and no header value."""
        client = threading.Thread(
            target=get_with_secrets,
            args=(f"{self.live_server_url}/secret-slow/?seconds=3",),
        )
        client.start()
        try:
            assert wait_for(
                lambda: any(h.role == SERVER_WORKER for h in registry.holders())
            )
            with self.assertRaises(RequestStuck) as caught:
                self.reset_live_server()
        finally:
            client.join()
            # The worker finishes the request a moment after the client has it.
            assert wait_for(lambda: not self.server_thread.httpd.in_flight())
        message = str(caught.exception)
        self.assertIn("GET /secret-slow/ on safelive-worker-1", message)
        self.assertIn(
            "'default': server worker 'safelive-worker-1', opened while serving "
            "GET /secret-slow/",
            message,
        )
        self.assertIn("opened at:", message)
        self.assertNotIn(SECRET, message)


DB_NAME = os.environ.get("SAFELIVE_TEST_DB_NAME", "test_safelive")
SUMMARY_CASE = """
from django.db import connection
from django.test import override_settings

from django_safelive import LiveServerTestCase, SessionBudgetExceeded
from tests.test_diagnostics import get_with_secrets


@override_settings(ROOT_URLCONF="tests.test_diagnostics")
class SummaryTests(LiveServerTestCase):
    server_mode = "single"
    max_sessions = 3

    def test_overrun(self):
        connection.ensure_connection()
        get_with_secrets(self.live_server_url + "/secret-spawn/?threads=2")
        with self.assertRaises(SessionBudgetExceeded) as caught:
            self.reset_live_server()
        print(caught.exception)

    def test_quiet(self):
        get_with_secrets(self.live_server_url + "/items/")
"""


def run_summary_case(tmp_path: Path, command: list[str], database: str) -> str:
    """Run SUMMARY_CASE in a subprocess, tracing, on its own test database."""
    (tmp_path / "test_summary_case.py").write_text(SUMMARY_CASE)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SAFELIVE_DIAG_SECRET": SECRET,
        "SAFELIVE_TRACE": "1",
        "SAFELIVE_TEST_DB_NAME": f"{DB_NAME}_{database}",
    }
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, *command, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def assert_summary(output: str, overrun_test: str) -> None:
    """The table lists both tests, the budget, the overrun; no secret anywhere."""
    assert "django-safelive sessions" in output, output
    assert "2 test(s) used a django-safelive server" in output, output
    assert "budget of 3 session(s) per alias" in output, output
    assert "Overruns (sessions the budget refused): 1" in output, output
    assert f"{overrun_test}: other thread" in output, output
    assert "opened while serving GET /secret-spawn/" in output, output
    assert SECRET not in output


def test_pytest_run_summary(tmp_path: Path) -> None:
    """pytest's terminal summary shows the peaks, the budget and the overrun."""
    output = run_summary_case(
        tmp_path,
        ["-m", "pytest", "-s", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml")],
        "pytest",
    )  # fmt: skip
    assert_summary(output, "test_summary_case.py::SummaryTests::test_overrun")
    assert "   3       3  default    test_summary_case.py::SummaryTests" in output


def test_unittest_run_summary(tmp_path: Path) -> None:
    """SafeLiveRunner prints the same table after manage.py test."""
    output = run_summary_case(
        tmp_path,
        ["-m", "django", "test", "--noinput",
         "--testrunner", "django_safelive.runner.SafeLiveRunner"],
        "unittest",
    )  # fmt: skip
    assert_summary(output, "test_summary_case.SummaryTests.test_overrun")


def test_records_travel_in_the_teardown_report() -> None:
    """The plugin's summary reads records from reports, so xdist workers' count."""
    plugin = _SessionSummary()
    record = {"test": "x.py::t", "budget": 8, "peaks": {"default": 7}, "overruns": []}
    report = pytest.TestReport(
        "x.py::t", ("x.py", 0, "t"), {}, "passed", None, "teardown",
        user_properties=[(SESSIONS_PROPERTY, record)],
    )  # fmt: skip
    plugin.pytest_runtest_logreport(report)
    assert plugin.summary.tests["x.py::t"].peaks == {"default": 7}
