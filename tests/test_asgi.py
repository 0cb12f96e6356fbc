"""The bounded ASGI live server: async and sync views, Server-Sent Events and
Channels WebSocket consumers, within the session budget whatever CONN_MAX_AGE
says, with the WSGI server's drain, reset and teardown guarantees."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import requests
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import TransactionTestCase, override_settings
from django.test.testcases import LiveServerThread
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from django_safelive import (
    ASGILiveServerTestCase,
    RequestStuck,
    SelfCallInSingleMode,
    SessionBudgetExceeded,
)
from django_safelive._core.asgi_server import SafeASGILiveServerThread
from django_safelive._core.asgi_workers import Worker
from django_safelive._core.config import resolve
from django_safelive.channels import ChannelsLiveServerTestCase
from django_safelive.hypothesis import ASGILiveServerTestCase as HypothesisASGITestCase
from tests._clients import get, ws_exchange
from tests._pg import worker_sessions
from tests._waiting import DEADLINE, wait_for
from tests.test_faults import Guarded
from tests.test_persistent import ConnMaxAge
from tests.testapp.models import Item

HTTP_CLIENTS = 24
HTTP_REQUESTS = 10  # per client
WEBSOCKETS = 8
MESSAGES = 10  # per WebSocket
BUDGET = 6  # four HTTP workers, one WebSocket worker and the test thread


class ASGIViewsTests(Guarded, ChannelsLiveServerTestCase):
    max_sessions: ClassVar[int | None] = BUDGET

    def test_async_view_on_the_async_orm(self) -> None:
        """An async view's ORM calls reach the test database through the server,
        at the address Channels' class gives (_port included)."""
        Item.objects.create(name="seen")
        self.assertEqual(self.live_server_url, f"http://localhost:{self._port}")
        answer = get(f"{self.live_server_url}/asgi/items/").json()
        self.assertEqual(answer["count"], 1)

    def test_sync_view_writes_are_visible_to_the_test(self) -> None:
        """A sync view runs on an HTTP worker, and its write reaches the test."""
        answer = get(f"{self.live_server_url}/asgi/create/?name=from-view").json()
        self.assertTrue(answer["thread"].startswith("safelive-asgi-worker-"))
        self.assertEqual(Item.objects.get().name, "from-view")

    def test_one_client_keeps_to_one_worker_and_session(self) -> None:
        """Requests one after the other go to the HTTP worker that went idle
        last, so they share its session instead of one per worker."""
        app = self.server_thread.app
        assert app is not None
        pids = set()
        for _ in range(6):
            self.assertTrue(wait_for(lambda: app._idle.qsize() == len(app.http)))
            pids.add(get(f"{self.live_server_url}/asgi/create/").json()["pid"])
        self.assertEqual(len(pids), 1)

    def test_server_sent_events_stream(self) -> None:
        """A streaming response with async iteration arrives whole, event by event."""
        Item.objects.create(name="one")
        response = get(f"{self.live_server_url}/asgi/events/")
        self.assertEqual(response.headers["Content-Type"], "text/event-stream")
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
        self.assertEqual(events, [{"count": 1}] * 3)

    def test_websocket_consumer_with_database_sync_to_async(self) -> None:
        """An async JSON consumer writes through database_sync_to_async."""
        replies = ws_exchange(self.live_server_ws_url, 3, "ws")
        self.assertEqual([reply["count"] for reply in replies], [1, 2, 3])
        self.assertEqual(len({reply["pid"] for reply in replies}), 1)
        self.assertEqual(Item.objects.count(), 3)

    def test_sync_websocket_consumer(self) -> None:
        """A sync consumer's handlers run on the WebSocket worker."""
        Item.objects.create(name="one")
        with connect(f"{self.live_server_ws_url}/ws/count/") as websocket:
            websocket.send("how many?")
            self.assertEqual(websocket.recv(timeout=30), "1")

    def test_group_send_from_the_test_thread_reaches_consumers(self) -> None:
        """A test's group_send on the in-memory layer runs on the server's loop:
        delivered, and no cross-thread call that asyncio's debug mode refuses."""
        loop = self.server_thread.loop
        loop.call_soon_threadsafe(loop.set_debug, True)
        self.addCleanup(loop.call_soon_threadsafe, loop.set_debug, False)
        layer = get_channel_layer()
        with connect(f"{self.live_server_ws_url}/ws/group/") as websocket:
            wait_for(lambda: layer.groups.get("items"))
            for name in ("first", "second"):
                async_to_sync(layer.group_send)(
                    "items", {"type": "item.saved", "name": name}
                )
                self.assertEqual(json.loads(websocket.recv(timeout=10)), {"name": name})

    def test_static_files_are_served(self) -> None:
        """serve_static serves the finders' files, as Channels' class does."""
        response = get(f"{self.live_server_url}/static/testapp/hello.txt")
        self.assertEqual(response.status_code, 200)

    def test_accepted_connections_do_not_wait_for_delayed_acks(self) -> None:
        """The server's sockets have TCP_NODELAY: a response written in two
        parts (headers, body) does not wait for the client's delayed ACK."""
        with requests.Session() as client:
            client.get(f"{self.live_server_url}/asgi/items/")  # kept alive
            server = self.server_thread._server
            sockets = [
                protocol.transport.get_extra_info("socket")
                for protocol in server.server_state.connections
            ]
            self.assertTrue(sockets)
            for sock in sockets:
                self.assertEqual(
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1
                )

    def test_view_calling_its_own_server(self) -> None:
        """A sync view calling the server over HTTP gets the answer from
        another worker."""
        response = get(f"{self.live_server_url}/webhook/")
        self.assertEqual(response.json(), {"status": 200})

    def test_requests_beyond_the_workers_wait_rather_than_fail(self) -> None:
        """Twelve slow requests on four workers all succeed: none is refused."""
        url = f"{self.live_server_url}/asgi/slow/?seconds=0.1"
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda _: get(url).status_code, range(12)))
        self.assertEqual(codes, [200] * 12)

    def test_reset_closes_the_workers_sessions(self) -> None:
        """After a reset no worker session is left on the test database."""
        get(f"{self.live_server_url}/asgi/items/")
        ws_exchange(self.live_server_ws_url, 1, "ws")
        self.assertTrue(worker_sessions())
        self.reset_live_server()
        self.assertTrue(wait_for(lambda: worker_sessions() == []))


