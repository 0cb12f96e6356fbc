"""What stopping the server guarantees: workers joined, no server session left.

Each test drives a live server class by hand and makes the guarantee it checks
hard to meet by accident: without the guarantee, the test fails every time.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from unittest import mock

from django.db import connections
from django.db.utils import ConnectionHandler
from django.http import HttpRequest, JsonResponse
from django.test import TransactionTestCase, override_settings
from django.urls import path

from django_safelive import (
    LiveServerTestCase,
    RequestStuck,
    SafeLiveServerThread,
    SessionsLeftBehind,
)
from django_safelive._core import lifecycle
from django_safelive._core.exceptions import WorkersDidNotExit
from tests import _pg
from tests._clients import get
from tests._waiting import DEADLINE, wait_for
from tests.test_faults import server_threads
from tests.testapp import views

# How long each worker takes to exit once its sessions are closed, in the first
# test: far longer than stopping the server takes without waiting for them.
SLOW_EXIT = 1.0


# Set by the test to let /block/ answer, and by /block/ once it is waiting.
release_block = threading.Event()
block_entered = threading.Event()


def block(request: HttpRequest) -> JsonResponse:
    """Wait, touching no database, until the test releases it: ending the
    server's sessions does not end this request."""
    block_entered.set()
    release_block.wait(DEADLINE)
    return JsonResponse({"released": True})


urlpatterns = [path("block/", block)]


def live_server_class() -> type[LiveServerTestCase]:
    """A fresh live server test case class, to be started and stopped by hand."""

    class Served(LiveServerTestCase):
        def test_nothing(self) -> None:
            """Never runs: the tests drive the class by hand."""

    return Served


def single_worker_class() -> type[LiveServerTestCase]:
    """A fresh single-mode class that waits 0.2 s for its requests to drain."""
    served = live_server_class()
    served.server_mode = "single"
    served.drain_timeout = 0.2
    return served


def stop_with_short_waits(served: type[LiveServerTestCase]) -> list[BaseException]:
    """Stop `served`, its workers given 0.2 s to exit; the errors it records."""
    with mock.patch.object(lifecycle, "EXIT_GRACE", 0.2):
        served.tearDownClass()
        served.doClassCleanups()
    return [error for _, error, _ in served.tearDown_exceptions]  # type: ignore[attr-defined]


class StopTests(TransactionTestCase):
    databases = {"default"}

    def test_stop_waits_for_the_workers_to_exit(self) -> None:
        """When the server has stopped, every worker has exited and closed its
        session, even a worker slow to exit."""
        close_all: Callable[[ConnectionHandler], None] = ConnectionHandler.close_all

        def slow_close_all(self: ConnectionHandler) -> None:
            close_all(self)
            if threading.current_thread().name.startswith("safelive-worker"):
                time.sleep(SLOW_EXIT)  # a worker slow to exit, its session closed

        served = live_server_class()
        before = frozenset(threading.enumerate())
        served.setUpClass()
        try:
            for _ in range(8):  # every worker holds a session
                self.assertEqual(
                    get(f"{served.live_server_url}/items/").status_code, 200
                )
        finally:
            with mock.patch.object(ConnectionHandler, "close_all", slow_close_all):
                served.tearDownClass()
                served.doClassCleanups()
        self.assertEqual(server_threads(before), [])
        self.assertEqual(_pg.server_sessions(), [])

    def test_a_session_left_open_is_ended_and_reported(self) -> None:
        """A session the server's side still holds at teardown (a thread a view
        started) is ended, so the database can be dropped, and reported."""
        served = live_server_class()
        views.release_leak.clear()
        served.setUpClass()
        try:
            response = get(f"{served.live_server_url}/leak/")
            self.assertEqual(response.json(), {"opened": True})
            leaked = _pg.server_sessions()
            self.assertEqual(len(leaked), 1, leaked)
        finally:
            served.tearDownClass()
            # Django stops the server in a class cleanup, which records errors.
            served.doClassCleanups()
            views.release_leak.set()
        recorded = served.tearDown_exceptions  # type: ignore[attr-defined]
        errors = [error for _, error, _ in recorded]
        self.assertEqual([type(error) for error in errors], [SessionsLeftBehind])
        self.assertIn(f"pid {leaked[0][0]}", str(errors[0]))
        self.assertEqual(_pg.server_sessions(), [])
        # This thread's own connection still works: only the server's was ended.
        connections["default"].ensure_connection()


