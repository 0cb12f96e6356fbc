"""Requests/s and peak sessions: Django's live server vs django-safelive's.

Run with ``nox -s bench``, or in a test environment:
``DJANGO_SETTINGS_MODULE=tests.settings python -m benchmarks [--requests N]``.
Each figure is the median of --repeat runs. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["SAFELIVE_TEST_DB_NAME"] = "test_safelive_bench"

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.db import connections  # noqa: E402
from django.test.testcases import LiveServerThread, _StaticFilesHandler  # noqa: E402
from django.test.utils import (  # noqa: E402
    override_settings,
    setup_databases,
    teardown_databases,
)

from django_safelive import Config, SafeLiveServerThread  # noqa: E402
from django_safelive._budget import guard  # noqa: E402
from tests._sampler import Sampler, connect, count_sessions  # noqa: E402
from tests.testapp.views import TOKEN  # noqa: E402

BUDGET = 8
VARIANTS: dict[str, Callable[[], LiveServerThread]] = {
    "stock": lambda: LiveServerThread("localhost", _StaticFilesHandler),
    "single": lambda: SafeLiveServerThread(
        "localhost", _StaticFilesHandler, config=Config(BUDGET, "single", 1, 10.0)
    ),
    "pool-4": lambda: SafeLiveServerThread(
        "localhost", _StaticFilesHandler, config=Config(BUDGET, "pool", 4, 10.0)
    ),
}


@contextmanager
def serving(variant: str) -> Iterator[LiveServerThread]:
    """Start a server thread as Django's LiveServerTestCase does; stop it after."""
    thread = VARIANTS[variant]()
    thread.daemon = True
    budget = (
        guard.activate(BUDGET, thread.tag)
        if isinstance(thread, SafeLiveServerThread)
        else nullcontext()
    )
    with budget:
        thread.start()
        thread.is_ready.wait()
        if thread.error:
            raise thread.error
        try:
            yield thread
        finally:
            thread.terminate()


@contextmanager
def third_party(name: str) -> Iterator[int]:
    """Serve Django's WSGI app through waitress or cheroot with four threads."""
    from django.core.handlers.wsgi import WSGIHandler

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
    """Our pool vs waitress and cheroot (4 threads each): req/s, peak sessions,
    and the sessions each leaves on the database after it stopped."""
    header = f"{'server':<10} {'clients':>7} {'req/s':>8} {'peak sessions':>14}"
    print(f"{header} {'errors':>7} {'left at stop':>13}")
    for name in ("pool-4", "waitress", "cheroot"):
        for clients in (1, 8):
            server = serving(name) if name == "pool-4" else third_party(name)
            with Sampler(datname) as sampler, server as running:
                port = running if isinstance(running, int) else running.port
                url = f"http://localhost:{port}/items/"
                rate, errors = load(url, clients, total)
            connections.close_all()
            time.sleep(0.5)  # let closed sessions leave pg_stat_activity
            left = end_sessions(datname)
            print(
                f"{name:<10} {clients:>7} {rate:>8.0f} {sampler.peak:>14} "
                f"{errors:>7} {left:>13}"
            )


def load(url: str, clients: int, total: int) -> tuple[float, int]:
    """`clients` threads, one keep-alive session each, share `total` GETs."""
    errors = 0
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(count: int) -> None:
        nonlocal errors
        failed = 0
        with requests.Session() as session:
            start.wait()
            for _ in range(count):
                try:
                    response = session.get(
                        url, headers={"Authorization": f"Bearer {TOKEN}"}
                    )
                    failed += response.status_code != 200
                except requests.RequestException:
                    failed += 1
        with lock:
            errors += failed

    threads = [
        threading.Thread(target=client, args=(total // clients,))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return (total // clients * clients) / (time.perf_counter() - began), errors


def wait_empty(datname: str, timeout: float = 15.0) -> int:
    """Wait for the database to have no session left; return how many remain."""
    conn = connect()
    try:
        deadline = time.monotonic() + timeout
        while (left := count_sessions(conn, datname)) and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.05)
        return left
    finally:
        conn.close()


def measure(variant: str, clients: int, total: int, datname: str) -> dict[str, Any]:
    """One run: throughput, peak sessions, sessions left right after stopping."""
    conn = connect()
    try:
        with Sampler(datname) as sampler:
            with serving(variant) as thread:
                rate, errors = load(
                    f"http://localhost:{thread.port}/items/", clients, total
                )
            left = count_sessions(conn, datname)
    finally:
        conn.close()
    connections.close_all()
    wait_empty(datname)
    return {"req_s": rate, "peak": sampler.peak, "errors": errors, "left": left}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument(
        "--servers",
        action="store_true",
        help="compare the pool with waitress and cheroot instead",
    )
    args = parser.parse_args()
    client_counts = [int(count) for count in args.clients.split(",")]

    old_config = setup_databases(verbosity=0, interactive=False)
    datname = connections["default"].settings_dict["NAME"]
    connections.close_all()
    rows = []
    # As LiveServerTestCase does, let the live server's host in.
    allowed = override_settings(ALLOWED_HOSTS=["localhost"])
    allowed.enable()
    try:
        if args.servers:
            compare_servers(args.requests, datname)
            return
        for variant in VARIANTS:
            for clients in client_counts:
                runs = [
                    measure(variant, clients, args.requests, datname)
                    for _ in range(args.repeat)
                ]
                rows.append(
                    {
                        "variant": variant,
                        "clients": clients,
                        **{
                            key: statistics.median(run[key] for run in runs)
                            for key in runs[0]
                        },
                    }
                )
    finally:
        allowed.disable()
        teardown_databases(old_config, verbosity=0)

    print(
        f"GET /items/ (one DB query), {args.requests} requests per run, "
        f"median of {args.repeat}; CONN_MAX_AGE = "
        f"{connections['default'].settings_dict['CONN_MAX_AGE']}; budget {BUDGET}\n"
    )
    print(f"{'server':<8} {'clients':>7} {'req/s':>8} {'peak sessions':>14} "
          f"{'errors':>7} {'left at stop':>13}")  # fmt: skip
    for row in rows:
        print(
            f"{row['variant']:<8} {row['clients']:>7} {row['req_s']:>8.0f} "
            f"{row['peak']:>14.0f} {row['errors']:>7.0f} {row['left']:>13.0f}"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)


main()