class LoadUnderBudget(ConnMaxAge):
    """24 HTTP clients and 8 WebSockets at once, under a budget of 6."""

    max_sessions: ClassVar[int | None] = BUDGET

    def test_http_and_websockets_within_the_budget(self) -> None:
        """Every request and message is answered; the sampler never sees more
        sessions than the budget (Guarded checks it after the class)."""
        url: str = self.live_server_url  # type: ignore[attr-defined]
        ws_url: str = self.live_server_ws_url  # type: ignore[attr-defined]
        connection.ensure_connection()  # the test thread's share of the budget
        start = threading.Barrier(HTTP_CLIENTS + WEBSOCKETS)

        def http_client(number: int) -> list[int]:
            start.wait(DEADLINE)
            with requests.Session() as session:
                return [
                    session.get(
                        f"{url}/asgi/create/?name=http-{number}"
                        if n % 2
                        else f"{url}/asgi/items/",
                        timeout=60,
                    ).status_code
                    for n in range(HTTP_REQUESTS)
                ]

        def ws_client(number: int) -> int:
            start.wait(DEADLINE)
            return len(ws_exchange(ws_url, MESSAGES, f"ws-{number}"))

        with ThreadPoolExecutor(HTTP_CLIENTS + WEBSOCKETS) as pool:
            http = [pool.submit(http_client, n) for n in range(HTTP_CLIENTS)]
            ws = [pool.submit(ws_client, n) for n in range(WEBSOCKETS)]
            codes = [code for future in http for code in future.result()]
            replies = [future.result() for future in ws]
        assert codes == [200] * HTTP_CLIENTS * HTTP_REQUESTS
        assert replies == [MESSAGES] * WEBSOCKETS
        assert Item.objects.count() == (
            HTTP_CLIENTS * HTTP_REQUESTS // 2 + WEBSOCKETS * MESSAGES
        )
        assert self.sampler.peak <= BUDGET, self.sampler.peak


class LoadWithConnMaxAge0Tests(LoadUnderBudget, ChannelsLiveServerTestCase):
    conn_max_age = 0


class LoadWithConnMaxAge600Tests(LoadUnderBudget, ChannelsLiveServerTestCase):
    conn_max_age = 600


