"""Faults: views, clients and the database misbehaving under a bounded live server.

Every class runs its live server under a small budget while a sampler counts the
test database's sessions in pg_stat_activity. When the server has stopped, each
class checks that the peak stayed within the budget and that no server session,
thread or socket is left (the conditions for the test database to be flushed and
dropped without "being accessed by other users"); ResourceWarning is an error.
The real drop is checked where it is most at risk, in subprocess scenarios on
databases of their own: a hung request and an abandoned slow request
(tests/test_root_causes.py) and a PostgreSQL restart (here).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

from django.db import connection

from django_safelive import LiveServerTestCase, SelfCallInSingleMode
from tests import _pg, test_root_causes
from tests._clients import AUTH, concurrently, get
from tests._cluster import Cluster
from tests._sampler import Sampler, connect, count_sessions
from tests._waiting import wait_for
from tests.test_root_causes import database_exists
from tests.testapp.models import Item

# Figures the reliability tests measured, for the terminal summary and the docs.
FIGURES: list[str] = []


def record(section: str, **values: object) -> None:
    """Keep one line of figures for pytest's terminal summary."""
    FIGURES.append(
        f"{section}: " + ", ".join(f"{key} {value}" for key, value in values.items())
    )


def open_sockets() -> frozenset[str] | None:
    """The sockets this process has open (Linux: ``socket:[inode]``), else None."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    found = set()
    for fd in list(fds.iterdir()):
        # The listing's own descriptor is gone by the time it is read.
        with contextlib.suppress(FileNotFoundError):
            target = os.readlink(fd)
            if target.startswith("socket:"):
                found.add(target)
    return frozenset(found)


def sockets_opened_since(before: frozenset[str] | None) -> set[str]:
    """Sockets open now that were not open at `before`, but the test thread's
    own database session (Django reopens it between tests). Another test's
    session-scoped server may close sockets meanwhile: those do not count."""
    now = open_sockets()
    if now is None or before is None:
        return set()
    connection.ensure_connection()
    raw = connection.connection
    own = os.readlink(f"/proc/self/fd/{raw.fileno()}") if raw is not None else ""
    return set(now - before - {own})


def server_threads(before: frozenset[threading.Thread] = frozenset()) -> list[str]:
    """The names of django-safelive's threads alive now but not in `before`
    (a session-scoped ``safe_live_server`` of another test may be running)."""
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("safelive-") and t not in before
    ]


class Guarded:
    """Mixin for a LiveServerTestCase: the bound held, and nothing is left after.

    Cleanups registered before the server starts run after it has stopped.
    """

    max_sessions: ClassVar[int | None]
    sampler: ClassVar[Sampler]
    faults: ClassVar[int]

    @classmethod
    def setUpClass(cls) -> None:
        cls.faults = 0
        connection.ensure_connection()
        sampler = Sampler(connection.settings_dict["NAME"])
        cls.sampler = sampler.__enter__()
        cls.addClassCleanup(sampler.__exit__, None, None, None)  # type: ignore[attr-defined]
        cls.addClassCleanup(  # type: ignore[attr-defined]
            cls.assert_nothing_left, open_sockets(), frozenset(threading.enumerate())
        )
        super().setUpClass()  # type: ignore[misc]

    @classmethod
    def assert_nothing_left(
        cls,
        sockets_before: frozenset[str] | None,
        threads_before: frozenset[threading.Thread],
    ) -> None:
        """After the server stopped: within the budget, no session, thread, socket."""
        gc.collect()  # unclosed sockets warn now, in this class, not later
        connection.ensure_connection()
        budget = cls.max_sessions
        assert budget is not None
        record(
            cls.__name__,
            faults=cls.faults,
            sessions_peak=f"{cls.sampler.peak} (budget {budget})",
        )
        assert 1 <= cls.sampler.peak <= budget, cls.sampler.peak
        assert _pg.sessions() == [], _pg.sessions()
        assert server_threads(threads_before) == [], server_threads(threads_before)
        assert sockets_opened_since(sockets_before) == set()

    def fault(self, count: int = 1) -> None:
        """Count faults injected, for the figures."""
        type(self).faults += count


# -- 1. views that misbehave with transactions ----------------------------------


class ViewFaultTests(Guarded, LiveServerTestCase):
    """Single mode, so the request after each fault runs on the same worker."""

    server_mode = "single"
    max_sessions = 2

    def assert_recovers(self) -> None:
        """The next requests succeed, nothing was committed, no session idles
        in a transaction (which would block the flush)."""
        for _ in range(3):
            self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)
        self.assertEqual(Item.objects.count(), 0)
        self.assertEqual(_pg.sessions("%:worker"), _pg.worker_sessions())
        states = [state for _, _, state in _pg.worker_sessions()]
        self.assertNotIn("idle in transaction", states)

    def test_view_raises_mid_transaction(self) -> None:
        """A view raising inside atomic(): a 500, rolled back, the worker goes on."""
        self.fault()
        response = get(f"{self.live_server_url}/faults/raise-in-transaction/")
        self.assertEqual(response.status_code, 500)
        self.assert_recovers()

    def test_view_leaves_an_atomic_block_open(self) -> None:
        """A view never leaving atomic(): its write is dropped, the worker goes on."""
        self.fault()
        response = get(f"{self.live_server_url}/faults/leave-atomic-open/")
        self.assertEqual(response.json(), {"in_atomic_block": True})
        self.assert_recovers()

    def test_view_turns_autocommit_off(self) -> None:
        """A view that turns autocommit off and never commits: nothing is kept."""
        self.fault()
        response = get(f"{self.live_server_url}/faults/leave-autocommit-off/")
        self.assertEqual(response.json(), {"autocommit": False})
        self.assert_recovers()


# -- 2. clients that misbehave ----------------------------------------------------


def exchange(port: int, data: bytes, *, reset: bool = False) -> bytes:
    """Send raw bytes to the server, then end the sending side (as a client with
    nothing more to ask), and read the answer until the server closes.

    With `reset`, return after the first bytes of the answer and close with a
    TCP reset, as a client that crashed would.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        if not reset:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if reset:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                break
    return answer


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer.

    To a request line it cannot parse, http.server answers as HTTP/0.9 would:
    the error page alone, without a status line.
    """
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer) or re.search(
        rb"Error code: (\d{3})", answer
    )
    assert found, answer[:200]
    return int(found.group(1))


def request_bytes(
    method: str, path: str, *, body: bytes = b"", **headers: str
) -> bytes:
    """A raw HTTP/1.1 request with the test token."""
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: localhost",
        f"Authorization: {AUTH['Authorization']}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ClientFaultTests(Guarded, LiveServerTestCase):
    server_mode = "pool"
    server_workers = 2
    max_sessions = 3

    @property
    def server_port(self) -> int:
        return int(self.server_thread.port)

    def assert_still_serving(self) -> None:
        """Every worker is alive and answers; nothing is left running."""
        self.assertTrue(wait_for(lambda: not self.server_thread.httpd.in_flight()))
        for _ in range(4):
            self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)

    def test_disconnect_mid_request(self) -> None:
        """Clients that hang up halfway through their request cost nothing."""
        partial = [
            b"GET /items/ HT",
            request_bytes("GET", "/items/")[:-10],
            request_bytes("POST", "/items/", body=b'{"na', Content_Length="40"),
        ]
        for data in partial * 3:
            self.fault()
            with socket.create_connection(("127.0.0.1", self.server_port)) as sock:
                sock.sendall(data)
        self.assert_still_serving()

    def test_disconnect_mid_response(self) -> None:
        """Clients that reset the connection mid-stream don't kill a worker."""
        for _ in range(4):
            self.fault()
            answer = exchange(
                self.server_port,
                request_bytes("GET", "/stream/?chunks=400"),
                reset=True,
            )
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:100])
        self.assert_still_serving()

    def test_malformed_requests(self) -> None:
        """Garbage request lines and oversized headers get a 4xx, not a worker."""
        tls_client_hello = bytes.fromhex("16030100a5010000a10303") + b"\0" * 32
        cases = [
            (b"GARBAGE\r\n\r\n", 400),
            (tls_client_hello + b"\r\n\r\n", 400),
            (b"GET /items/ HTTP/9.9\r\n\r\n", 505),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
            (request_bytes("GET", "/items/", X_Big="b" * 70_000), 431),
            (request_bytes("GET", "/items/", X_Many="v\r\nX-Many: v" * 100), 431),
        ]
        for data, status in cases:
            with self.subTest(request=data[:30]):
                self.fault()
                self.assertEqual(status_of(exchange(self.server_port, data)), status)
        self.assert_still_serving()

    def test_body_longer_than_content_length(self) -> None:
        """Bytes past Content-Length are the connection's next request, as HTTP/1.1
        keep-alive and Django's own server have it: answered second, never read
        as part of the first request's body."""
        second = request_bytes(
            "POST", "/items/", body=b'{"name": "second"}', Content_Length="18"
        )
        self.fault()
        answer = exchange(
            self.server_port,
            request_bytes("POST", "/items/", body=b"{}" + second, Content_Length="2"),
        )
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        self.assertEqual(statuses, [b"400", b"201"], answer)
        self.assert_still_serving()
        self.assertEqual(Item.objects.filter(name="second").count(), 1)


