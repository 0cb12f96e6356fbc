"""Keep-alive at no worker's cost: the request handler and the idle-socket watcher.

A worker serves the requests a client has already sent, then gives the socket
back to the watcher, which holds it until the client sends more.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

from django.test.testcases import QuietWSGIRequestHandler

from django_safelive._core import threads

Address = Any
Request = tuple[socket.socket, Address]


class _HandlerState(threading.local):
    # Set by the request handler: give the socket back to the idle watcher.
    keep_alive: bool = False


_handler_state = _HandlerState()


def handle(
    finish: Callable[[socket.socket, Address], None],
    request: socket.socket,
    client_address: Address,
) -> bool:
    """Serve `request` with `finish` (the server's ``finish_request``); whether
    the client keeps the socket open for a next request."""
    _handler_state.keep_alive = False
    finish(request, client_address)
    return _handler_state.keep_alive


class _BufferedSocketWriter(io.BufferedIOBase):
    """socketserver's unbuffered socket writer, buffered until ``flush()``.

    Not ``socket.makefile()``'s writer: closing it with bytes left that the
    client no longer takes raises, and on some Python versions leaves the
    socket open until it is collected.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with memoryview(data) as view:
            self._buffer += view
            return view.nbytes

    def flush(self) -> None:
        # Emptied first: bytes a failed send could not deliver are not resent.
        data, self._buffer = bytes(self._buffer), bytearray()
        if data:
            self._sock.sendall(data)

    def close(self) -> None:
        # What was not flushed could not be sent (the request's handler
        # flushes each chunk): dropped, not written at close.
        self._buffer.clear()
        super().close()

    def fileno(self) -> int:
        return self._sock.fileno()


class SafeRequestHandler(QuietWSGIRequestHandler):
    """Django's quiet live-server handler, with a socket timeout, that never
    waits on an idle keep-alive socket.

    The timeout bounds how long a client that stops sending mid-request can
    occupy a worker.
    """

    timeout = 10
    # With keep-alive, Nagle's algorithm and the client's delayed ACK would hold
    # each small response back ~40 ms (Django's server pays that too).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        # Buffered, flushed after each chunk of a response: wsgiref writes the
        # status line, two headers, the other headers and the body separately,
        # and without Nagle each would be a packet of its own, waking the
        # client (a thread of the same process, usually) five times per
        # response.
        self.wfile = _BufferedSocketWriter(self._socket)  # type: ignore[assignment]

    def handle(self) -> None:
        """Serve one request, and any the client has already sent after it;
        then give a keep-alive socket back to the server's idle watcher rather
        than wait for the client's next request, as Django's handler does."""
        self.close_connection = True
        self._serve_one()
        while not self.close_connection and self._request_waiting():
            self._serve_one()
        if self.close_connection:
            with contextlib.suppress(AttributeError, OSError):
                self._socket.shutdown(socket.SHUT_WR)
        else:
            _handler_state.keep_alive = True

    def _serve_one(self) -> None:
        try:
            self.handle_one_request()
        finally:
            # An error response (http.server's send_error) is written but not
            # flushed by its writer. A client gone by then gets nothing.
            with contextlib.suppress(OSError):
                self.wfile.flush()

    def handle_expect_100(self) -> bool:
        """Send ``100 Continue`` at once: the client waits for it."""
        super().handle_expect_100()
        self.wfile.flush()
        return True

    def _request_waiting(self) -> bool:
        """Whether the client has sent more already, read without waiting, so
        that nothing buffered is lost when the socket goes back to the watcher."""
        self._socket.setblocking(False)
        try:
            return bool(self.rfile.peek(1))  # type: ignore[attr-defined]
        except OSError:
            return False
        finally:
            self._socket.settimeout(self.timeout)

    @property
    def _socket(self) -> socket.socket:
        return cast(socket.socket, self.connection)


class IdleWatcher:
    """Hold accepted sockets, at no worker's cost, until they have data to read.

    Browsers open speculative connections they may never use; handing such a
    socket straight to a worker would block that worker (and its database
    session) until the socket closed.
    """

    def __init__(self, dispatch: Callable[[socket.socket, Address], None]) -> None:
        self._dispatch = dispatch
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._incoming: list[Request] = []
        self._closing = False
        try:
            self._thread = threads.start_daemon("safelive-idle-watcher", self._run)
        except BaseException:
            self._selector.close()
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def watch(self, request: socket.socket, client_address: Address) -> None:
        with self._lock:
            if self._closing:  # stopping: nothing will read it any more
                abandon_socket(request)
                return
            self._incoming.append((request, client_address))
        self._wake_writer.send(b"\0")

    def _run(self) -> None:
        while True:
            for key, _events in self._selector.select():
                if key.fileobj is self._wake_reader:
                    self._drain_wake_ups()
                else:
                    self._readable(cast(socket.socket, key.fileobj), key.data)
            with self._lock:
                if self._closing:
                    return
                incoming, self._incoming = self._incoming, []
            for request, client_address in incoming:
                self._selector.register(request, selectors.EVENT_READ, client_address)

    def _drain_wake_ups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_reader.recv(4096):
                pass

    def _readable(self, request: socket.socket, client_address: Address) -> None:
        self._selector.unregister(request)
        if peek(request) == b"":  # closed by the client: no worker needed
            close_socket(request)
        else:
            self._dispatch(request, client_address)

    def close(self) -> None:
        """Stop watching and close every socket that never sent a request."""
        with self._lock:
            self._closing = True
            leftover = [request for request, _ in self._incoming]
            self._incoming = []
        self._wake_writer.send(b"\0")
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            if key.fileobj is not self._wake_reader:
                leftover.append(cast(socket.socket, key.fileobj))
        for request in leftover:
            abandon_socket(request)
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()


def peek(request: socket.socket, wait: float = 0.0) -> bytes | None:
    """The first byte waiting on `request`, left unread, waiting at most `wait`
    seconds for it: b"" when the client closed (or reset) the connection, None
    when nothing has arrived yet."""
    try:
        if wait <= 0:
            return request.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        previous = request.gettimeout()
        request.settimeout(wait)
        try:
            return request.recv(1, socket.MSG_PEEK)
        finally:
            request.settimeout(previous)
    except (BlockingIOError, TimeoutError):
        return None
    except OSError:  # reset by the client
        return b""


def close_socket(request: socket.socket) -> None:
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)
    request.close()


