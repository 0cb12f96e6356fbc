"""The shared behaviour tests, run on every backend (SAFELIVE_TEST_DB).

PostgreSQL with psycopg2 and psycopg 3 in the main matrix; the psycopg 3 pool,
MariaDB and SQLite (file and in-memory) in ``nox -s backends``. Session counts
come from the database server where there is one (tests/_backend.py).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from django_safelive import (
    ASGILiveServerTestCase,
    LiveServerTestCase,
    SessionBudgetExceeded,
)
from django_safelive.hypothesis import (
    LiveServerTestCase as HypothesisLiveServerTestCase,
)
from tests import _backend
from tests._clients import AUTH, concurrently, get, ws_exchange
from tests.testapp.models import Item
from tests.testapp.views import Concurrency

WORKERS = 3


def peak_while(action: threading.Thread) -> int:
    """Run `action` and count the test database's sessions until it ends."""
    seen = [_backend.total_sessions()]
    action.start()
    while action.is_alive():
        seen.append(_backend.total_sessions())
    action.join()
    return max(seen)


class SharedServerTests(LiveServerTestCase):
    server_mode = "pool"
    server_workers = WORKERS
    max_sessions = WORKERS + 2

    def setUp(self) -> None:
        Concurrency.peak = 0

    @classmethod
    def setUpClass(cls) -> None:
        # Registered first, so it runs last: after the server has stopped.
        cls.addClassCleanup(cls.assert_no_server_session_left)
        super().setUpClass()

    @classmethod
    def assert_no_server_session_left(cls) -> None:
        """The test thread's session is the only one left on the database."""
        if _backend.reported_by_server() and not _backend.pooled():
            left = _backend.total_sessions() - 1
            assert left == 0, f"{left} server session(s) outlived the server"

    def test_concurrent_clients_queue_within_the_pool(self) -> None:
        """Twelve concurrent clients: all answered, three at a time, bounded."""
        codes: list[int] = []
        clients = threading.Thread(
            target=lambda: codes.extend(
                concurrently(f"{self.live_server_url}/concurrent/?seconds=0.2", 12)
            )
        )
        peak = peak_while(clients)
        self.assertEqual(codes, [200] * 12)
        self.assertEqual(
            Concurrency.peak, 1 if _backend.shared_connection() else WORKERS
        )
        self.assertGreaterEqual(peak, 1)
        self.assertLessEqual(peak, WORKERS + 1)

    def test_idle_keep_alive_clients_hold_nothing_after_reset(self) -> None:
        """Twenty clients left open cost at most the workers, nothing after reset."""
        clients = [requests.Session() for _ in range(20)]
        try:
            for client in clients:
                response = client.get(f"{self.live_server_url}/items/", headers=AUTH)
                self.assertEqual(response.status_code, 200)
            self.assertLessEqual(_backend.server_sessions(), WORKERS)
            self.reset_live_server()
            self.assertEqual(_backend.settled_server_sessions(), 0)
        finally:
            for client in clients:
                client.close()

    def test_view_calling_its_own_server(self) -> None:
        """A view that calls the live server gets the answer: another worker
        serves the call, on in-memory SQLite's shared connection too."""
        response = get(f"{self.live_server_url}/webhook/")
        self.assertEqual(response.json(), {"status": 200})

    def test_writes_through_the_server_are_visible(self) -> None:
        """A POST through the server commits, and the test thread reads it."""
        with requests.Session() as client:
            response = client.post(
                f"{self.live_server_url}/items/",
                json={"name": "widget", "price": 3},
                headers=AUTH,
            )
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["widget"])


class SharedBudgetTests(LiveServerTestCase):
    server_mode = "single"
    max_sessions = 3

    def test_budget_refuses_threads_a_view_starts(self) -> None:
        """Three extra threads from a view overrun a budget of three: refused, named."""
        # The test thread's own session first, named as the database names it.
        backend = _backend.test_thread_backend()
        response = get(f"{self.live_server_url}/spawn/?threads=3")
        self.assertEqual(response.status_code, 500)
        self.assertIn("SessionBudgetExceeded", response.json()["errors"][0])
        with self.assertRaises(SessionBudgetExceeded) as caught:
            self.reset_live_server()
        message = str(caught.exception)
        # Named as pg_stat_activity / the processlist name it (not on SQLite).
        if backend is not None:
            self.assertRegex(
                message, rf"test thread 'MainThread', open for .*s, {backend}\n"
            )
        self.assertIn("alias 'default'", message)
        self.assertIn("other thread", message)
        self.assertIn("budget of 3", message)
        self.assertLessEqual(_backend.total_sessions(), 3)


class SharedHypothesisTests(HypothesisLiveServerTestCase):
    server_workers = WORKERS
    examples = 0
    clients: list[requests.Session] = []

    @classmethod
    def tearDownClass(cls) -> None:
        for client in cls.clients:
            client.close()
        super().tearDownClass()
        assert cls.examples >= 10, cls.examples

    @settings(max_examples=25, deadline=None, database=None)
    @given(prices=st.lists(st.integers(min_value=0, max_value=1000), max_size=4))
    def test_sessions_stay_flat_across_examples(self, prices: list[int]) -> None:
        """Every example starts with no server session and an empty table."""
        type(self).examples += 1
        self.assertEqual(_backend.settled_server_sessions(), 0)
        self.assertEqual(Item.objects.count(), 0)
        for price in prices:
            client = requests.Session()  # never closed before the class ends
            self.clients.append(client)
            response = client.post(
                f"{self.live_server_url}/items/",
                json={"name": "item", "price": price},
                headers=AUTH,
            )
            self.assertEqual(response.status_code, 201, response.content)
        self.assertLessEqual(_backend.total_sessions(), WORKERS + 1)


class SharedASGITests(ASGILiveServerTestCase):
    max_sessions = WORKERS + 2  # two HTTP workers, one WebSocket worker

    @classmethod
    def setUpClass(cls) -> None:
        # Registered first, so it runs last: after the server has stopped.
        cls.addClassCleanup(SharedServerTests.assert_no_server_session_left)
        super().setUpClass()

    def test_http_and_websockets_within_the_budget(self) -> None:
        """Eight HTTP clients and two WebSockets at once: every request and
        message answered, the writes visible, the sessions within the budget;
        none left after a reset. In-memory SQLite: one worker serves all."""
        codes: list[int] = []
        counts: list[int] = []

        def clients() -> None:
            with ThreadPoolExecutor(10) as pool:
                sockets = [
                    pool.submit(ws_exchange, self.live_server_ws_url, 3, f"ws-{n}")
                    for n in range(2)
                ]
                codes.extend(
                    pool.map(
                        lambda n: (
                            get(
                                f"{self.live_server_url}/asgi/create/?name=http-{n}"
                            ).status_code
                        ),
                        range(8),
                    )
                )
                counts.extend(len(socket.result()) for socket in sockets)

        peak = peak_while(threading.Thread(target=clients))
        self.assertEqual(codes, [200] * 8)
        self.assertEqual(counts, [3, 3])
        self.assertEqual(Item.objects.count(), 8 + 6)
        self.assertLessEqual(peak, WORKERS + 2)
        self.reset_live_server()
        self.assertEqual(_backend.settled_server_sessions(), 0)