# -- 4. a view that calls back into the live server ---------------------------------


class SelfCallPoolTests(Guarded, LiveServerTestCase):
    server_mode = "pool"
    server_workers = 2
    max_sessions = 3

    def test_webhook_to_itself_works(self) -> None:
        """In pool mode a view calling the live server is answered by another worker."""
        self.fault()
        response = get(f"{self.live_server_url}/webhook/")
        self.assertEqual(response.json(), {"status": 200})


class SelfCallSingleTests(Guarded, LiveServerTestCase):
    server_mode = "single"
    max_sessions = 2

    def test_webhook_to_itself_fails_fast(self) -> None:
        """In single mode the call is refused at once; the test fails, saying why."""
        self.fault()
        # Without the check, the view's call would wait out its 20 s timeout.
        response = get(f"{self.live_server_url}/webhook/?timeout=20", timeout=10)
        self.assertEqual(response.status_code, 502)
        self.assertIn("django-safelive refused a connection", response.text)
        self.assertIn("with one worker that request would wait", response.text)
        with self.assertRaises(SelfCallInSingleMode) as caught:
            self.reset_live_server()
        message = str(caught.exception)
        self.assertIn("while serving GET /webhook/", message)
        self.assertIn("Run the test in mode 'pool'", message)
        # Reported once: the next reset is clean.
        self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)
        self.reset_live_server()


