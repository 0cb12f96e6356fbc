"""One benchmark run of one variant: throughput, sessions, Schemathesis, drain."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import requests
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.test import Client
from django.test.testcases import LiveServerThread, _StaticFilesHandler
from hypothesis import HealthCheck, given, settings

from django_safelive import Config, SafeLiveServerThread
from django_safelive._budget import guard
from tests._sampler import Sampler, connect, count_sessions
from tests.testapp.models import Item
from tests.testapp.views import OPENAPI, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDPOINTS = ("read", "write")
OPERATIONS = [("/items/", "GET"), ("/items/", "POST"), ("/items/{item_id}/", "GET")]
# A request that takes this long has hung: count it as an error, don't wait more.
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Variant:
    """A way of serving the test app: a live server, or in-process WSGI."""

    name: str
    label: str
    kind: Literal["stock", "single", "pool", "wsgi"]
    workers: int | None = None

    @property
    def budget(self) -> int | None:
        """Sessions per alias django-safelive allows: room for the test thread
        and one more beside the workers."""
        return None if self.workers is None else self.workers + 2

    @property
    def http(self) -> bool:
        return self.kind != "wsgi"


VARIANTS = [
    Variant("stock", "Django LiveServerThread", "stock"),
    Variant("single", "django-safelive single", "single", 1),
    Variant("pool-2", "django-safelive pool (2)", "pool", 2),
    Variant("pool-4", "django-safelive pool (4)", "pool", 4),
    Variant("pool-8", "django-safelive pool (8)", "pool", 8),
    Variant("from_wsgi", "Schemathesis from_wsgi, in-process", "wsgi"),
]
BY_NAME = {variant.name: variant for variant in VARIANTS}


@dataclass(frozen=True)
class Sizes:
    """How much work one run does."""

    requests: int
    clients: list[int]
    examples: int
    drain_clients: int
    drain_timeout: float


def new_thread(variant: Variant) -> LiveServerThread:
    """The server thread LiveServerTestCase would create for `variant`."""
    if variant.workers is None:
        return LiveServerThread("localhost", _StaticFilesHandler)
    config = Config(
        max_connections=variant.workers + 2,
        mode="single" if variant.kind == "single" else "pool",
        workers=variant.workers,
        drain_timeout=10.0,
    )
    return SafeLiveServerThread("localhost", _StaticFilesHandler, config=config)


@contextmanager
def serving(variant: Variant) -> Iterator[LiveServerThread]:
    """Start a server thread as LiveServerTestCase does, ours inside its session
    budget; stop it after, unless the caller already did."""
    thread = new_thread(variant)
    thread.daemon = True
    budget = (
        guard.activate(thread.config.max_connections, thread.tag)
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
            if thread.is_alive():
                thread.terminate()


def _send(
    session: requests.Session | Client, url: str, endpoint: str, number: int
) -> bool:
    """One read or write request; whether it got the expected answer."""
    if endpoint == "read":
        if isinstance(session, Client):
            return session.get(url).status_code == 200
        return session.get(url, headers=AUTH, timeout=REQUEST_TIMEOUT).ok
    body: dict[str, Any] = {"name": f"bench {number}", "price": number}
    if isinstance(session, Client):
        answer = session.post(url, body, content_type="application/json")
        return answer.status_code == 201
    response = session.post(url, json=body, headers=AUTH, timeout=REQUEST_TIMEOUT)
    return response.status_code == 201


def http_load(
    url: str, clients: int, total: int, endpoint: str = "read"
) -> tuple[float, int]:
    """`clients` threads, one keep-alive session each, share `total` requests;
    requests/s and errors."""
    errors = 0
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    each = max(1, total // clients)

    def client() -> None:
        nonlocal errors
        failed = 0
        with requests.Session() as session:
            start.wait()
            for number in range(each):
                try:
                    failed += not _send(session, url, endpoint, number)
                except requests.RequestException:
                    failed += 1
        with lock:
            errors += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return each * clients / (time.perf_counter() - began), errors


def wsgi_load(total: int, endpoint: str) -> tuple[float, int]:
    """`total` requests through Django's test client, in this thread, no HTTP."""
    client = Client(headers=AUTH)
    began = time.perf_counter()
    errors = sum(not _send(client, "/items/", endpoint, n) for n in range(total))
    return total / (time.perf_counter() - began), errors


def wait_empty(datname: str, timeout: float = 15.0) -> int:
    """Wait for the database to have no session left; return how many remain."""
    conn = connect()
    try:
        deadline = time.monotonic() + timeout
        while (left := count_sessions(conn, datname)) and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.02)
        return left
    finally:
        conn.close()


def settle(thread: LiveServerThread | None, datname: str) -> None:
    """Start the next phase from no session: ours reset as between two tests,
    the stock server's threads gone with their clients, this thread's closed."""
    if isinstance(thread, SafeLiveServerThread):
        thread.reset()
    connections.close_all()
    wait_empty(datname)


