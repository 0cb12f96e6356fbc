"""The bounded server: queueing, concurrency limits, keep-alive, reuse of sessions."""

from __future__ import annotations

import re
import socket
import struct
import threading
import unittest

import pytest
import requests
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test.testcases import LiveServerThread

from django_safelive import (
    LiveServerTestCase,
    SafeLiveServerThread,
    StaticLiveServerTestCase,
)
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.server import BoundedWSGIServer, SafeRequestHandler
from tests import _pg
from tests._clients import AUTH, concurrently, get
from tests._waiting import DEADLINE, wait_for
from tests.testapp.models import Item
from tests.testapp.views import Concurrency


class SingleModeTests(LiveServerTestCase):
    server_mode = "single"

    def setUp(self) -> None:
        Concurrency.peak = 0

    def test_one_request_at_a_time(self) -> None:
        """Six concurrent clients all get answers, but app code runs one at a time."""
        codes = concurrently(f"{self.live_server_url}/concurrent/?seconds=0.1", 6)
        self.assertEqual(codes, [200] * 6)
        self.assertEqual(Concurrency.peak, 1)

    def test_idle_socket_does_not_block_the_worker(self) -> None:
        """A connection that never sends a byte does not hold the only worker."""
        with socket.create_connection((self.host, self.server_thread.port)) as idle:
            response = get(f"{self.live_server_url}/items/", timeout=5)
            self.assertEqual(response.status_code, 200)
            idle.settimeout(0.1)
            with self.assertRaises(TimeoutError):
                idle.recv(1)

    def test_keep_alive_without_holding_the_worker(self) -> None:
        """A keep-alive client reuses its connection, and while it idles between
        requests the only worker serves other clients."""
        url = f"{self.live_server_url}/items/"
        with requests.Session() as kept:
            self.assertEqual(kept.get(url, headers=AUTH).status_code, 200)
            # The socket idles in keep-alive: another client is served at once.
            self.assertEqual(get(url, timeout=5).status_code, 200)
            for _ in range(3):
                response = kept.get(url, headers=AUTH)
                self.assertEqual(response.status_code, 200)
                self.assertNotEqual(response.headers.get("Connection"), "close")
            pools = kept.get_adapter(url).poolmanager.pools  # type: ignore[attr-defined]
            opened = [pools[key].num_connections for key in pools.keys()]  # noqa: SIM118
            self.assertEqual(opened, [1])

    def test_pipelined_requests_answered_in_order(self) -> None:
        """Two requests sent at once on one connection get two answers, in order."""
        request = (
            f"GET /items/{{}}/ HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: {AUTH['Authorization']}\r\n\r\n"
        )
        item = Item.objects.create(name="first", price=1)
        with socket.create_connection((self.host, self.server_thread.port)) as sock:
            sock.sendall((request.format(item.pk) + request.format(0)).encode())
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        self.assertEqual(statuses, [b"200", b"404"], answer)

    def test_worker_reuses_its_session(self) -> None:
        """With CONN_MAX_AGE > 0 a worker keeps one session across requests."""
        first = get(f"{self.live_server_url}/session/").json()
        second = get(f"{self.live_server_url}/session/").json()
        self.assertEqual(first["pid"], second["pid"])
        self.assertRegex(first["application_name"], r"safelive:\d+\.\d+:worker$")

    def test_reset_closes_worker_sessions(self) -> None:
        """reset_live_server() closes the worker's session: its backend leaves
        pg_stat_activity."""
        get(f"{self.live_server_url}/session/")
        self.assertEqual(len(_pg.worker_sessions()), 1)
        self.reset_live_server()
        self.assertTrue(wait_for(lambda: _pg.worker_sessions() == []))