# -- 5. the database ends the server's sessions -------------------------------------


def terminate_worker_sessions() -> int:
    """pg_terminate_backend every live server worker's session; how many."""
    pids = [pid for pid, _, _ in _pg.worker_sessions()]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", [pids]
        )
    assert wait_for(lambda: not _pg.worker_sessions())
    return len(pids)


def slow_view_sleeping() -> bool:
    """Whether a worker's session ran the slow view's query and sits idle."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT 1 FROM pg_stat_activity
            WHERE datname = current_database()
              AND backend_type = 'client backend'
              AND application_name LIKE '%%safelive:%%:worker'
              AND state = 'idle' AND query LIKE '%%testapp_item%%'
            """
        )
        return cursor.fetchone() is not None


class TerminatedBackendTests(Guarded, LiveServerTestCase):
    server_mode = "pool"
    server_workers = 2
    max_sessions = 3

    def statuses(self, count: int) -> list[int]:
        """Status codes of `count` sequential requests touching the database."""
        return [get(f"{self.live_server_url}/items/").status_code for _ in range(count)]

    def test_terminated_mid_request_then_recovers(self) -> None:
        """Backends killed under the workers: at most one 500 each, then all 200.

        Requests one after the other may all go to one worker; two slow ones at
        once take both."""
        slow: list[int] = []
        caller = threading.Thread(
            target=lambda: slow.append(
                get(f"{self.live_server_url}/slow/?seconds=1").status_code
            )
        )
        caller.start()
        # Its session is set up and its query done: it sleeps, idle (ended
        # while it still connects, the slow request itself would fail).
        self.assertTrue(wait_for(slow_view_sleeping))
        self.statuses(4)  # both workers hold a session
        self.fault(terminate_worker_sessions())
        caller.join()
        both = f"{self.live_server_url}/slow/?seconds=0.2"
        statuses = self.statuses(6) + concurrently(both, 2)
        self.assertLessEqual(statuses.count(500), 2, statuses)
        self.assertEqual(concurrently(both, 2) + self.statuses(6), [200] * 8)
        self.assertEqual(slow, [200])

    def test_health_checks_hide_the_termination(self) -> None:
        """With CONN_HEALTH_CHECKS, not even one request fails after the kill."""
        settings_dict: dict[str, Any] = connection.settings_dict  # shared by workers
        before = settings_dict["CONN_HEALTH_CHECKS"]
        settings_dict["CONN_HEALTH_CHECKS"] = True
        try:
            self.statuses(4)
            self.fault(terminate_worker_sessions())
            self.assertEqual(self.statuses(8), [200] * 8)
        finally:
            settings_dict["CONN_HEALTH_CHECKS"] = before