@override_settings(ASGI_APPLICATION=None)
class PlainDjangoASGITests(Guarded, ASGILiveServerTestCase):
    max_sessions: ClassVar[int | None] = 3
    server_mode = "single"

    def test_django_asgi_application_without_channels(self) -> None:
        """Without ASGI_APPLICATION, Django's own ASGI handler is served (its
        WebSocket route is gone with Channels' router)."""
        Item.objects.create(name="plain")
        response = get(f"{self.live_server_url}/asgi/items/")
        self.assertEqual(response.status_code, 200, response.text[:2000])
        self.assertEqual(response.json()["count"], 1)
        with self.assertRaises(InvalidStatus):
            connect(f"{self.live_server_ws_url}/ws/count/", open_timeout=30)


class HypothesisASGITests(Guarded, HypothesisASGITestCase):
    max_sessions: ClassVar[int | None] = BUDGET
    previous_pids: ClassVar[set[int]] = set()

    @settings(max_examples=10, deadline=None, database=None)
    # PostgreSQL text cannot hold NUL, nor a URL a lone surrogate.
    @given(
        st.text(
            st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
            min_size=1,
            max_size=20,
        )
    )
    def test_examples_are_isolated_and_start_on_new_sessions(self, name: str) -> None:
        """Each example starts with an empty table and new worker sessions."""
        self.assertEqual(Item.objects.count(), 0)
        answer = requests.get(
            f"{self.live_server_url}/asgi/create/", params={"name": name}, timeout=30
        )
        pid = answer.json()["pid"]
        self.assertNotIn(pid, type(self).previous_pids)
        type(self).previous_pids.add(pid)
        self.assertEqual(Item.objects.get().name, name)


class ConfigurationTests(Guarded, ChannelsLiveServerTestCase):
    max_sessions: ClassVar[int | None] = 4

    def test_websocket_workers_come_out_of_the_budget(self) -> None:
        """The HTTP workers leave room for the WebSocket worker and the test."""
        config = resolve(type(self), websockets=True)
        self.assertEqual((config.workers, config.websocket_workers), (2, 1))

    def test_a_server_thread_class_of_our_own_is_used_or_refused(self) -> None:
        """server_thread_class picks the ASGI thread; a WSGI one is refused,
        not ignored."""

        class Thread(SafeASGILiveServerThread):
            pass

        class Served(ASGILiveServerTestCase):
            server_thread_class: type[LiveServerThread] = Thread

        config = resolve(Served, websockets=True)
        thread = Served._safelive_thread(None, config)
        self.assertIs(type(thread), Thread)
        Served.server_thread_class = LiveServerThread
        with self.assertRaisesMessage(
            ImproperlyConfigured, "server_thread_class is LiveServerThread"
        ):
            Served._safelive_thread(None, config)

    def test_a_budget_too_small_says_what_to_change(self) -> None:
        """WORKERS + WEBSOCKET_WORKERS + 1 above the budget is refused, naming
        both settings."""

        class TooSmall:
            max_sessions = 4
            server_workers = 3
            websocket_workers = 1

        with self.assertRaisesMessage(
            ImproperlyConfigured,
            "with 3 worker(s) and 1 WebSocket worker(s): it needs at least 5",
        ) as raised:
            resolve(TooSmall, websockets=True)
        self.assertIn("lower WORKERS or WEBSOCKET_WORKERS", str(raised.exception))


class StuckRequestTests(Guarded, ASGILiveServerTestCase):
    max_sessions: ClassVar[int | None] = BUDGET
    drain_timeout = 0.5

    def test_a_request_running_past_the_drain_timeout_is_named(self) -> None:
        """A reset that cannot drain raises RequestStuck naming the request and
        its worker, and ends its session: the view's next query fails."""
        codes: list[int] = []
        client = threading.Thread(
            target=lambda: codes.append(
                get(f"{self.live_server_url}/asgi/slow/?seconds=2").status_code
            )
        )
        client.start()
        self.addCleanup(client.join)
        wait_for(lambda: self.server_thread.in_flight())
        with self.assertRaises(RequestStuck) as raised:
            self.reset_live_server()
        message = str(raised.exception)
        self.assertIn("GET /asgi/slow/", message)
        self.assertIn("safelive-asgi-worker-", message)
        client.join()
        self.assertEqual(codes, [500])