class PoolModeTests(LiveServerTestCase):
    server_mode = "pool"
    server_workers = 3
    max_sessions = 4

    def setUp(self) -> None:
        Concurrency.peak = 0

    def test_pool_bounds_concurrency_and_sessions(self) -> None:
        """Twelve concurrent clients run on exactly three workers and three sessions."""
        codes = concurrently(f"{self.live_server_url}/concurrent/?seconds=0.3", 12)
        self.assertEqual(codes, [200] * 12)
        self.assertEqual(Concurrency.peak, 3)
        self.assertEqual(len(_pg.worker_sessions()), 3)

    def test_one_client_keeps_to_one_worker_and_session(self) -> None:
        """Requests one after the other go to the worker that went idle last, so
        they share its session instead of opening one per worker."""
        httpd = self.server_thread.httpd
        pids = set()
        for _ in range(8):
            self.assertTrue(wait_for(lambda: len(httpd._idle) == 3))
            pids.add(get(f"{self.live_server_url}/session/").json()["pid"])
        self.assertEqual(len(pids), 1)

    def test_many_keep_alive_clients_stay_within_the_pool(self) -> None:
        """Twenty clients that never close their sessions cost at most three."""
        clients = [requests.Session() for _ in range(20)]
        try:
            for client in clients:
                response = client.get(f"{self.live_server_url}/items/", headers=AUTH)
                self.assertEqual(response.status_code, 200)
            self.assertLessEqual(len(_pg.worker_sessions()), 3)
        finally:
            for client in clients:
                client.close()

    def test_data_written_by_the_server_is_visible(self) -> None:
        """A POST through the server commits, and the test thread reads it."""
        with requests.Session() as client:
            response = client.post(
                f"{self.live_server_url}/items/",
                json={"name": "widget", "price": 3},
                headers=AUTH,
            )
        self.assertEqual(response.status_code, 201)
        self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["widget"])


def _raw_request(path: str, host: str, extra: str = "", body: str = "") -> bytes:
    return (
        f"{path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {AUTH['Authorization']}\r\n{extra}\r\n{body}"
    ).encode()


def _read_answer(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (within the deadline)."""
    sock.settimeout(DEADLINE)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def _read_response(sock: socket.socket) -> bytes:
    """Read one response (with a Content-Length) from a kept-alive connection."""
    sock.settimeout(DEADLINE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        body += sock.recv(65536)
    return answer


def _segments_in(sock: socket.socket) -> int:
    """The TCP segments `sock` has received (Linux's ``tcpi_segs_in``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192)
    return int(struct.unpack_from("I", info, 140)[0])


class WireTests(LiveServerTestCase):
    """What goes over the socket: packets, 100-continue, errors, late requests."""

    def _connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.server_thread.port))

    @unittest.skipUnless(hasattr(socket, "TCP_INFO"), "counted by Linux's TCP_INFO")
    def test_response_arrives_in_one_segment(self) -> None:
        """Status line, headers and a small body leave in one TCP segment, not
        one per piece wsgiref writes (five without Nagle)."""
        with self._connect() as sock:
            request = _raw_request("GET /items/", self.host)
            sock.sendall(request)  # the connection's first exchange, not counted
            self.assertIn(b"HTTP/1.1 200", _read_response(sock))
            before = _segments_in(sock)
            sock.sendall(request)
            self.assertIn(b"HTTP/1.1 200", _read_response(sock))
            # The answer, and at most a bare ACK of the request.
            self.assertLessEqual(_segments_in(sock) - before, 2)

    def test_expect_100_continue(self) -> None:
        """A client that waits for ``100 Continue`` before its body gets it, and
        then its answer."""
        body = '{"name": "continued", "price": 2}'
        extra = (
            "Content-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        )
        with self._connect() as sock:
            sock.sendall(_raw_request("POST /items/", self.host, extra))
            sock.settimeout(DEADLINE)
            interim = b""
            while not interim.endswith(b"\r\n\r\n"):
                interim += sock.recv(1)
            self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(body.encode())
            self.assertIn(b"HTTP/1.1 201", _read_answer(sock))
        self.assertTrue(Item.objects.filter(name="continued").exists())

    def test_refused_request_answered_before_close(self) -> None:
        """A request refused while it is read gets its error before the socket
        closes."""
        with self._connect() as sock:
            # More headers than http.server accepts.
            headers = "".join(f"X-Header-{n}: {n}\r\n" for n in range(101))
            sock.sendall(_raw_request("GET /items/", self.host, headers))
            self.assertRegex(_read_answer(sock), rb"^HTTP/1\.1 431 ")

    def test_request_sent_after_the_connection_idled(self) -> None:
        """A connection that sends nothing at first, then a request, is answered."""
        with self._connect() as late:
            # Served after `late` was accepted: it waits in the idle watcher now.
            self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)
            request = _raw_request("GET /items/", self.host, "Connection: close\r\n")
            late.sendall(request)
            self.assertIn(b"HTTP/1.1 200", _read_answer(late))


