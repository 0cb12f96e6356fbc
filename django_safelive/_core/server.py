"""A live server with a fixed pool of worker threads, built on Django's own."""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import selectors
import socket
import socketserver
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.core.servers.basehttp import WSGIServer
from django.db import close_old_connections, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.test.testcases import LiveServerThread, QuietWSGIRequestHandler

from django_safelive._core.accounting import (
    SERVER_WORKER,
    ServerAccount,
    bind_thread,
    current_request,
    describe_request,
    set_current_request,
)
from django_safelive._core.config import Config, resolve
from django_safelive._core.exceptions import (
    RequestStuck,
    SelfCallInSingleMode,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_Address = Any
_Request = tuple[socket.socket, _Address]


class _WorkerState(threading.local):
    # The single-mode server whose only worker is the current thread, if any.
    single_server: BoundedWSGIServer | None = None
    # The shared connection whose request the current thread is serving, if any.
    serving_shared: _SharedConnection | None = None
    # Set by the request handler: give the socket back to the idle watcher.
    keep_alive: bool = False
    # Whether the current thread is a worker that keeps its sessions until the
    # reset, whatever CONN_MAX_AGE says.
    keeps_sessions: bool = False


_worker_state = _WorkerState()


def _keep_worker_sessions(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: object
) -> None:
    """``connection_created``: a worker's session lives until the reset.

    With ``CONN_MAX_AGE = 0`` (Django's default) every request would otherwise
    fork a PostgreSQL backend and end it; Django still closes a session that
    is broken or whose autocommit a view left changed, at the end of each
    request.
    """
    if _worker_state.keeps_sessions:
        connection.close_at = None


# Connected once, for the process: it only reads the calling thread's state.
connection_created.connect(
    _keep_worker_sessions, weak=False, dispatch_uid="django_safelive.keep_sessions"
)
_audit_hook_lock = threading.Lock()
_audit_hook_installed = False


def _watch_self_calls(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: a worker connecting to its own server.

    A single-mode worker may not (it would wait for itself); a request on a
    shared connection notes the socket, so that the call it makes is served
    while it waits. Python raises the ``socket.connect`` audit event in the
    connecting thread, before the connection is made, whatever the HTTP
    client, so the check needs no patching; elsewhere it costs one comparison
    per audit event.
    """
    if event != "socket.connect":
        return
    server = _worker_state.single_server
    if server is not None:
        server.check_outgoing(args[1])
    shared = _worker_state.serving_shared
    if shared is not None:
        shared.note_call(args[0], args[1])


def _install_audit_hook() -> None:
    # Audit hooks cannot be removed: install one for the process, once.
    global _audit_hook_installed
    with _audit_hook_lock:
        if not _audit_hook_installed:
            sys.addaudithook(_watch_self_calls)
            _audit_hook_installed = True


def _is_loopback(host: object) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_any(host: object) -> bool:
    try:
        return ipaddress.ip_address(str(host)).is_unspecified
    except ValueError:
        return False


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

    def handle(self) -> None:
        """Serve one request, and any the client has already sent after it;
        then give a keep-alive socket back to the server's idle watcher rather
        than wait for the client's next request, as Django's handler does."""
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self._request_waiting():
            self.handle_one_request()
        if self.close_connection:
            with contextlib.suppress(AttributeError, OSError):
                self._socket.shutdown(socket.SHUT_WR)
        else:
            _worker_state.keep_alive = True

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


class _IdleWatcher:
    """Hold accepted sockets, at no worker's cost, until they have data to read.

    Browsers open speculative connections they may never use; handing such a
    socket straight to a worker would block that worker (and its database
    session) until the socket closed.
    """

    def __init__(self, dispatch: Callable[[socket.socket, _Address], None]) -> None:
        self._dispatch = dispatch
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._incoming: list[_Request] = []
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name="safelive-idle-watcher", daemon=True
        )
        self._thread.start()

    def watch(self, request: socket.socket, client_address: _Address) -> None:
        with self._lock:
            if self._closing:  # stopping: nothing will read it any more
                _close_socket(request)
                return
            self._incoming.append((request, client_address))
        self._wake_writer.send(b"\0")

    def _run(self) -> None:
        while True:
            for key, _events in self._selector.select():
                if key.fileobj is self._wake_reader:
                    try:
                        while self._wake_reader.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._selector.unregister(key.fileobj)
                request = cast(socket.socket, key.fileobj)
                if _peek(request) == b"":  # closed by the client: no worker needed
                    _close_socket(request)
                    continue
                self._dispatch(request, key.data)
            with self._lock:
                if self._closing:
                    return
                incoming, self._incoming = self._incoming, []
            for request, client_address in incoming:
                self._selector.register(request, selectors.EVENT_READ, client_address)

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
                leftover.append(key.fileobj)  # type: ignore[arg-type]
        for request in leftover:
            _close_socket(request)
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()


def _peek(request: socket.socket) -> bytes | None:
    """The first byte waiting on `request`, left unread: b"" when the client
    closed (or reset) the connection, None when nothing has arrived yet."""
    try:
        return request.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:  # reset by the client
        return b""


def _close_socket(request: socket.socket) -> None:
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)
    request.close()


@dataclass
class _InFlight:
    worker: str
    client: str
    started: float
    request: str | None = None

    def describe(self, now: float) -> str:
        what = self.request or f"a request not yet read from {self.client}"
        return f"{what} on {self.worker}, running for {now - self.started:.1f}s"


class _Reset:
    """A work item telling one worker to close its database connections."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier


_STOP = object()


class _SharedConnection:
    """Serve one request at a time on a connection all workers share (Django
    shares the test thread's in-memory SQLite connection with its live
    server), except the calls a request makes to the server itself.

    One sqlite3 connection cannot serve two requests at once, but a view
    calling its own server waits, without touching the database, for the
    answer: that inner request is served while the outer one holds the
    connection, instead of waiting for it forever.
    """

    def __init__(self, is_own_address: Callable[[object], bool]) -> None:
        self._is_own_address = is_own_address
        self._lock = threading.Lock()
        self._calls_lock = threading.Lock()
        # Sockets the request being served opened to this server.
        self._calls: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def note_call(self, sock: socket.socket, address: object) -> None:
        """Audit hook, in the serving thread: `sock` connects to `address`."""
        if self._is_own_address(address):
            with self._calls_lock:
                self._calls.add(sock)

    def _is_call(self, client_address: _Address) -> bool:
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
    def serving(self, client_address: _Address) -> Iterator[None]:
        """Hold the connection for one request, unless it is a served request's
        own call, which runs while that request waits for it."""
        nested = self._is_call(client_address)
        if not nested:
            self._lock.acquire()
        previous, _worker_state.serving_shared = _worker_state.serving_shared, self
        try:
            yield
        finally:
            _worker_state.serving_shared = previous
            if not nested:
                self._lock.release()


class BoundedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """Django's ``WSGIServer`` serving requests from a fixed pool of workers.

    It overrides ``ThreadingMixIn.process_request``, so no thread is started per
    connection; the mixin is there because Django's ``ServerHandler`` keeps a
    connection alive only for a threaded server. A keep-alive socket goes back
    to the idle watcher after each response, so no socket idling in keep-alive
    holds a worker and its database session. Requests beyond the pool's size
    wait in a queue.
    """

    # Clients beyond the pool wait, they are not refused: before the listener
    # accepts them they wait in the kernel's backlog, which at Django's 10
    # overflows under a burst of connections and resets some of them.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        *args: Any,
        workers: int,
        account: ServerAccount,
        connections_override: dict[str, Any] | None = None,
        session_per_request: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.account = account
        self.session_per_request = session_per_request
        self._self_calls: list[SelfCallInSingleMode] = []
        self.connections_override = connections_override or {}
        # An in-memory SQLite connection is shared by the test thread and every
        # worker, as in Django: requests on it are served one at a time.
        self._shared = (
            _SharedConnection(self.is_own_address)
            if self.connections_override
            else None
        )
        if workers == 1 or self._shared is not None:
            _install_audit_hook()
        self._work: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._state = threading.Condition()
        self._queued = 0
        self._running: dict[int, _InFlight] = {}
        self._workers = [
            threading.Thread(
                target=self._work_loop,
                name=f"safelive-worker-{number}",
                daemon=True,
            )
            for number in range(1, workers + 1)
        ]
        for worker in self._workers:
            worker.start()
        self._watcher = _IdleWatcher(self._enqueue)

    # -- socketserver hooks -------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.05) -> None:
        # shutdown() waits until the loop notices it: at socketserver's default
        # of 0.5 s, stopping the server would cost every test class that long.
        super().serve_forever(poll_interval)

    def process_request(self, request: Any, client_address: _Address) -> None:
        # Most clients send their request right after connecting: when it is
        # already here, it goes straight to the workers, saving a hand-off to
        # the idle watcher and back. A socket with nothing to read yet (a
        # browser's speculative connection, say) waits in the watcher.
        first = _peek(request)
        if first is None:
            self._watcher.watch(request, client_address)
        elif first:
            self._enqueue(request, client_address)
        else:  # closed by the client before it sent anything
            _close_socket(request)

    def set_app(self, application: WSGIApplication | None) -> None:
        assert application is not None

        def tracked(
            environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            request = describe_request(
                environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
            )
            set_current_request(request)
            with self._state:
                in_flight = self._running.get(threading.get_ident())
                if in_flight is not None:
                    in_flight.request = request
            return application(environ, start_response)

        super().set_app(tracked)

    # -- the pool -----------------------------------------------------------
    def _enqueue(self, request: socket.socket, client_address: _Address) -> None:
        with self._state:
            self._queued += 1
        self._work.put((request, client_address))

    def _work_loop(self) -> None:
        bind_thread(self.account, SERVER_WORKER)
        _worker_state.keeps_sessions = not self.session_per_request
        if len(self._workers) == 1:
            _worker_state.single_server = self
        for alias, conn in self.connections_override.items():
            connections[alias] = conn
        try:
            while True:
                item = self._work.get()
                if item is _STOP:
                    return
                if isinstance(item, _Reset):
                    connections.close_all()
                    # A broken barrier means the caller gave up waiting; carry on.
                    with contextlib.suppress(threading.BrokenBarrierError):
                        item.barrier.wait()
                    continue
                request, client_address = cast(_Request, item)
                self._serve(request, client_address)
        finally:
            connections.close_all()

    def _serve(self, request: socket.socket, client_address: _Address) -> None:
        ident = threading.get_ident()
        with self._state:
            self._queued -= 1
            self._running[ident] = _InFlight(
                worker=threading.current_thread().name,
                client=f"{client_address[0]}:{client_address[1]}",
                started=time.monotonic(),
            )
        _worker_state.keep_alive = False
        try:
            shared = self._shared
            with shared.serving(client_address) if shared else contextlib.nullcontext():
                self.finish_request(request, client_address)
        except Exception:
            _worker_state.keep_alive = False
            self.handle_error(request, client_address)
        finally:
            try:
                if _worker_state.keep_alive:
                    # Idle until the client's next request, at no worker's cost.
                    self._watcher.watch(request, client_address)
                else:
                    self.shutdown_request(request)
                self._discard_open_atomic_blocks()
                if self.session_per_request:
                    connections.close_all()
                else:
                    # Closes only a session that is broken or left changed.
                    close_old_connections()
            except Exception:
                # A session ended under us (pg_terminate_backend, a restart) must
                # neither kill the worker nor leave the request counted as running.
                self.handle_error(request, client_address)
            finally:
                set_current_request(None)
                with self._state:
                    del self._running[ident]
                    self._state.notify_all()

    def _discard_open_atomic_blocks(self) -> None:
        """Replace the worker's connections that a view left inside ``atomic()``.

        Django closes such a connection when the request finishes, but the
        wrapper stays marked as inside a transaction, so every later request
        on this worker would fail with "the connection is closed". A fresh
        wrapper replaces it; its session was closed, so the write rolled back.
        """
        for wrapper in connections.all(initialized_only=True):
            if (
                wrapper.in_atomic_block
                and wrapper.alias not in self.connections_override
            ):
                wrapper.close()
                del connections[wrapper.alias]

    def check_outgoing(self, address: object) -> None:
        """Refuse a connection this server's only worker opens to the server.

        Called by the audit hook in the worker thread. With one worker, a view
        calling back into the live server (a webhook to itself, say) would
        queue its request behind itself and deadlock until a client timeout;
        it is refused at once instead, and raised again at the next reset so
        that the test fails even if the view swallowed the error.
        """
        if self.is_own_address(address):
            assert isinstance(address, tuple)
            error = SelfCallInSingleMode(
                address=f"{address[0]}:{address[1]}", request=current_request()
            )
            with self._state:
                self._self_calls.append(error)
            raise error

    def is_own_address(self, address: object) -> bool:
        """Whether a connection to `address` (a ``socket.connect`` argument)
        reaches this server."""
        if not isinstance(address, tuple) or len(address) < 2:
            return False
        host, port = address[0], address[1]
        bound_host = self.server_address[0]
        if port != self.server_port:
            return False
        return bool(host == bound_host or _is_loopback(host) or _is_any(bound_host))

    def in_flight(self) -> list[str]:
        """Describe the requests queued or running right now."""
        now = time.monotonic()
        with self._state:
            running = [flight.describe(now) for flight in self._running.values()]
            queued = self._queued
        if queued:
            running.append(f"{queued} accepted request(s) waiting for a worker")
        return running

    def wait_idle(self, timeout: float, when: str) -> None:
        """Wait until no request is queued or running; raise RequestStuck if not."""
        with self._state:
            idle = self._state.wait_for(
                lambda: not self._queued and not self._running, timeout
            )
        if not idle:
            raise RequestStuck(timeout=timeout, requests=self.in_flight(), when=when)

    def reset(self, timeout: float) -> None:
        """Drain in-flight requests, then make every worker close its connections.

        Then raise the first call the only worker made to the server itself
        since the last reset, if any (the view may have swallowed it).
        """
        self.wait_idle(timeout, "the test asked for a reset")
        barrier = threading.Barrier(len(self._workers) + 1)
        for _ in self._workers:
            self._work.put(_Reset(barrier))
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            raise RequestStuck(
                timeout=timeout,
                requests=self.in_flight(),
                when="the workers were asked to close their connections",
            ) from None
        with self._state:
            self_calls, self._self_calls = self._self_calls, []
        if self_calls:
            raise self_calls[0]

    def stop_workers(self, timeout: float) -> RequestStuck | None:
        """Close idle sockets, drain, and join the workers.

        Returns the error describing requests still running after `timeout`,
        instead of raising it, so the caller can end their database sessions
        before reporting.
        """
        self._watcher.close()
        stuck: RequestStuck | None = None
        try:
            self.wait_idle(timeout, "the live server was asked to stop")
        except RequestStuck as error:
            stuck = error
        for _ in self._workers:
            self._work.put(_STOP)
        deadline = time.monotonic() + (0 if stuck else timeout)
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return stuck

    def join_workers(self, timeout: float) -> bool:
        """Wait up to `timeout` for the workers to exit; True if all did."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in self._workers)


class SafeLiveServerThread(LiveServerThread):
    """Django's ``LiveServerThread``, serving from a ``BoundedWSGIServer``."""

    server_class = BoundedWSGIServer  # type: ignore[assignment]
    httpd: BoundedWSGIServer  # type: ignore[assignment]

    def __init__(
        self,
        host: str,
        static_handler: Any,
        connections_override: dict[str, Any] | None = None,
        port: int = 0,
        *,
        config: Config | None = None,
    ) -> None:
        super().__init__(host, static_handler, connections_override, port)
        self.config = config if config is not None else resolve()
        self.account = ServerAccount(
            self.config.max_connections, trace=self.config.trace
        )
        """This server's sessions and budget, counted while it is activated."""
        self.stuck: RequestStuck | None = None

    def _create_server(
        self, connections_override: dict[str, Any] | None = None
    ) -> BoundedWSGIServer:
        return self.server_class(
            (self.host, self.port),
            SafeRequestHandler,
            allow_reuse_address=False,
            connections_override=connections_override,
            workers=self.config.workers,
            account=self.account,
            session_per_request=self.config.session_per_request,
        )

    def reset(self) -> None:
        """Drain in-flight requests and close every worker's database connections.

        Nothing to do when the server failed to start (its error was raised
        where it started).
        """
        if hasattr(self, "httpd"):
            self.httpd.reset(self.config.drain_timeout)

    def terminate(self) -> None:
        """Stop accepting, drain and join the workers, then end the thread.

        A request still running after the drain timeout is recorded in
        ``self.stuck`` rather than raised, so the caller can end its database
        session before failing.
        """
        if self.is_ready.is_set() and hasattr(self, "httpd"):
            self.httpd.shutdown()
            self.httpd.server_close()
            self.stuck = self.httpd.stop_workers(self.config.drain_timeout)
        self.join()
