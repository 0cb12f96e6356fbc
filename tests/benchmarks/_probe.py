"""Where a live server spends a request: timed from inside the server."""

from __future__ import annotations

import statistics
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import WSGIRequestHandler
from django.db.backends.signals import connection_created
from django.http.response import HttpResponseBase

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class Probe:
    """While active, time every request any live server in this process handles.

    ``server_ms``: from the parsed request line to the end of Django's
    ``handle_one_request`` (headers, the app, writing the response, and the
    ``request_finished`` signal, which closes a session CONN_MAX_AGE says to
    close); not the accept, the hand-off to a worker or thread, nor closing
    the socket. ``app_ms``: the ``WSGIHandler`` call inside it (middleware, the
    view and its query, opening a session when there is none). ``connects``:
    sessions Django opened (or, with a psycopg pool, took from it) per request.
    ``empty_reads``: per request, the handler reading no request at all, only
    the client closing the connection (a worker dispatched for nothing, in
    django-safelive's pool; the connection's own thread, in Django's).
    Django's and django-safelive's handlers both inherit these methods, so both
    are timed alike; the patches are undone on exit.
    """

    def __init__(self) -> None:
        self.server_s: list[float] = []
        self.app_s: list[float] = []
        self.connects = 0
        self.empty_reads = 0
        self._started = threading.local()
        self._originals: dict[tuple[type, str], Any] = {}

    def summary(self) -> dict[str, float | None]:
        """Medians in ms, and connects per request; None for no request."""
        if not self.server_s:
            return dict.fromkeys(("server_ms", "app_ms", "connects", "empty_reads"))
        return {
            "server_ms": statistics.median(self.server_s) * 1000,
            "app_ms": statistics.median(self.app_s) * 1000 if self.app_s else None,
            "connects": self.connects / len(self.server_s),
            "empty_reads": self.empty_reads / len(self.server_s),
        }

    def _connected(self, sender: object, **kwargs: object) -> None:
        self.connects += 1  # under the GIL: no request is lost

    def _patch(self, cls: type, name: str, replacement: Any) -> None:
        self._originals[(cls, name)] = cls.__dict__.get(name)
        setattr(cls, name, replacement)

    def __enter__(self) -> Probe:
        probe = self
        parse = WSGIRequestHandler.parse_request
        handle = WSGIRequestHandler.handle_one_request
        call = WSGIHandler.__call__

        def parse_request(handler: WSGIRequestHandler) -> bool:
            probe._started.at = time.perf_counter()
            return parse(handler)

        def handle_one_request(handler: WSGIRequestHandler) -> None:
            probe._started.at = None
            try:
                handle(handler)
            finally:
                # Django's handler parses even the empty line of a closed
                # connection (and finds no request in it).
                began = probe._started.at
                if getattr(handler, "raw_requestline", None) == b"":
                    probe.empty_reads += 1
                elif began is not None:
                    probe.server_s.append(time.perf_counter() - began)

        def timed_call(
            app: WSGIHandler, environ: WSGIEnvironment, start_response: StartResponse
        ) -> HttpResponseBase:
            began = time.perf_counter()
            try:
                return call(app, environ, start_response)
            finally:
                probe.app_s.append(time.perf_counter() - began)

        self._patch(WSGIRequestHandler, "parse_request", parse_request)
        self._patch(WSGIRequestHandler, "handle_one_request", handle_one_request)
        self._patch(WSGIHandler, "__call__", timed_call)
        connection_created.connect(self._connected, weak=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection_created.disconnect(self._connected)
        for (cls, name), original in self._originals.items():
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        self._originals.clear()
