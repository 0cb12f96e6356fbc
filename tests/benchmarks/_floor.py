"""What real HTTP costs a Schemathesis call before any server does any work.

One call through Schemathesis's requests transport (a new ``requests.Session``
per call, as ``case.call(base_url=...)`` makes) to a socket that answers as
soon as the request's headers have arrived, against the same call through its
WSGI transport to an application that answers at once. The difference, times
the requests a suite sends, is what any live server adds to the suite's
in-process run however fast it serves (``least``): ``--rollback`` and the main
benchmark report the best ratio this leaves reachable.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
import schemathesis
from django.db import connections

from tests.testapp.views import OPENAPI

BODY = json.dumps({"results": [], "count": 0}).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY)
)


def _answer(conn: socket.socket) -> None:
    with conn:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                return
            received += chunk
        conn.sendall(RESPONSE)
        conn.shutdown(socket.SHUT_WR)


@contextmanager
def instant_server() -> Iterator[str]:
    """The base URL of a socket served by one thread, which answers every
    connection with ``RESPONSE`` once its headers have arrived."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):  # a client gone, or silent
                _answer(conn)

    server = threading.Thread(target=serve, name="instant-server", daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        server.join(5)
        listener.close()


def _instant_app(environ: Any, start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/openapi.json":
        body = json.dumps(OPENAPI).encode()
    else:
        body = BODY
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def _median_ms(call: Callable[[], object], calls: int) -> float:
    for _ in range(min(calls, 20)):  # warm
        call()
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def per_call_ms(calls: int, headers: dict[str, str]) -> dict[str, float]:
    """The median ms of one ``GET /items/`` call over HTTP to the instant
    server and in-process to the instant application, and their difference."""
    http_case = schemathesis.openapi.from_dict(OPENAPI)["/items/"]["GET"].Case()
    wsgi_schema = schemathesis.openapi.from_wsgi("/openapi.json", _instant_app)
    wsgi_case = wsgi_schema["/items/"]["GET"].Case()
    with instant_server() as base_url:
        http = _median_ms(
            lambda: http_case.call(base_url=base_url, headers=headers), calls
        )
    wsgi = _median_ms(lambda: wsgi_case.call(headers=headers), calls)
    return {"http_ms": http, "wsgi_ms": wsgi, "gap_ms": http - wsgi}


@contextmanager
def counting_requests() -> Iterator[list[int]]:
    """Count the HTTP requests ``requests`` sends while active (one item)."""
    count = [0]
    original = requests.Session.send

    def send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        yield count
    finally:
        requests.Session.send = original  # type: ignore[method-assign]


def connect_ms(alias: str, times: int) -> float:
    """The median ms Django takes to open a session on `alias` (this thread's
    connection, closed after each): what a server that ends its sessions
    between two examples pays again in the next one."""
    wrapper = connections[alias]
    wrapper.close()
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        wrapper.ensure_connection()
        spent.append(time.perf_counter() - began)
        wrapper.close()
    return statistics.median(spent) * 1000


def least(
    in_process_s: float,
    requests_sent: int,
    per_call: dict[str, float],
    *,
    sessions: int = 0,
    connect_ms: float = 0.0,
) -> dict[str, float]:
    """`per_call` (see ``per_call_ms``) and the least wall time a live server
    could take for a run that took `in_process_s` in-process: plus the HTTP
    gap for each of `requests_sent`, plus `connect_ms` for each of `sessions`
    it must open anew."""
    wall = (
        in_process_s
        + (requests_sent * per_call["gap_ms"] + sessions * connect_ms) / 1000
    )
    return {**per_call, "requests": requests_sent, "least_s": wall}
