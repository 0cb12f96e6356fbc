"""The session budget: a hard bound, with errors that name the holders."""

from __future__ import annotations

import threading
from unittest import mock

from django.db import connection, connections, transaction

from django_safelive import LiveServerTestCase, SessionBudgetExceeded
from django_safelive._core import sessions
from tests import _pg
from tests._clients import get
from tests._waiting import wait_for


class BudgetTests(LiveServerTestCase):
    server_mode = "single"
    max_sessions = 3

    def setUp(self) -> None:
        # The test thread's own session is part of the budget.
        connection.ensure_connection()

    def test_threads_a_view_starts_are_refused_past_the_budget(self) -> None:
        """A view's second extra thread is refused, and the error names everyone."""
        response = get(f"{self.live_server_url}/spawn/?threads=2")
        self.assertEqual(response.status_code, 500)
        self.assertIn("SessionBudgetExceeded", response.json()["errors"][0])
        with self.assertRaises(SessionBudgetExceeded) as caught:
            self.reset_live_server()
        error = caught.exception
        self.assertEqual(
            (error.alias, error.budget, len(error.holders)), ("default", 3, 3)
        )
        message = str(error)
        self.assertIn("alias 'default'", message)
        self.assertIn("budget of 3", message)
        self.assertIn("test thread 'MainThread'", message)
        self.assertIn(
            "server worker 'safelive-worker-1', opened while serving GET /spawn/",
            message,
        )
        self.assertIn("other thread", message)
        self.assertIn("SAFELIVE_MAX_SESSIONS", message)

    def test_within_budget_passes(self) -> None:
        """One extra thread fits in a budget of three."""
        response = get(f"{self.live_server_url}/spawn/?threads=1")
        self.assertEqual(response.status_code, 200)
        self.reset_live_server()

    def test_sessions_never_exceed_budget_in_postgres(self) -> None:
        """PostgreSQL never sees more sessions than the budget allows."""
        seen: list[int] = []
        request = threading.Thread(
            target=get, args=(f"{self.live_server_url}/spawn/?threads=3",)
        )
        request.start()
        while request.is_alive():
            # The sampling session is the test thread's own, so it counts too.
            seen.append(len(_pg.sessions()) + 1)
        request.join()
        self.assertGreaterEqual(max(seen), 2)
        self.assertLessEqual(max(seen), 3)
        with self.assertRaises(SessionBudgetExceeded):
            self.reset_live_server()

    def test_threads_the_test_starts_count_too(self) -> None:
        """Of two helper threads the test starts, the one past the budget is refused."""
        get(f"{self.live_server_url}/items/")  # the worker keeps its session
        connection.ensure_connection()
        both_connected = threading.Barrier(2)
        errors: list[BaseException] = []

        def query() -> None:
            try:
                connection.ensure_connection()
            except SessionBudgetExceeded as error:
                errors.append(error)
            try:
                both_connected.wait(5)
            finally:
                connections.close_all()

        helpers = [threading.Thread(target=query) for _ in range(2)]
        for helper in helpers:
            helper.start()
        for helper in helpers:
            helper.join()
        self.assertEqual(len(errors), 1)
        self.assertIn("other thread", str(errors[0]))
        self.assertEqual(len(self.safelive_account.holders("default")), 2)
        self.safelive_account.take_violations()


class ExitingSessionTests(LiveServerTestCase):
    """A worker's closed session counts until PostgreSQL has let its backend go."""

    server_mode = "single"
    max_sessions = 2

    def setUp(self) -> None:
        connection.ensure_connection()

    def test_reset_leaves_the_exit_counted_not_waited_for(self) -> None:
        """A reset returns while the worker's backend is still exiting; until it
        is gone it fills a slot, so a session past the budget is refused."""
        held = get(f"{self.live_server_url}/temp-table/").json()
        with transaction.atomic():
            # An exiting backend drops its temporary table first: while the
            # test thread holds a lock on it, that backend cannot exit.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {held['table']} IN ACCESS SHARE MODE")
            self.reset_live_server()
            self.assertEqual(_pg.worker_pids(), {held["pid"]})
            # The test thread and the exiting backend fill the budget of 2.
            with mock.patch.object(sessions, "EXIT_WAIT", 0.2):
                response = get(f"{self.live_server_url}/session/")
            self.assertEqual(response.status_code, 500)
            self.assertEqual(_pg.worker_pids(), {held["pid"]})
            with self.assertRaises(SessionBudgetExceeded) as caught:
                self.reset_live_server()
            self.assertIn("its backend still exiting", str(caught.exception))
        # The lock is gone with the transaction, and the backend with it.
        self.assertTrue(wait_for(lambda: held["pid"] not in _pg.worker_pids()))
        again = get(f"{self.live_server_url}/session/")
        self.assertEqual(again.status_code, 200)
        self.assertNotEqual(again.json()["pid"], held["pid"])

    def test_a_new_session_waits_for_the_exit(self) -> None:
        """With the budget full of an exiting backend, a request waits for it to
        exit rather than fail, and opens its session only then."""
        held = get(f"{self.live_server_url}/temp-table/").json()
        answers: list[dict[str, object]] = []
        request = threading.Thread(
            target=lambda: answers.append(
                get(f"{self.live_server_url}/session/").json()
            )
        )
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {held['table']} IN ACCESS SHARE MODE")
            self.reset_live_server()
            request.start()
            httpd = self.server_thread.httpd
            self.assertTrue(wait_for(lambda: "GET /session/" in str(httpd.in_flight())))
            # Waiting for the exit: no new session, no answer yet.
            self.assertEqual(_pg.worker_pids(), {held["pid"]})
            self.assertEqual(answers, [])
        request.join(30)
        self.assertEqual(len(answers), 1)
        self.assertNotEqual(answers[0]["pid"], held["pid"])
