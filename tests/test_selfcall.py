"""The single-mode self-call check: only the server's own address, only while
the server runs.

A view that calls its own single-mode server is refused at once (see
tests/test_faults.py for the whole story); these tests check what is *not*
refused: another host on the same port, and anything once the server stopped.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from django.http import HttpRequest, JsonResponse
from django.test import TransactionTestCase, override_settings
from django.urls import path

from django_safelive import (
    LiveServerTestCase,
    SafeLiveServerThread,
    SelfCallInSingleMode,
)
from django_safelive._core import selfcalls
from django_safelive._core.selfcalls import OwnAddress
from tests._clients import get
from tests.test_security import outward_address


def connect(request: HttpRequest) -> JsonResponse:
    """Connect to ?host=&port= (a name is passed to connect() as it is), then
    say what happened."""
    address = (request.GET["host"], int(request.GET["port"]))
    try:
        with socket.socket(socket.AF_INET) as sock:
            sock.settimeout(5)
            sock.connect(address)
    except SelfCallInSingleMode:
        return JsonResponse({"outcome": "refused by django-safelive"})
    except OSError as error:
        return JsonResponse({"outcome": f"{type(error).__name__}: {error}"})
    return JsonResponse({"outcome": "connected"})


urlpatterns = [path("connect/", connect)]


@contextlib.contextmanager
def listening(host: str, port: int) -> Iterator[socket.socket]:
    """A listener at `host`:`port`; connections complete in its backlog."""
    with socket.socket(socket.AF_INET) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen()
        yield listener


@override_settings(ROOT_URLCONF=__name__)
class SingleModeAddressTests(LiveServerTestCase):
    server_mode = "single"

    def outcome(self, host: str) -> str:
        """What the view got connecting to `host` on the server's port."""
        port = self.server_thread.port
        response = get(f"{self.live_server_url}/connect/?host={host}&port={port}")
        self.assertEqual(response.status_code, 200)
        return str(response.json()["outcome"])

    def test_same_port_on_another_host_is_not_refused(self) -> None:
        """A listener on 127.0.0.2 at the server's port (127.0.0.1) is reached."""
        self.assertEqual(self.server_thread.httpd.server_address[0], "127.0.0.1")
        with listening("127.0.0.2", self.server_thread.port):
            self.assertEqual(self.outcome("127.0.0.2"), "connected")
        self.reset_live_server()  # nothing was refused, nothing is raised

    def test_own_address_by_name_is_refused(self) -> None:
        """`localhost`, resolved as connect() would, is the server's own address."""
        self.assertEqual(self.outcome("localhost"), "refused by django-safelive")
        with self.assertRaises(SelfCallInSingleMode):
            self.reset_live_server()


@override_settings(ROOT_URLCONF=__name__)
class StoppedServerTests(TransactionTestCase):
    databases = {"default"}

    def test_no_check_once_the_server_stopped(self) -> None:
        """A thread marked as the single worker is refused while the server
        runs, and no longer once it stopped (its address is watched no more)."""

        class Served(LiveServerTestCase):
            server_mode = "single"

            def test_nothing(self) -> None:
                """Never runs: the test drives the class by hand."""

        Served.setUpClass()
        thread = Served.server_thread
        assert isinstance(thread, SafeLiveServerThread)
        single = thread.httpd._single
        address = (str(thread.httpd.server_address[0]), thread.port)
        try:
            self.assertIn(single, selfcalls._watched)
            selfcalls.serve_as(single)  # as a stuck worker would still be
            with self.assertRaises(SelfCallInSingleMode):
                socket.create_connection(address, timeout=5).close()
        finally:
            selfcalls.serve_as(None)
            Served.tearDownClass()
            Served.doClassCleanups()
        self.assertNotIn(single, selfcalls._watched)
        with listening(*address):
            selfcalls.serve_as(single)
            try:
                socket.create_connection(address, timeout=5).close()
            finally:
                selfcalls.serve_as(None)


def reached(bound: tuple[str, int], host: str, port: int | None = None) -> bool:
    """Whether a socket's ``connect((host, port))`` reaches `bound`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        return OwnAddress(bound).reached_by(sock, (host, port or bound[1]))


def test_bound_address_is_matched_exactly() -> None:
    """Bound to 127.0.0.1: that address (as IPv4-mapped too, or by name), on its
    port only; not another loopback address, not ::1."""
    bound = ("127.0.0.1", 8123)
    assert reached(bound, "127.0.0.1")
    assert reached(bound, "::ffff:127.0.0.1")
    assert reached(bound, "localhost")
    assert not reached(bound, "127.0.0.1", 8124)
    assert not reached(bound, "127.0.0.2")
    assert not reached(bound, "::1")
    assert not OwnAddress(bound).reached_by(None, "/run/a-unix-socket")


def test_wildcard_bind_matches_this_machine_only() -> None:
    """Bound to 0.0.0.0: any loopback address and the machine's own, not
    another host's address on the same port."""
    bound = ("0.0.0.0", 8123)
    assert reached(bound, "127.0.0.1")
    assert reached(bound, "127.0.0.2")
    assert not reached(bound, "192.0.2.1")  # TEST-NET-1: never this machine's
    assert not reached(bound, "127.0.0.1", 8124)
    outward = outward_address()
    if outward is None:
        pytest.skip("this machine has no address but loopback")
    assert reached(bound, outward)


def test_ipv6_wildcard_takes_both_families() -> None:
    """Bound to ::, dual-stack: ::1 and 127.0.0.1, but not a foreign address."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    bound = ("::", 8123)
    assert reached(bound, "::1")
    assert reached(bound, "127.0.0.1")
    assert not reached(bound, "2001:db8::1")  # documentation prefix
