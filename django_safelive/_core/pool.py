"""Django's ``WSGIServer`` serving requests from a fixed pool of worker threads."""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.core.servers.basehttp import WSGIServer
from django.db import connections

from django_safelive._core import keepalive, selfcalls, threads, worker_sessions
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.exceptions import RequestStuck, WorkersDidNotExit
from django_safelive._core.holders import (
    SERVER_WORKER,
    bind_thread,
    describe_request,
    set_current_request,
)
from django_safelive._core.keepalive import Address, Request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


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

# A worker's work: requests, _Reset and _STOP.
_Inbox = queue.SimpleQueue[object]

# How long workers that never served are given to exit when the server fails
# to start (they exit at once).
_IDLE_EXIT_TIMEOUT = 5.0

# How long the accepting thread waits for a new connection's first bytes
# before handing the socket to the idle watcher.
FIRST_REQUEST_WAIT = 0.005


class BoundedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """Django's ``WSGIServer`` serving requests from a fixed pool of workers.

    It overrides ``ThreadingMixIn.process_request``, so no thread is started per
    connection; the mixin is there because Django's ``ServerHandler`` keeps a
    connection alive only for a threaded server. A keep-alive socket goes back
    to the idle watcher after each response, so no socket idling in keep-alive
    holds a worker and its database session. Requests beyond the pool's size
    wait in a queue.
    """

    # Clients beyond the pool wait in the kernel's backlog; at Django's 10 it
    # overflows under a burst of connections and resets some of them.
    request_queue_size = socket.SOMAXCONN
    # What the self-call check watches while the server listens; none until
    # the server is bound (socketserver closes it when binding fails).
    _watches: tuple[selfcalls.SingleWorker | selfcalls.SharedConnection, ...] = ()

    def __init__(
        self,
        *args: Any,
        workers: int,
        account: ServerAccount,
        connections_override: dict[str, Any] | None = None,
        session_per_request: bool = False,
        **kwargs: Any,
    ) -> None:
        # serve_forever()'s state, and the socket shutdown() wakes it with;
        # first, for server_close(), which socketserver calls if binding fails.
        self._stopping = False
        self._loop_ended = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        super().__init__(*args, **kwargs)
        self.account = account
        self.session_per_request = session_per_request
        self.connections_override = connections_override or {}
        own = selfcalls.OwnAddress(self.server_address)
        self._single = selfcalls.SingleWorker(own) if workers == 1 else None
        # A shared connection (in-memory SQLite, as in Django; the rollback
        # server's) serves one request at a time.
        self._shared = (
            selfcalls.SharedConnection(own) if self.connections_override else None
        )
        self._watches = tuple(w for w in (self._single, self._shared) if w is not None)
        selfcalls.watch(*self._watches)
        self._state = threading.Condition()
        self._queued = 0
        self._running: dict[int, _InFlight] = {}
        # Each worker's own work; the idle ones, the last to have finished on
        # top; requests no worker was idle for, oldest first.
        self._inboxes: list[_Inbox] = [queue.SimpleQueue() for _ in range(workers)]
        self._idle = list(reversed(self._inboxes))
        self._backlog: deque[Request] = deque()
        # The workers given a request since the last reset (marked as it is
        # given, with the lock held).
        self._served: set[_Inbox] = set()
        self._workers: list[threading.Thread] = []
        try:
            for number, inbox in enumerate(self._inboxes, start=1):
                self._workers.append(
                    threads.start_daemon(
                        f"safelive-worker-{number}", self._work_loop, inbox
                    )
                )
            self._watcher = keepalive.IdleWatcher(self._enqueue)
        except BaseException:
            # A thread that would not start: end the others (which may hold
            # shared connections: gone before the caller cleans up), free the
            # port.
            for inbox in self._inboxes[: len(self._workers)]:
                inbox.put(_STOP)
            self.join_workers(_IDLE_EXIT_TIMEOUT, "a worker did not start")
            self.server_close()
            raise

    # -- socketserver hooks -------------------------------------------------
    def serve_forever(self, poll_interval: float | None = None) -> None:
        """socketserver's loop, which ``shutdown()`` also wakes.

        socketserver's own loop notices a shutdown at its next poll only (every
        0.5 s by default, as Django's live server runs it): stopping the server
        would cost every test class up to that long.
        """
        self._loop_ended.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stopping:
                    ready = selector.select(poll_interval)
                    if self._stopping:
                        break
                    woken = {key.fileobj for key, _events in ready}
                    if self._wake_reader in woken:
                        # A wake-up left by an earlier shutdown() of a server
                        # that serves again: read it, or it wakes every select.
                        self._wake_reader.recv(4096)
                    if self in woken:
                        # What socketserver's loop calls (typeshed omits it).
                        self._handle_request_noblock()  # type: ignore[attr-defined]
                    self.service_actions()
        finally:
            self._stopping = False
            self._loop_ended.set()

    def shutdown(self) -> None:
        """End ``serve_forever()`` at once, and wait until it has."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        self._loop_ended.wait()

    def server_close(self) -> None:
        """Stop listening; from then on no connection reaches the server, so
        none of its workers' connections is checked any more."""
        super().server_close()
        selfcalls.unwatch(*self._watches)
        self._wake_reader.close()
        self._wake_writer.close()

    def process_request(self, request: Any, client_address: Address) -> None:
        # A request sent right after connecting (most are) goes straight to a
        # worker, saving a hand-off to the idle watcher and back; a socket with
        # nothing to read within a few milliseconds (a browser's speculative
        # connection, say) waits in the watcher.
        first = keepalive.peek(request, wait=FIRST_REQUEST_WAIT)
        if first is None:
            self._watcher.watch(request, client_address)
        elif first:
            self._enqueue(request, client_address)
        else:  # closed by the client before it sent anything
            keepalive.close_socket(request)

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
    def _enqueue(self, request: socket.socket, client_address: Address) -> None:
        """Give a request to the worker that went idle last, whose database
        session is the likeliest to be open already (one client's requests,
        one after the other, keep to one worker and its session); with none
        idle, queue it."""
        with self._state:
            self._queued += 1
            if not self._idle:
                self._backlog.append((request, client_address))
                return
            inbox = self._idle.pop()
            self._served.add(inbox)
        inbox.put((request, client_address))

    def _work_loop(self, inbox: _Inbox) -> None:
        bind_thread(self.account, SERVER_WORKER)
        worker_sessions.keep_sessions(not self.session_per_request)
        selfcalls.serve_as(self._single)
        for alias, conn in self.connections_override.items():
            connections[alias] = conn
        try:
            while True:
                item = inbox.get()
                if item is _STOP:
                    return
                if isinstance(item, _Reset):
                    connections.close_all()
                    # A broken barrier means the caller gave up waiting; carry on.
                    with contextlib.suppress(threading.BrokenBarrierError):
                        item.barrier.wait()
                    continue
                request: Request | None = cast(Request, item)
                while request is not None:
                    self._serve(*request)
                    request = self._next(inbox)
        finally:
            connections.close_all()

    def _next(self, inbox: _Inbox) -> Request | None:
        """The oldest queued request, or None once the worker is idle again."""
        with self._state:
            if self._backlog:
                self._served.add(inbox)
                return self._backlog.popleft()
            self._idle.append(inbox)
            return None

    def _serve(self, request: socket.socket, client_address: Address) -> None:
        self._started(client_address)
        keep_alive = False
        try:
            shared = self._shared
            with shared.serving(client_address) if shared else contextlib.nullcontext():
                keep_alive = keepalive.handle(
                    self.finish_request, request, client_address
                )
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                if keep_alive:
                    # Idle until the client's next request, at no worker's cost.
                    self._watcher.watch(request, client_address)
                else:
                    self.shutdown_request(request)
                worker_sessions.after_request(
                    session_per_request=self.session_per_request,
                    shared=self.connections_override,
                )
            except Exception:
                # A session ended under us (pg_terminate_backend, a restart) must
                # neither kill the worker nor leave the request counted as running.
                self.handle_error(request, client_address)
            finally:
                set_current_request(None)
                self._finished()

    def _started(self, client_address: Address) -> None:
        with self._state:
            self._queued -= 1
            self._running[threading.get_ident()] = _InFlight(
                worker=threading.current_thread().name,
                client=f"{client_address[0]}:{client_address[1]}",
                started=time.monotonic(),
            )

    def _finished(self) -> None:
        with self._state:
            del self._running[threading.get_ident()]
            self._state.notify_all()

    # -- what the test thread asks ------------------------------------------
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
        # Only a worker that served a request since the last reset can have a
        # connection open: the others are not woken.
        with self._state:
            served, self._served = self._served, set()
        if served:
            self._close_connections(served, timeout)
        selfcalls.raise_refused(self._single)

    def _close_connections(self, inboxes: set[_Inbox], timeout: float) -> None:
        barrier = threading.Barrier(len(inboxes) + 1)
        for inbox in inboxes:
            inbox.put(_Reset(barrier))
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
        or workers that had not exited by then, instead of raising it, so the
        caller can end their database sessions before reporting.
        """
        self._watcher.close()
        stuck: RequestStuck | None = None
        try:
            self.wait_idle(timeout, "the live server was asked to stop")
        except RequestStuck as error:
            stuck = error
        for inbox in self._inboxes:
            inbox.put(_STOP)
        if stuck is not None:
            # The caller ends the stuck requests' sessions, then joins.
            return stuck
        return self.join_workers(timeout, "its workers were asked to exit")

    def join_workers(self, timeout: float, when: str) -> WorkersDidNotExit | None:
        """Wait up to `timeout` for the workers to exit; if some did not, the
        error naming each and the request it is serving."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        alive = [worker for worker in self._workers if worker.is_alive()]
        if not alive:
            return None
        return WorkersDidNotExit(
            timeout=timeout, workers=self._describe(alive), when=when
        )

    def _describe(self, workers: list[threading.Thread]) -> list[str]:
        """What each of `workers`, still alive, is doing."""
        now = time.monotonic()
        with self._state:
            running = {flight.worker: flight for flight in self._running.values()}
        return [
            running[worker.name].describe(now)
            if worker.name in running
            else f"{worker.name}, closing its database connections"
            for worker in workers
        ]
