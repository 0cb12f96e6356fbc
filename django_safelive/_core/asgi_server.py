"""A bounded ASGI live server: uvicorn in a thread, database work on a fixed
set of worker threads.

Under ASGI, Django runs a request's sync code and async ORM calls on a thread
of the request's own (asgiref's ``ThreadSensitiveContext``), and every such
thread opens sessions of its own. Here each HTTP request is served inside a
``ThreadSensitiveContext`` whose executor is one of the server's HTTP workers,
taken for the request's lifetime (requests beyond them wait, they are not
refused); each WebSocket connection runs on one of the WebSocket workers,
which connections share. Sessions are therefore bounded by the workers,
whatever ``CONN_MAX_AGE`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any, cast

from django.db import connections
from django.test.testcases import LiveServerThread

from django_safelive._core import channel_layers, selfcalls, threads, worker_sessions
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.asgi_workers import Worker, on_worker
from django_safelive._core.config import Config, resolve
from django_safelive._core.exceptions import RequestStuck, WorkersDidNotExit
from django_safelive._core.holders import (
    SERVER_WORKER,
    bind_thread,
    describe_request,
)

__all__ = ["BoundedASGIApp", "SafeASGILiveServerThread"]

ASGIApp = Callable[..., Any]

# How long uvicorn may take to stop once the requests have drained.
_STOP_GRACE = 5


class _InFlight:
    def __init__(self, request: str, client: str) -> None:
        self.request = request
        self.client = client
        self.started = time.monotonic()
        self.worker: str | None = None

    def describe(self, now: float) -> str:
        where = f"on {self.worker}" if self.worker else "waiting for a worker"
        return (
            f"{self.request} from {self.client} {where}, "
            f"running for {now - self.started:.1f}s"
        )


class BoundedASGIApp:
    """The application the server runs: `app`, with each HTTP request served
    on one of `http` workers and each WebSocket on one of `websocket`'s."""

    def __init__(
        self,
        app: ASGIApp,
        http: list[Worker],
        websocket: list[Worker],
        *,
        session_per_request: bool,
        shared: dict[str, Any],
    ) -> None:
        self.app = app
        self.http = http
        self.websocket = websocket
        self._after_request = partial(
            worker_sessions.after_request,
            session_per_request=session_per_request,
            shared=shared,
        )
        # Bound to the server's loop on first use (asyncio's queues are since
        # 3.10). Last in, first out: a request goes to the worker that went
        # idle last, whose session is the likeliest to be open already.
        self._idle: asyncio.LifoQueue[Worker] = asyncio.LifoQueue()
        for worker in reversed(http):
            self._idle.put_nowait(worker)
        self._state = threading.Condition()
        self._in_flight: dict[int, _InFlight] = {}
        self._ids = itertools.count()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:  # lifespan is off; anything else goes through untouched
            await self.app(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        key = next(self._ids)
        request = describe_request(scope.get("method", ""), scope.get("path", ""))
        client = scope.get("client") or ("?", 0)
        flight = _InFlight(request, f"{client[0]}:{client[1]}")
        with self._state:
            self._in_flight[key] = flight
        worker: Worker | None = None
        try:
            worker = await self._idle.get()
            with self._state:
                flight.worker = worker.thread.name
            worker.request = request
            async with on_worker(executor=worker):
                await self.app(scope, receive, send)
        finally:
            try:
                if worker is not None:
                    worker.request = None
                    await asyncio.get_running_loop().run_in_executor(
                        worker, self._after_request
                    )
                    self._idle.put_nowait(worker)
            finally:
                with self._state:
                    del self._in_flight[key]
                    self._state.notify_all()

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        worker = min(self.websocket, key=lambda worker: worker.connections)
        worker.connections += 1
        try:
            async with on_worker(executor=worker):
                await self.app(scope, receive, send)
        finally:
            worker.connections -= 1

    def in_flight(self) -> list[str]:
        """Describe the HTTP requests waiting or running right now."""
        now = time.monotonic()
        with self._state:
            return [flight.describe(now) for flight in self._in_flight.values()]

    def wait_idle(self, timeout: float, when: str) -> None:
        """Wait until no HTTP request waits or runs; raise RequestStuck if not."""
        with self._state:
            idle = self._state.wait_for(lambda: not self._in_flight, timeout)
        if not idle:
            raise RequestStuck(timeout=timeout, requests=self.in_flight(), when=when)


async def _shut_down(server: Any, listener: socket.socket) -> None:
    """uvicorn's ``Server.shutdown()``, without its fixed 0.1 s pause.

    By then the requests have drained: what is left are idle keep-alive
    connections, which close at once when asked, and WebSockets, which are
    sent a close frame. Stop listening, ask every connection to close, wait
    for them and their tasks (at most ``_STOP_GRACE``, then cancel the tasks,
    as uvicorn does), and for the listening servers to close.
    """
    for listening in server.servers:
        listening.close()
    listener.close()
    state = server.server_state
    for connection in list(state.connections):
        connection.shutdown()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _STOP_GRACE
    while (state.connections or state.tasks) and loop.time() < deadline:
        await asyncio.sleep(0.001)
    for task in list(state.tasks):
        task.cancel()
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(listening.wait_closed() for listening in server.servers)),
            max(0.0, deadline - loop.time()),
        )


