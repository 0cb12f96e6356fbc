"""A live server with a fixed pool of worker threads, built on Django's own."""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.core.servers.basehttp import WSGIServer
from django.db import close_old_connections, connections
from django.test.testcases import LiveServerThread, QuietWSGIRequestHandler

from django_safelive._budget import (
    SERVER_WORKER,
    new_tag,
    set_current_request,
    set_thread_role,
)
from django_safelive._config import Config, resolve
from django_safelive._exceptions import RequestStuck

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_Address = Any
_Request = tuple[socket.socket, _Address]


class SafeRequestHandler(QuietWSGIRequestHandler):
    """Django's quiet live-server handler, with a socket timeout.

    The timeout bounds how long a client that stops sending mid-request can
    occupy a worker.
    """

    timeout = 10


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
                self._dispatch(key.fileobj, key.data)  # type: ignore[arg-type]
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


class BoundedWSGIServer(WSGIServer):
    """Django's ``WSGIServer`` serving requests from a fixed pool of workers.

    It is not a ``ThreadingMixIn`` server, so Django's ``ServerHandler`` answers
    every request with ``Connection: close``: no socket idles in keep-alive
    holding a worker and its database session. Requests beyond the pool's size
    wait in a queue.
    """

    def __init__(
        self,
        *args: Any,
        workers: int,
        connections_override: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.connections_override = connections_override or {}
        # An in-memory SQLite connection is shared by the test thread and every
        # worker, as in Django; one sqlite3 connection cannot serve two threads
        # at once, so requests on it are served one at a time.
        self._shared: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.connections_override else contextlib.nullcontext()
        )
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
    def process_request(self, request: Any, client_address: _Address) -> None:
        self._watcher.watch(request, client_address)

    def set_app(self, application: WSGIApplication | None) -> None:
        assert application is not None

        def tracked(
            environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            # The path only: query strings can carry tokens.
            request = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
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
        set_thread_role(SERVER_WORKER)
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
        try:
            with self._shared:
                self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                self.shutdown_request(request)
                # CONN_MAX_AGE decides whether this worker's connection persists.
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
        """Drain in-flight requests, then make every worker close its connections."""
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
        self.tag = new_tag()
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
        )

    def reset(self) -> None:
        """Drain in-flight requests and close every worker's database connections."""
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
