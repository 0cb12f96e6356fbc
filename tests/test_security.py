"""Security: the server listens on loopback only and leaves ALLOWED_HOSTS alone."""

from __future__ import annotations

import ipaddress
import socket
from typing import ClassVar

import pytest
from django.conf import settings

from django_safelive import LiveServerTestCase
from django_safelive._pytest_server import SafeLiveServer
from tests.test_faults import exchange, request_bytes, status_of


def outward_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


def assert_loopback_only(bound: str, port: int) -> None:
    """Bound to a loopback address; unreachable on the machine's other address."""
    assert ipaddress.ip_address(bound).is_loopback, bound
    outward = outward_address()
    if outward is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outward, port), timeout=5).close()


class LoopbackTests(LiveServerTestCase):
    outside: ClassVar[list[str]]

    @classmethod
    def setUpClass(cls) -> None:
        cls.outside = list(settings.ALLOWED_HOSTS)
        # Registered first, so it runs last: after the server has stopped.
        cls.addClassCleanup(cls.assert_allowed_hosts_restored)
        super().setUpClass()

    @classmethod
    def assert_allowed_hosts_restored(cls) -> None:
        """After the class, ALLOWED_HOSTS is what it was before."""
        assert cls.outside == settings.ALLOWED_HOSTS, settings.ALLOWED_HOSTS

    def test_listens_on_loopback_only(self) -> None:
        """By default the server is reachable from this machine only."""
        assert_loopback_only(
            str(self.server_thread.httpd.server_address[0]), self.server_thread.port
        )

    def test_allowed_hosts_not_weakened(self) -> None:
        """ALLOWED_HOSTS gains only the server's host, as Django's own server does."""
        self.assertEqual(settings.ALLOWED_HOSTS, [*self.outside, "localhost"])
        self.assertNotIn("*", settings.ALLOWED_HOSTS)

    def test_foreign_host_header_refused(self) -> None:
        """A request naming another host gets Django's 400 (DisallowedHost)."""
        data = request_bytes("GET", "/items/").replace(
            b"Host: localhost", b"Host: attacker.example"
        )
        self.assertEqual(status_of(exchange(self.server_thread.port, data)), 400)
        answer = exchange(self.server_thread.port, request_bytes("GET", "/items/"))
        self.assertEqual(status_of(answer), 200)


def test_fixture_listens_on_loopback_only(safe_live_server: SafeLiveServer) -> None:
    """The pytest fixture's server is reachable from this machine only, too."""
    httpd = safe_live_server.thread.httpd
    assert_loopback_only(str(httpd.server_address[0]), safe_live_server.thread.port)
    data = request_bytes("GET", "/items/").replace(
        b"Host: localhost", b"Host: attacker.example"
    )
    assert status_of(exchange(safe_live_server.thread.port, data)) == 400
    assert "*" not in settings.ALLOWED_HOSTS
