"""``--servers``: our pool against waitress and cheroot, four threads each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.db import connections

from tests._sampler import Sampler, connect
from tests.benchmarks._run import BY_NAME, http_load, serving, wait_empty


@contextmanager
def third_party(name: str) -> Iterator[int]:
    """Serve Django's WSGI app through waitress or cheroot with four threads."""
    app = WSGIHandler()
    if name == "waitress":
        import waitress

        server: Any = waitress.create_server(app, host="localhost", port=0, threads=4)
        runner = threading.Thread(target=server.run, daemon=True)
        runner.start()
        try:
            yield int(server.effective_port)
        finally:
            server.close()
            runner.join(5)
    else:
        from cheroot.wsgi import Server

        server = Server(("localhost", 0), app, numthreads=4)
        server.prepare()
        runner = threading.Thread(target=server.serve, daemon=True)
        runner.start()
        try:
            yield int(server.bind_addr[1])
        finally:
            server.stop()
            runner.join(5)


@contextmanager
def pool() -> Iterator[int]:
    """django-safelive's pool of four, as in the main benchmark."""
    with serving(BY_NAME["pool-4@600"]) as thread:
        yield thread.port


def end_sessions(datname: str) -> int:
    """Terminate every session left on the benchmark database; return how many."""
    conn = connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s",
                [datname],
            )
            ended = int(cursor.fetchone()[0])
    finally:
        conn.close()
    wait_empty(datname)
    return ended


def compare_servers(total: int, datname: str) -> None:
    """Req/s, peak sessions, and the sessions each server leaves on the
    database after it stopped."""
    header = f"{'server':<10} {'clients':>7} {'req/s':>8} {'peak sessions':>14}"
    print(f"{header} {'errors':>7} {'left at stop':>13}")
    for name in ("pool-4", "waitress", "cheroot"):
        for clients in (1, 8):
            server: AbstractContextManager[int] = (
                pool() if name == "pool-4" else third_party(name)
            )
            with Sampler(datname) as sampler, server as port:
                done = http_load(f"http://localhost:{port}/items/", clients, total)
            connections.close_all()
            time.sleep(0.5)  # let closed sessions leave pg_stat_activity
            left = end_sessions(datname)
            print(
                f"{name:<10} {clients:>7} {done.rate:>8.0f} {sampler.peak:>14} "
                f"{done.errors:>7} {left:>13}"
            )