class SafeASGILiveServerThread(threads.ReportsDeathBeforeRun, LiveServerThread):
    """A live server thread serving an ASGI application with uvicorn, its
    database work bounded like ``SafeLiveServerThread``'s."""

    def __init__(
        self,
        host: str,
        application: ASGIApp,
        connections_override: dict[str, Any] | None = None,
        port: int = 0,
        *,
        config: Config | None = None,
    ) -> None:
        # No WSGI static handler: the application serves static files itself.
        super().__init__(host, cast(Any, None), connections_override, port)
        self.application = application
        self.config = config if config is not None else resolve(websockets=True)
        self.account = ServerAccount(self.config.max_sessions, trace=self.config.trace)
        """This server's sessions and budget, counted while it is activated."""
        self.stuck: RequestStuck | None = None
        self.app: BoundedASGIApp | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop the server runs on, once it is ready."""
        self._server: Any = None
        # Set on the server's loop to stop it (not `_stop`: a method of
        # threading.Thread up to Python 3.12).
        self._stop_event: asyncio.Event | None = None
        self._workers: list[Worker] = []
        # The only HTTP worker, in single mode: its calls to the server itself
        # are refused, as the WSGI server's are (see selfcalls).
        self._single: selfcalls.SingleWorker | None = None

    def _start_workers(self, address: tuple[Any, ...]) -> BoundedASGIApp:
        override = self.connections_override or {}
        keep = not self.config.session_per_request

        def setup(single: selfcalls.SingleWorker | None) -> None:
            bind_thread(self.account, SERVER_WORKER)
            worker_sessions.keep_sessions(keep)
            selfcalls.serve_as(single)
            for alias, conn in override.items():
                connections[alias] = conn

        # An in-memory SQLite connection is shared with the test thread: one
        # thread serves everything, as Django's live server does.
        count = 1 if override else self.config.workers
        if count == 1:
            self._single = selfcalls.SingleWorker(selfcalls.OwnAddress(address))
            selfcalls.watch(self._single)
        # Each in self._workers as it starts, for _stop_workers() should the
        # next one fail to.
        http = [
            self._worker(f"safelive-asgi-worker-{n}", partial(setup, self._single))
            for n in range(1, count + 1)
        ]
        if override:
            websocket = http
        else:
            websocket = [
                self._worker(f"safelive-websocket-worker-{n}", partial(setup, None))
                for n in range(1, self.config.websocket_workers + 1)
            ]
        return BoundedASGIApp(
            self.application,
            http,
            websocket,
            session_per_request=self.config.session_per_request,
            shared=override,
        )

    def _worker(self, name: str, setup: Callable[[], None]) -> Worker:
        worker = Worker(name, setup)
        self._workers.append(worker)
        return worker

    def run(self) -> None:
        # Everything that blocks (imports, binding, the workers' start) is done
        # before the event loop runs, which then only serves.
        listener: socket.socket | None = None
        try:
            import uvicorn

            listener = socket.create_server((self.host, self.port))
            # asyncio sets TCP_NODELAY only on sockets accepted from a listener
            # whose protocol is IPPROTO_TCP (create_server's is 0): without it
            # a response sent in two writes waits ~40 ms for a delayed ACK.
            listener = socket.socket(
                listener.family, listener.type, socket.IPPROTO_TCP, listener.detach()
            )
            self.port = listener.getsockname()[1]
            self.app = self._start_workers(listener.getsockname())
            config = uvicorn.Config(
                self.app,
                lifespan="off",
                http="h11",
                ws="wsproto",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=_STOP_GRACE,
            )
            config.load()
            self._server = uvicorn.Server(config)
            self._server.lifespan = config.lifespan_class(config)
            asyncio.run(self._serve(listener))
        except Exception as error:  # reported by setUpClass, as Django does
            if listener is not None:
                listener.close()
            self._stop_workers()
            # Gone before the caller cleans up the connections they may share.
            self.stuck = self.join_workers(
                self.config.drain_timeout, "the server failed to start"
            )
            self.error = error
            self.is_ready.set()

    async def _serve(self, listener: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        # Channels' in-memory layer, called from the test thread, runs on this
        # loop while the server runs: whatever starts the server gets that.
        undo = channel_layers.route_to_server_loop(self.loop)
        try:
            server = self._server
            await server.startup(sockets=[listener])
            self._stop_event = asyncio.Event()
            self.is_ready.set()
            # uvicorn's loop ticks every 0.1 s (it keeps the Date header
            # current) and would notice should_exit at its next tick only.
            ticking = asyncio.ensure_future(server.main_loop())
            stopping = asyncio.ensure_future(self._stop_event.wait())
            await asyncio.wait({ticking, stopping}, return_when=asyncio.FIRST_COMPLETED)
            ticking.cancel()
            stopping.cancel()
            await _shut_down(server, listener)
        finally:
            undo()

    def in_flight(self) -> list[str]:
        """Describe the requests waiting or running right now."""
        return self.app.in_flight() if self.app else []

    def reset(self) -> None:
        """Drain in-flight HTTP requests and close every worker's sessions."""
        if self.app is None:
            return
        timeout = self.config.drain_timeout
        self.app.wait_idle(timeout, "the test asked for a reset")
        closing = [worker.submit(connections.close_all) for worker in self._workers]
        deadline = time.monotonic() + timeout
        for future in closing:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                raise RequestStuck(
                    timeout=timeout,
                    requests=self.in_flight(),
                    when="the workers were asked to close their connections",
                ) from None
        selfcalls.raise_refused(self._single)

    def terminate(self) -> None:
        """Drain, stop uvicorn and the workers, then end the thread.

        As for the WSGI server, a request still running after the drain
        timeout is recorded in ``self.stuck`` rather than raised.
        """
        if self.is_ready.is_set() and self.app is not None:
            try:
                self.app.wait_idle(
                    self.config.drain_timeout, "the live server was asked to stop"
                )
            except RequestStuck as error:
                self.stuck = error
            if self._server is not None:
                self._server.should_exit = True
            if self.loop is not None and self._stop_event is not None:
                with contextlib.suppress(RuntimeError):  # the loop has ended
                    self.loop.call_soon_threadsafe(self._stop_event.set)
            self.join(self.config.drain_timeout + _STOP_GRACE)
            self._stop_workers()
            if self.stuck is None:
                self.stuck = self.join_workers(
                    self.config.drain_timeout, "its workers were asked to exit"
                )
        self.join(self.config.drain_timeout + _STOP_GRACE)

    def _stop_workers(self) -> None:
        """Tell every worker to close its sessions and exit, without waiting."""
        if self._single is not None:
            selfcalls.unwatch(self._single)
        for worker in self._workers:
            worker.shutdown(wait=False)

    def join_workers(self, timeout: float, when: str) -> WorkersDidNotExit | None:
        """Wait up to `timeout` for the workers to exit; if some did not, the
        error naming each."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        alive = [worker for worker in self._workers if worker.thread.is_alive()]
        if not alive:
            return None
        return WorkersDidNotExit(
            timeout=timeout,
            workers=[
                f"{worker.thread.name}, serving {worker.request}"
                if worker.request
                else f"{worker.thread.name}, running a WebSocket's database work"
                for worker in alive
            ],
            when=when,
        )