class StartFailureTests(TransactionTestCase):
    def test_a_port_in_use_fails_cleanly(self) -> None:
        """A taken port is the error setUpClass raises; no worker thread or
        listening socket is left behind."""

        class Served(ASGILiveServerTestCase):
            def test_nothing(self) -> None:
                """Never runs: the test drives the class by hand."""

        threads = set(threading.enumerate())
        with socket.socket() as taken:
            taken.bind(("localhost", 0))
            taken.listen()
            Served.port = taken.getsockname()[1]
            with self.assertRaises(OSError):
                Served.setUpClass()
            Served.doClassCleanups()
        self.assertEqual(Served.tearDown_exceptions, [])  # type: ignore[attr-defined]
        self.assertTrue(wait_for(lambda: set(threading.enumerate()) <= threads))


class StopTests(TransactionTestCase):
    def test_stopping_with_clients_still_connected(self) -> None:
        """Stopping with a keep-alive client idle and a WebSocket open closes
        both (the WebSocket with 1012, as uvicorn's own shutdown does) and
        leaves no thread and no session behind."""

        class Served(ChannelsLiveServerTestCase):
            def test_nothing(self) -> None:
                """Never runs: the test drives the class by hand."""

        threads = set(threading.enumerate())
        Served.setUpClass()
        try:
            address = (Served.host, Served.server_thread.port)
            with socket.create_connection(address, timeout=DEADLINE) as idle:
                idle.sendall(b"GET /asgi/items/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
                answer = idle.recv(65536)
                with connect(f"{Served.live_server_ws_url}/ws/count/") as websocket:
                    websocket.send("how many?")
                    self.assertEqual(websocket.recv(timeout=DEADLINE), "0")
                    Served.tearDownClass()
                    Served.doClassCleanups()
                    with self.assertRaises(ConnectionClosed) as closed:
                        websocket.recv(timeout=DEADLINE)
                # Whatever is left of the answer, then the end of the stream.
                while idle.recv(65536):
                    pass
        finally:
            Served.doClassCleanups()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        assert closed.exception.rcvd is not None
        self.assertEqual(closed.exception.rcvd.code, 1012)
        self.assertEqual(Served.tearDown_exceptions, [])  # type: ignore[attr-defined]
        self.assertTrue(wait_for(lambda: set(threading.enumerate()) <= threads))
        self.assertTrue(wait_for(lambda: not worker_sessions()))


class BudgetTests(ASGILiveServerTestCase):
    server_mode = "single"
    max_sessions = 3  # the HTTP worker, the WebSocket worker, the test thread

    def test_sessions_past_the_budget_are_refused_and_named(self) -> None:
        """Threads a view starts run past the budget: refused, and the error
        names the ASGI worker and the request that holds a session."""
        connection.ensure_connection()
        response = get(f"{self.live_server_url}/spawn/?threads=2")
        self.assertEqual(response.status_code, 500)
        self.assertIn("SessionBudgetExceeded", response.json()["errors"][0])
        with self.assertRaises(SessionBudgetExceeded) as raised:
            self.reset_live_server()
        message = str(raised.exception)
        self.assertIn("budget of 3", message)
        self.assertIn(
            "server worker 'safelive-asgi-worker-1', opened while serving GET /spawn/",
            message,
        )


def test_worker_shutdown_cancels_what_has_not_started() -> None:
    """Worker.shutdown(cancel_futures=True) lets the running call finish and
    cancels the queued ones, as concurrent.futures executors do."""
    release = threading.Event()
    worker = Worker("safelive-test-worker", lambda: None)
    running = worker.submit(release.wait, 30)
    queued = worker.submit(lambda: "never")
    assert wait_for(running.running)
    worker.shutdown(wait=False, cancel_futures=True)
    release.set()
    worker.thread.join(30)
    assert not worker.thread.is_alive()
    assert running.result() is True
    assert queued.cancelled()


class SingleModeSelfCallTests(Guarded, ASGILiveServerTestCase):
    max_sessions: ClassVar[int | None] = 3
    server_mode = "single"

    def test_a_call_to_its_own_server_is_refused_not_deadlocked(self) -> None:
        """The only HTTP worker calling its server is refused at once (it
        would wait for itself), and the next reset raises it."""
        response = get(f"{self.live_server_url}/webhook/?timeout=30")
        self.assertEqual(response.status_code, 502)
        self.assertIn("django-safelive refused a connection", response.json()["error"])
        with self.assertRaises(SelfCallInSingleMode):
            self.reset_live_server()
        self.reset_live_server()  # raised once
