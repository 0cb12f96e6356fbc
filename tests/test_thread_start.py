"""Live-server threads that die before they run: replaced, or a clear error.

On Python 3.10 and 3.11 under a tracer (coverage), a thread that starts while
another installs a tracer can die in its bootstrap, before it runs (CPython
gh-98257). These tests make chosen threads die at that point, with a tracer
that raises on the thread's first call, as the real failure does, on every
Python.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import unittest
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from django.db import connections

from django_safelive import ASGILiveServerTestCase, LiveServerTestCase
from django_safelive._core.exceptions import ThreadDidNotStart
from django_safelive._core.server import SafeLiveServerThread
from django_safelive._core.threads import ATTEMPTS
from tests._clients import concurrently, get
from tests._waiting import DEADLINE, wait_for
from tests.testapp.views import Concurrency

_MESSAGE = "Cannot install a trace function (simulated, as in CPython gh-98257)"


@contextlib.contextmanager
def dying_before_run(
    dies: Callable[[threading.Thread], bool], times: int
) -> Iterator[list[str]]:
    """The next `times` threads for which `dies` is true die before they run;
    yields the names of those that did."""
    died: list[str] = []
    lock = threading.Lock()
    left = times

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal left
        sys.settrace(None)  # the thread's first call: trace nothing after it
        thread = threading.current_thread()
        with lock:
            if not left or not dies(thread):
                return
            left -= 1
        raise RuntimeError(_MESSAGE)

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if str(args.exc_value) == _MESSAGE and args.thread is not None:
            died.append(args.thread.name)
        else:
            previous_hook(args)

    previous_trace, previous_hook = threading.gettrace(), threading.excepthook
    threading.settrace(trace)
    threading.excepthook = excepthook
    try:
        yield died
    finally:
        threading.settrace(previous_trace)
        threading.excepthook = previous_hook


def named(name: str) -> Callable[[threading.Thread], bool]:
    return lambda thread: thread.name == name


def _run(case: unittest.TestCase) -> unittest.TestResult:
    """Run `case` (its class set up and torn down) in a thread, and fail
    rather than wait past the deadline."""
    result = unittest.TestResult()
    runner = threading.Thread(
        target=unittest.TestSuite([case]).run, args=(result,), daemon=True
    )
    runner.start()
    runner.join(DEADLINE * 2)
    assert not runner.is_alive(), "the test case is still running"
    return result


class _Served(LiveServerTestCase):
    __test__ = False  # run by the tests below
    server_workers = 3
    max_sessions = 4

    def test_serves(self) -> None:
        """Three slow requests run at once, on the three workers, and a client
        that connects and waits before sending is answered."""
        Concurrency.peak = 0
        url = f"{self.live_server_url}/concurrent/?seconds=0.3"
        self.assertEqual(concurrently(url, 3, timeout=DEADLINE), [200] * 3)
        self.assertEqual(Concurrency.peak, 3)
        watched = self.server_thread.httpd._watcher._selector.get_map
        address = (self.host, self.server_thread.port)
        with socket.create_connection(address, timeout=DEADLINE) as waiting:
            # Idle past the first wait, it is the idle watcher's (beside the
            # watcher's own wake-up socket).
            self.assertTrue(wait_for(lambda: len(watched()) == 2))
            waiting.sendall(
                b"GET /concurrent/?seconds=0 HTTP/1.1\r\nHost: localhost\r\n"
                b"Connection: close\r\n\r\n"
            )
            answer = b""
            while chunk := waiting.recv(65536):
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])


class _ServedASGI(ASGILiveServerTestCase):
    __test__ = False  # run by the test below
    server_mode = "single"

    def test_serves(self) -> None:
        """A request is answered."""
        response = get(f"{self.live_server_url}/asgi/items/", timeout=DEADLINE)
        self.assertEqual(response.status_code, 200)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("case", "thread"),
    [
        (_Served, "safelive-worker-2"),
        (_Served, "safelive-idle-watcher"),
        (_ServedASGI, "safelive-asgi-worker-1"),
    ],
)
def test_a_thread_that_died_before_it_ran_is_replaced(
    case: type[unittest.TestCase], thread: str
) -> None:
    """A pool worker, the idle watcher or an ASGI worker that died before it
    ran is started again: the server serves as if it had not."""
    with dying_before_run(named(thread), times=1) as died:
        result = _run(case("test_serves"))
    assert (result.errors, result.failures, result.testsRun) == ([], [], 1)
    assert died == [thread]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("case", "thread"),
    [
        (_Served, "safelive-worker-1"),
        (_Served, "safelive-worker-3"),
        (_Served, "safelive-idle-watcher"),
        (_ServedASGI, "safelive-websocket-worker-1"),
    ],
)
def test_a_thread_that_never_runs_is_a_clear_error(
    case: type[unittest.TestCase], thread: str
) -> None:
    """A thread that dies before it runs each time it is started fails the
    class with ThreadDidNotStart, naming it; the threads started before it
    have exited by the time the class has failed."""
    before = set(threading.enumerate())
    with dying_before_run(named(thread), times=ATTEMPTS) as died:
        result = _run(case("test_serves"))
    assert died == [thread] * ATTEMPTS
    assert result.testsRun == 0 and len(result.errors) == 1, result.errors
    error = result.errors[0][1]
    assert ThreadDidNotStart.__name__ in error, error
    assert f"{thread!r} died before it ran, {ATTEMPTS} times in a row" in error
    assert "gh-98257" in error
    assert set(threading.enumerate()) <= before


@pytest.mark.django_db(transaction=True)
def test_a_server_thread_that_died_before_it_ran_is_an_error() -> None:
    """The server thread itself dying before it ran fails the class with
    ThreadDidNotStart, where Django would wait for it forever."""
    with dying_before_run(
        lambda thread: isinstance(thread, SafeLiveServerThread), times=1
    ) as died:
        result = _run(_Served("test_serves"))
    assert len(died) == 1
    assert result.testsRun == 0 and len(result.errors) == 1, result.errors
    error = result.errors[0][1]
    assert f"ThreadDidNotStart: django-safelive's thread '{died[0]}'" in error, error


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("case", "thread"),
    [(_Served, "safelive-worker-3"), (_ServedASGI, "safelive-websocket-worker-1")],
)
def test_workers_started_before_the_failure_exit_first(
    case: type[unittest.TestCase], thread: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers started before a thread that never runs have closed their
    connections and exited by the time the class has failed, even when closing
    is slow: none touches a connection (a shared one, say) after the caller
    has cleaned up."""
    close_all = connections.close_all
    closed: list[float] = []

    def slow_close_all() -> None:
        if threading.current_thread().name.startswith("safelive-"):
            time.sleep(0.1)  # the fault: a slow close, which must be waited for
            close_all()
            closed.append(time.monotonic())
        else:
            close_all()

    monkeypatch.setattr(connections, "close_all", slow_close_all)
    with dying_before_run(named(thread), times=ATTEMPTS):
        result = _run(case("test_serves"))
    failed = time.monotonic()
    assert result.testsRun == 0 and len(result.errors) == 1, result.errors
    assert closed
    assert max(closed) < failed