@override_settings(ROOT_URLCONF=__name__)
class WorkerExitTests(TransactionTestCase):
    databases = {"default"}

    def test_a_worker_still_serving_is_reported(self) -> None:
        """A worker still serving a request after its sessions were ended and
        it was told to exit fails the test, naming it and its request."""
        served = single_worker_class()
        before = frozenset(threading.enumerate())
        release_block.clear()
        block_entered.clear()
        served.setUpClass()
        client = threading.Thread(
            target=get, args=(f"{served.live_server_url}/block/",)
        )
        try:
            client.start()
            self.assertTrue(wait_for(block_entered.is_set))
            errors = stop_with_short_waits(served)
        finally:
            release_block.set()
            client.join(DEADLINE)
        self.assertTrue(wait_for(lambda: not server_threads(before)))
        self.assertEqual([type(error) for error in errors], [RequestStuck])
        notes = getattr(errors[0], "__notes__", [])
        self.assertEqual(len(notes), 1, notes)
        self.assertIn("after its workers' sessions were ended", notes[0])
        self.assertIn("GET /block/ on safelive-worker-1", notes[0])

    def test_a_worker_slow_to_exit_is_reported(self) -> None:
        """A worker that has not exited within the drain timeout, though it
        serves no request, fails the test, naming it."""
        close_all: Callable[[ConnectionHandler], None] = ConnectionHandler.close_all
        exit_released = threading.Event()

        def stuck_close_all(self: ConnectionHandler) -> None:
            close_all(self)
            if threading.current_thread().name.startswith("safelive-worker"):
                exit_released.wait(DEADLINE)

        served = single_worker_class()
        before = frozenset(threading.enumerate())
        served.setUpClass()
        try:
            with mock.patch.object(ConnectionHandler, "close_all", stuck_close_all):
                errors = stop_with_short_waits(served)
        finally:
            exit_released.set()
        self.assertTrue(wait_for(lambda: not server_threads(before)))
        self.assertEqual([type(error) for error in errors], [WorkersDidNotExit])
        message = str(errors[0])
        self.assertIn("1 live-server worker(s) had not exited", message)
        self.assertIn("after its workers were asked to exit", message)
        self.assertIn("safelive-worker-1, closing its database connections", message)


class ResetTests(TransactionTestCase):
    databases = {"default"}

    def test_reset_ends_a_session_left_open(self) -> None:
        """The reset between tests, which asks PostgreSQL only when its
        accounting cannot rule a server session out, finds one a view's thread
        still holds, ends it and reports it."""
        served = live_server_class()
        views.release_leak.clear()
        served.setUpClass()
        try:
            self.assertEqual(
                get(f"{served.live_server_url}/leak/").json(), {"opened": True}
            )
            leaked = _pg.server_sessions()
            with self.assertRaises(SessionsLeftBehind) as caught:
                served("test_nothing").reset_live_server()
            self.assertIn(f"pid {leaked[0][0]}", str(caught.exception))
            self.assertEqual(_pg.server_sessions(), [])
        finally:
            views.release_leak.set()
            served.tearDownClass()
            served.doClassCleanups()


class PartialSetUpTests(TransactionTestCase):
    databases = {"default"}

    def test_private_helpers_without_set_up_class(self) -> None:
        """Django's _start_server_thread() called alone starts a bounded server,
        and the class cleanups it registers stop it without error."""
        served = live_server_class()
        served._start_server_thread()  # type: ignore[attr-defined]
        try:
            self.assertIsInstance(served.server_thread, SafeLiveServerThread)
            # setUpClass would have allowed the host; this test does it itself.
            with self.settings(ALLOWED_HOSTS=[served.host]):
                status = get(f"{served.live_server_url}/items/").status_code
        finally:
            served.doClassCleanups()
        self.assertEqual(status, 200)
        self.assertEqual(served.tearDown_exceptions, [])  # type: ignore[attr-defined]

    def test_server_that_failed_to_start(self) -> None:
        """When a setUpClass swallows the server's start-up error (its port is
        taken), the per-test reset and the class cleanups raise nothing else."""
        with socket.socket() as taken:
            taken.bind(("localhost", 0))
            taken.listen()
            served = live_server_class()
            served.port = taken.getsockname()[1]
            with self.assertRaises(OSError):  # the original error: address in use
                served.setUpClass()
            served("test_nothing").reset_live_server()
            served.doClassCleanups()
        self.assertEqual(served.tearDown_exceptions, [])  # type: ignore[attr-defined]
