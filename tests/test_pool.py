"""Django 5.1+'s psycopg 3 pool: kept within the budget, closed before the drop.

Runs with SAFELIVE_TEST_DB=postgres-pool (``nox -s backends``), whose pool
allows max_size 6.
"""

from __future__ import annotations

import threading

from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import SimpleTestCase

from django_safelive import LiveServerTestCase
from django_safelive._pytest_server import SafeLiveServer
from tests._clients import concurrently, get
from tests._sampler import connect, count_sessions
from tests.test_shared import peak_while


class PoolWithinBudgetTests(LiveServerTestCase):
    server_workers = 3
    max_sessions = 4  # below the pool's max_size of 6

    @classmethod
    def setUpClass(cls) -> None:
        # Registered first, so it runs last: after the server has stopped.
        cls.addClassCleanup(cls.assert_pool_gone, connection.settings_dict["NAME"])
        super().setUpClass()

    @classmethod
    def assert_pool_gone(cls, datname: str) -> None:
        """Counted from outside: the pool's sessions are closed, not just idle."""
        settings = connection.settings_dict
        raw = connect(settings["HOST"], int(settings["PORT"]))
        try:
            left = count_sessions(raw, datname)
        finally:
            raw.close()
        assert left == 0, f"{left} pool session(s) outlived the live server"

    def test_pool_is_shrunk_to_the_budget(self) -> None:
        """While the server runs the pool holds at most the budget's sessions."""
        self.assertEqual(connection.pool.max_size, 4)  # type: ignore[attr-defined]
        clients = threading.Thread(
            target=concurrently, args=(f"{self.live_server_url}/concurrent/", 16)
        )
        self.assertLessEqual(peak_while(clients), 4)


class PoolSharedByTwoServersTests(LiveServerTestCase):
    server_workers = 1
    max_sessions = 3

    def test_a_server_stopping_leaves_the_pool_the_other_uses(self) -> None:
        """The pool is closed when the last server stops, not the first."""
        self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)
        pool = connection.pool  # type: ignore[attr-defined]
        other = SafeLiveServer("localhost")
        try:
            self.assertEqual(get(f"{other.url}/items/").status_code, 200)
        finally:
            other.stop()
        self.assertFalse(pool.closed)
        self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)


class PoolTooSmallTests(SimpleTestCase):
    def test_pool_smaller_than_the_workers_is_refused(self) -> None:
        """A pool too small for every worker fails at start-up, saying what to set."""

        class Crowded(LiveServerTestCase):
            server_workers = 6
            max_sessions = 8

            def test_nothing(self) -> None:
                """Never runs."""

        with self.assertRaisesMessage(
            ImproperlyConfigured,
            "DATABASES['default']['OPTIONS']['pool'] allows up to 6 sessions "
            "(max_size), fewer than the 7 the live server needs (6 worker(s) plus "
            "the test thread). Set max_size to at least 7, or lower WORKERS.",
        ):
            Crowded.setUpClass()
        self.assertFalse(hasattr(Crowded, "server_thread"))