class ReconnectingSampler(Sampler):
    """A sampler whose own session survives the server restarting under it."""

    def __init__(
        self, datname: str, host: str, port: int, prefix: bool = False
    ) -> None:
        super().__init__(datname, host, port, prefix)
        self._address = (host, port)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                count = count_sessions(self._conn, self.datname, self.prefix)
            except Exception:  # the driver's OperationalError: the server restarts
                with contextlib.suppress(Exception):
                    self._conn.close()
                    self._conn = connect(*self._address)
                time.sleep(0.05)
                continue
            self.peak = max(self.peak, count)
            self.samples += 1
            time.sleep(0.005)


class RestartableCluster(Cluster):
    """A throwaway cluster, with the command that restarts it."""

    def restart_command(self) -> list[str]:
        command = [
            str(self._bindir / "pg_ctl"), "-D", str(self._data),
            "-l", str(self._dir / "log"), "-m", "fast", "-w", "restart",
        ]  # fmt: skip
        return (
            ["runuser", "-u", "postgres", "--", *command]
            if os.geteuid() == 0
            else command
        )


def test_postgresql_restart_mid_suite() -> None:
    """A restart mid-test: requests recover, the bound holds, the database drops."""
    cluster = RestartableCluster(max_connections=20)
    cluster.start()
    try:
        # The usual sampler's own session would end with the restart.
        with mock.patch.object(test_root_causes, "Sampler", ReconnectingSampler):
            outcome = test_root_causes.run(
                "restart",
                "safelive",
                cluster.host,
                cluster.port,
                env={"SCENARIO_RESTART": json.dumps(cluster.restart_command())},
            )
        exists = database_exists(outcome.datname, cluster.host, cluster.port)
    finally:
        cluster.stop()
    assert outcome.returncode == 0, outcome.output
    assert outcome.value("failed") <= 2
    assert 1 <= outcome.peak <= 3, outcome.output
    assert "being accessed by other users" not in outcome.output
    assert not exists
    record(
        "PostgreSQL restart",
        requests_failed=outcome.value("failed"),
        sessions_peak=outcome.peak,
    )


def test_fault_classes_leave_a_database_that_drops() -> None:
    """The fault classes above, run again in a subprocess on a database of their
    own, pass, and Django then drops that database without "other users"."""
    datname = f"test_safelive_faults_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "SAFELIVE_TEST_DB_NAME": datname}
    env.pop("PYTEST_XDIST_WORKER", None)
    classes = "ViewFaultTests or ClientFaultTests or SelfCall or TerminatedBackendTests"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_faults.py", "-k", classes],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"\b1[0-9] passed\b", output), output
    assert "being accessed by other users" not in output
    assert not database_exists(datname)
