"""Calls a worker makes to its own server, seen by a Python audit hook.

A single-mode server's only worker may not call its server (it would wait for
itself): the connection is refused at once. A request on a shared connection
(in-memory SQLite) notes the sockets it opens to its server, so that the calls
it makes are served while it waits. Python raises the ``socket.connect`` audit
event in the connecting thread, before the connection is made, whatever the
HTTP client, so the check needs no patching.

Audit hooks cannot be removed: one is installed, the first time a server needs
it, and does nothing but one test of an empty tuple while no such server runs.
Each server is watched from its start until it stops listening, and only for
connections that reach its own listening address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from django_safelive._core.exceptions import SelfCallInSingleMode
from django_safelive._core.holders import current_request

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(host: object) -> _IPAddress | None:
    """`host` as an IP address (an IPv4-mapped IPv6 one as IPv4), None if a name."""
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _resolve(sock: object, host: object, port: int) -> _IPAddress | None:
    """The address ``socket.connect`` would reach for a host name: the first
    that ``getaddrinfo`` gives for the socket's family."""
    family = getattr(sock, "family", socket.AF_UNSPEC)
    try:
        found = socket.getaddrinfo(str(host), port, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return _ip(found[0][4][0]) if found else None


def _is_this_machine(ip: _IPAddress) -> bool:
    """Whether `ip` is one of this machine's addresses: only those can be bound."""
    if ip.is_loopback:
        return True
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


class OwnAddress:
    """A server's listening address, and which connections reach it."""

    def __init__(self, server_address: tuple[Any, ...]) -> None:
        bound = _ip(server_address[0])
        assert bound is not None, server_address  # after bind(): an IP address
        self.host = bound
        self.port: int = server_address[1]

    def reached_by(self, sock: object, address: object) -> bool:
        """Whether ``sock.connect(address)`` reaches this server."""
        if not isinstance(address, tuple) or len(address) < 2:
            return False
        if address[1] != self.port:
            return False
        ip = _ip(address[0])
        if ip is None:
            ip = _resolve(sock, address[0], self.port)
        if ip is None:
            return False
        if not self.host.is_unspecified:
            return ip == self.host
        # A wildcard bind: any address of this machine, of the bound family
        # (an IPv6 wildcard takes IPv4 connections too, as dual-stack does).
        same_family = self.host.version == 6 or ip.version == 4
        return same_family and _is_this_machine(ip)


class SingleWorker:
    """The only worker of a single-mode server: its calls to the server are
    refused, and kept until the next reset raises them again."""

    def __init__(self, address: OwnAddress) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._refused: list[SelfCallInSingleMode] = []

    def refuse(self, sock: object, address: object) -> None:
        """Refuse ``sock.connect(address)`` if it reaches the server.

        Queued behind the request that makes it, the call would deadlock until
        a client timeout; refused at once, the view sees a refused connection,
        and the test fails at the next reset even if the view swallowed it.
        """
        if self.address.reached_by(sock, address):
            assert isinstance(address, tuple)
            error = SelfCallInSingleMode(
                address=f"{address[0]}:{address[1]}", request=current_request()
            )
            with self._lock:
                self._refused.append(error)
            raise error

    def take_refused(self) -> SelfCallInSingleMode | None:
        """The first call refused since the last time, if any."""
        with self._lock:
            refused, self._refused = self._refused, []
        return refused[0] if refused else None


def raise_refused(single: SingleWorker | None) -> None:
    """At a reset: raise the first call `single`, a single-mode server's only
    worker, made to its server since the last reset (the view may have
    swallowed it); nothing for a server with more workers."""
    refused = single.take_refused() if single else None
    if refused is not None:
        raise refused


class SharedConnection:
    """Serve one request at a time on a connection all workers share (Django
    shares the test thread's in-memory SQLite connection with its live
    server), except the calls a request makes to the server itself.

    One sqlite3 connection cannot serve two requests at once, but a view
    calling its own server waits, without touching the database, for the
    answer: that inner request is served while the outer one holds the
    connection, instead of waiting for it forever.
    """

    def __init__(self, address: OwnAddress) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._calls_lock = threading.Lock()
        # Sockets the request being served opened to this server.
        self._calls: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def note_call(self, sock: object, address: object) -> None:
        """Audit hook, in the serving thread: `sock` connects to `address`."""
        if isinstance(sock, socket.socket) and self.address.reached_by(sock, address):
            with self._calls_lock:
                self._calls.add(sock)

    def _is_call(self, client_address: Any) -> bool:
        """Whether `client_address` is a socket a served request opened."""
        with self._calls_lock:
            for sock in list(self._calls):
                try:
                    if sock.getsockname()[:2] == tuple(client_address[:2]):
                        return True
                except OSError:  # closed: no request can come from it any more
                    self._calls.discard(sock)
        return False

    @contextlib.contextmanager
    def serving(self, client_address: Any) -> Iterator[None]:
        """Hold the connection for one request, unless it is a served request's
        own call, which runs while that request waits for it."""
        nested = self._is_call(client_address)
        if not nested:
            self._lock.acquire()
        previous, _thread.shared = _thread.shared, self
        try:
            yield
        finally:
            _thread.shared = previous
            if not nested:
                self._lock.release()


class _ThreadState(threading.local):
    # The single-mode worker the current thread is, if any.
    single: SingleWorker | None = None
    # The shared connection whose request the current thread is serving, if any.
    shared: SharedConnection | None = None


_thread = _ThreadState()
_lock = threading.Lock()
_hook_installed = False
# What running servers watch; replaced, never changed, so the hook reads it
# without a lock. Empty when no such server runs: the hook then does nothing.
_watched: tuple[SingleWorker | SharedConnection, ...] = ()


def _watch_self_calls(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: a worker connecting to its own server."""
    if not _watched or event != "socket.connect":
        return
    single = _thread.single
    if single is not None and single in _watched:
        single.refuse(args[0], args[1])
    shared = _thread.shared
    if shared is not None and shared in _watched:
        shared.note_call(args[0], args[1])


def watch(*watches: SingleWorker | SharedConnection) -> None:
    """Start checking the connections `watches` are about (a server starts)."""
    global _hook_installed, _watched
    with _lock:
        if not _hook_installed:
            sys.addaudithook(_watch_self_calls)
            _hook_installed = True
        _watched = (*_watched, *watches)


def unwatch(*watches: SingleWorker | SharedConnection) -> None:
    """Stop checking them (the server stopped listening)."""
    global _watched
    with _lock:
        _watched = tuple(item for item in _watched if item not in watches)


def serve_as(single: SingleWorker | None) -> None:
    """The current thread is `single`, a single-mode server's worker (or not)."""
    _thread.single = single