def schemathesis_run(
    schema: Any, examples: int, call: Callable[[Any], object]
) -> tuple[float, int, int]:
    """Every operation as a nested ``@given`` of `examples` examples, the same
    examples for every variant; wall time, calls and failed checks."""
    calls = failures = 0
    began = time.perf_counter()
    for path, method in OPERATIONS:

        @given(case=schema[path][method].as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def example(case: Any) -> None:
            nonlocal calls, failures
            calls += 1
            try:
                call(case)
            except Exception:  # a failed check: count it, no shrinking
                failures += 1

        example()
    return time.perf_counter() - began, calls, failures


def drain(
    thread: LiveServerThread, url: str, datname: str, sizes: Sizes
) -> dict[str, Any]:
    """Stop the server with `drain_clients` keep-alive clients connected and
    idle; the sessions it had, how long ``terminate()`` took, the seconds until
    the database had none of them left (None: some were still there after
    `drain_timeout`), and how many were left."""
    clients = [requests.Session() for _ in range(sizes.drain_clients)]
    conn = connect()
    try:
        for client in clients:
            client.get(url, headers=AUTH, timeout=REQUEST_TIMEOUT)
        sessions = count_sessions(conn, datname)
        began = time.perf_counter()
        thread.terminate()
        terminated = time.perf_counter() - began
        while (left := count_sessions(conn, datname)) and (
            time.perf_counter() - began < sizes.drain_timeout
        ):
            time.sleep(0.002)
        elapsed = time.perf_counter() - began
    finally:
        for client in clients:
            client.close()
        conn.close()
    if isinstance(thread, SafeLiveServerThread) and thread.stuck:
        raise thread.stuck
    return {
        "drain_sessions": sessions,
        "terminate_s": terminated,
        "drain_s": None if left else elapsed,
        "drain_left": left,
    }


NO_DRAIN = dict.fromkeys(("drain_sessions", "terminate_s", "drain_s", "drain_left"))


def run(variant: Variant, sizes: Sizes, datname: str) -> dict[str, Any]:
    """One run of every figure for `variant`."""
    result: dict[str, Any] = {
        "read_req_s": {},
        "write_req_s": {},
        "peak_sessions": {},
        "read_errors": {},
        "write_errors": {},
    }

    def phase(
        thread: LiveServerThread | None,
        clients: int,
        endpoint: str,
        work: Callable[[int, str], tuple[float, int]],
    ) -> None:
        with Sampler(datname) as sampler:
            rate, errors = work(clients, endpoint)
        settle(thread, datname)
        result[f"{endpoint}_req_s"][str(clients)] = rate
        result[f"{endpoint}_errors"][str(clients)] = errors
        peaks = result["peak_sessions"]
        peaks[str(clients)] = max(peaks.get(str(clients), 0), sampler.peak)

    drained: dict[str, Any] = NO_DRAIN
    if not variant.http:
        for endpoint in ENDPOINTS:
            phase(None, 1, endpoint, lambda _, kind: wsgi_load(sizes.requests, kind))
        schema = schemathesis.openapi.from_wsgi("/openapi.json", WSGIHandler())
        with Sampler(datname) as sampler:
            wall, calls, failures = schemathesis_run(
                schema,
                sizes.examples,
                lambda case: case.call_and_validate(headers=AUTH),
            )
        settle(None, datname)
    else:
        with serving(variant) as thread:
            base_url = f"http://localhost:{thread.port}"
            url = f"{base_url}/items/"

            def load(clients: int, endpoint: str) -> tuple[float, int]:
                return http_load(url, clients, sizes.requests, endpoint)

            for endpoint in ENDPOINTS:
                for clients in sizes.clients:
                    phase(thread, clients, endpoint, load)

            def call(case: Any) -> None:
                try:
                    case.call_and_validate(base_url=base_url, headers=AUTH)
                finally:
                    if isinstance(thread, SafeLiveServerThread):
                        thread.reset()  # as django_safelive.schemathesis does

            with Sampler(datname) as sampler:
                wall, calls, failures = schemathesis_run(
                    schemathesis.openapi.from_dict(OPENAPI), sizes.examples, call
                )
            settle(thread, datname)
            drained = drain(thread, url, datname, sizes)
    result.update(
        schemathesis_s=wall,
        schemathesis_calls=calls,
        schemathesis_failures=failures,
        schemathesis_peak_sessions=sampler.peak,
        **drained,
    )
    return result


def restore(datname: str, last_seed: int) -> None:
    """Drop the rows a run wrote, so every run reads the same data."""
    Item.objects.filter(pk__gt=last_seed).delete()
    connections.close_all()
    wait_empty(datname)


def seed() -> int:
    """Twenty items, the page GET /items/ returns; the last one's pk."""
    Item.objects.bulk_create(Item(name=f"item {n}", price=n) for n in range(20))
    last = Item.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert last is not None
    return last