def abandon_socket(request: socket.socket) -> None:
    """Close an idle client's socket as the server stops, leaving nothing bound
    to the server's port: reset when the client has acknowledged everything
    sent to it, so that no TIME_WAIT (nor FIN_WAIT_2, for a client that keeps
    its end open) stops the next run binding a fixed ``--liveserver`` port for
    a minute. With data still unacknowledged, or where the system cannot say,
    close it as ``close_socket()`` does, so the client gets all of it."""
    if _unacknowledged(request) == 0:
        with contextlib.suppress(OSError):
            request.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            request.close()
            return
    close_socket(request)


# macOS's getsockopt() for the bytes in a socket's send buffer; the socket
# module does not name it.
_SO_NWRITE = getattr(socket, "SO_NWRITE", 0x1024 if sys.platform == "darwin" else None)


def _unacknowledged(request: socket.socket) -> int | None:
    """The bytes sent on `request` that the client has not acknowledged (Linux's
    SIOCOUTQ; macOS's SO_NWRITE), or None where the system does not say."""
    try:
        import fcntl
        import termios

        # SIOCOUTQ, the same request number as TIOCOUTQ on Linux.
        queued = bytearray(4)
        fcntl.ioctl(request.fileno(), termios.TIOCOUTQ, queued)
        return int(struct.unpack("i", queued)[0])
    except (ImportError, AttributeError, OSError):
        pass
    if _SO_NWRITE is None:
        return None
    try:
        return request.getsockopt(socket.SOL_SOCKET, _SO_NWRITE)
    except OSError:
        return None