class StaticTests(StaticLiveServerTestCase):
    def test_static_file_served(self) -> None:
        """The static files handler still serves app static files."""
        response = get(f"{self.live_server_url}/static/testapp/hello.txt")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.text, "hello from static\n")
        self.assertIs(self.static_handler, StaticFilesHandler)
        self.assertIsInstance(self.server_thread, SafeLiveServerThread)


class CustomThread(LiveServerThread):
    """A user's own subclass of Django's thread, as some suites have."""


class CustomThreadTests(LiveServerTestCase):
    server_thread_class = CustomThread

    def test_custom_thread_class_still_works(self) -> None:
        """An existing server_thread_class keeps working after the import swap."""
        self.assertIsInstance(self.server_thread, CustomThread)
        self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CompatibilityTests(LiveServerTestCase):
    host = "127.0.0.1"
    port = free_port()
    available_apps = ["tests.testapp", "django.contrib.staticfiles"]
    serialized_rollback = True
    databases = {"default"}
    set_up_class_ran = False

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.set_up_class_ran = True

    @classmethod
    def tearDownClass(cls) -> None:
        cls.set_up_class_ran = False
        super().tearDownClass()

    def test_attributes_behave_like_djangos(self) -> None:
        """host, port, live_server_url and setUpClass overrides work as in Django."""
        self.assertTrue(self.set_up_class_ran)
        self.assertEqual(self.server_thread.port, self.port)
        self.assertEqual(self.live_server_url, f"http://127.0.0.1:{self.port}")
        self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)


class _OnOnePort(LiveServerTestCase):
    """A class on a fixed port whose client stays idle in keep-alive."""

    __test__ = False  # run by the test below, twice
    host = "127.0.0.1"
    port = 0  # set by the test
    clients: list[requests.Session] = []

    def test_leaves_a_client_idle(self) -> None:
        """Read one answer on a keep-alive connection and leave it open."""
        client = requests.Session()
        self.clients.append(client)
        response = client.get(f"{self.live_server_url}/items/", headers=AUTH)
        self.assertEqual(response.status_code, 200)


@pytest.mark.django_db(transaction=True)
def test_fixed_port_free_right_after_the_server_stops() -> None:
    """A server on a fixed port, stopped with a client idle in keep-alive,
    leaves the port free: the next class (the same suite run again, with
    --liveserver HOST:PORT) binds it at once."""
    _OnOnePort.port = free_port()
    try:
        for run in range(2):
            result = unittest.TestResult()
            unittest.TestSuite([_OnOnePort("test_leaves_a_client_idle")]).run(result)
            assert (run, result.errors, result.failures) == (run, [], [])
            assert result.testsRun == 1
    finally:
        for client in _OnOnePort.clients:
            client.close()


def test_shutdown_ends_a_loop_that_never_polls() -> None:
    """A loop waiting with no poll interval still ends on ``shutdown()``: it
    is woken, where socketserver's would wait for its next poll (forever,
    here; every 0.5 s in Django's server, at each test class's end). Twice:
    a server can serve again after a shutdown, and stop again."""
    server = BoundedWSGIServer(
        ("127.0.0.1", 0), SafeRequestHandler, workers=1, account=ServerAccount(1)
    )
    try:
        for run in range(2):
            loop = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": None}
            )
            stopper = threading.Thread(target=server.shutdown, daemon=True)
            loop.daemon = True
            loop.start()
            stopper.start()
            stopper.join(DEADLINE)
            loop.join(DEADLINE)
            assert (run, stopper.is_alive(), loop.is_alive()) == (run, False, False)
    finally:
        server.server_close()
        assert server.stop_workers(DEADLINE) is None
