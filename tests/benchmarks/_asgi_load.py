"""``python -m tests.benchmarks._asgi_load SPEC``: the ``--asgi`` benchmark's
clients, in a process of their own, so that neither server shares a GIL with
them (Channels' runs in a child process; ours in the benchmark's).

SPEC is JSON: ``http`` and ``ws``, the base URLs; ``http_clients`` keep-alive
``requests.Session`` clients, each sending ``http_requests`` requests, in turn
GET /asgi/items/ and GET /asgi/create/; ``websockets`` WebSockets to
/ws/items/, each sending ``messages`` messages and waiting for each reply.
Either count may be 0. Every client starts at once (the WebSockets already
open); each side is timed until its last client is done. Failures are
counted, not raised. Prints one line of JSON.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

# A request or reply that takes this long has hung: count it, don't wait more.
TIMEOUT = 30.0


@dataclass
class Side:
    """What one side's clients did: answered, failed, latencies, end times."""

    ok: int = 0
    failed: int = 0
    sockets_failed: int = 0
    latencies: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: int, failed: int, latencies: list[float]) -> None:
        """Record one client's counts once it is done."""
        with self.lock:
            self.ok += ok
            self.failed += failed
            self.latencies.extend(latencies)
            self.ends.append(time.perf_counter())

    def summary(self, began: float, clients: int) -> dict[str, Any] | None:
        """Counts, rate per second and median latency; None without clients."""
        if not clients:
            return None
        seconds = max(self.ends) - began
        return {
            "ok": self.ok,
            "failed": self.failed,
            "sockets_failed": self.sockets_failed,
            "seconds": seconds,
            "rate": self.ok / seconds,
            "median_ms": (
                statistics.median(self.latencies) * 1000 if self.latencies else None
            ),
        }


def http_client(
    base: str, number: int, total: int, start: threading.Barrier, side: Side
) -> None:
    """One keep-alive client: reads and writes in turn; non-200s count as failed."""
    ok = failed = 0
    latencies = []
    with requests.Session() as session:
        start.wait()
        for n in range(total):
            url = (
                f"{base}/asgi/create/?name=bench-{number}-{n}"
                if n % 2
                else f"{base}/asgi/items/"
            )
            began = time.perf_counter()
            try:
                status = session.get(url, timeout=TIMEOUT).status_code
            except requests.RequestException:
                status = 0
            latencies.append(time.perf_counter() - began)
            ok += status == 200
            failed += status != 200
    side.add(ok, failed, latencies)


def _open(base: str) -> ClientConnection | None:
    """A WebSocket to /ws/items/, or None if it could not be opened."""
    try:
        return connect(f"{base}/ws/items/", open_timeout=TIMEOUT)
    except (WebSocketException, OSError):
        return None


def ws_client(
    base: str, number: int, total: int, start: threading.Barrier, side: Side
) -> None:
    """One WebSocket: a message, its reply, `total` times; every message not
    answered (the socket refused or closed, a reply lost) counts as failed."""
    websocket = _open(base)
    start.wait()
    ok = 0
    latencies = []
    if websocket is not None:
        with websocket:
            try:
                for n in range(total):
                    began = time.perf_counter()
                    websocket.send(json.dumps({"name": f"ws-{number}-{n}"}))
                    reply = json.loads(websocket.recv(timeout=TIMEOUT))
                    latencies.append(time.perf_counter() - began)
                    ok += "count" in reply
            except (WebSocketException, OSError, ValueError):
                pass
    with side.lock:
        side.sockets_failed += websocket is None or ok < total
    side.add(ok, total - ok, latencies)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run every client at once; each side's summary."""
    http, ws = Side(), Side()
    clients = [
        (http_client, spec["http"], spec["http_requests"], http)
        for _ in range(spec["http_clients"])
    ] + [
        (ws_client, spec["ws"], spec["messages"], ws) for _ in range(spec["websockets"])
    ]
    start = threading.Barrier(len(clients) + 1, timeout=2 * TIMEOUT)
    threads = [
        threading.Thread(target=target, args=(base, number, total, start, side))
        for number, (target, base, total, side) in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return {
        "http": http.summary(began, spec["http_clients"]),
        "ws": ws.summary(began, spec["websockets"]),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
