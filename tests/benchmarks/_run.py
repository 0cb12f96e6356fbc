"""One benchmark run of one variant: throughput and latency on keep-alive and
fresh connections, sessions, Schemathesis, the reset, drain."""

from __future__ import annotations

import gc
import statistics
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

from django_safelive import SafeLiveServerThread
from django_safelive._core import lifecycle as _lifecycle
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.config import Config
from django_safelive._core.holders import SERVER_WORKER
from django_safelive._core.hooks import registry
from tests._sampler import Sampler, connect, count_sessions
from tests.benchmarks import _floor
from tests.benchmarks._probe import Probe
from tests.testapp.models import Item
from tests.testapp.views import OPENAPI, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDPOINTS = ("read", "write")
OPERATIONS = [("/items/", "GET"), ("/items/", "POST"), ("/items/{item_id}/", "GET")]
# A request that takes this long has hung: count it as an error, don't wait more.
REQUEST_TIMEOUT = 30.0
# Django's psycopg pool for the stock+pgpool variant: the pool of
# tests/settings.py's postgres-pool, as large as pool-4's session budget.
PG_POOL_OPTIONS = {"min_size": 1, "max_size": 6}


@dataclass(frozen=True)
class Variant:
    """A way of serving the test app: a live server, or in-process WSGI, under
    one CONN_MAX_AGE (and, for stock+pgpool, Django's psycopg pool)."""

    name: str
    label: str
    kind: Literal["stock", "single", "pool", "wsgi"]
    workers: int | None = None
    conn_max_age: int = 0
    pg_pool: bool = False

    @property
    def budget(self) -> int | None:
        """Sessions per alias django-safelive allows: room for the test thread
        and one more beside the workers."""
        return None if self.workers is None else self.workers + 2

    @property
    def http(self) -> bool:
        return self.kind != "wsgi"

    @property
    def safelive(self) -> bool:
        return self.workers is not None


def _variants() -> list[Variant]:
    found = []
    for age in (0, 600):
        found.append(
            Variant(f"stock@{age}", "Django LiveServerThread", "stock", None, age)
        )
        if age == 0:
            found.append(
                Variant(
                    "stock+pgpool@0",
                    "Django LiveServerThread + psycopg pool",
                    "stock",
                    None,
                    0,
                    pg_pool=True,
                )
            )
        found.append(
            Variant(f"single@{age}", "django-safelive single", "single", 1, age)
        )
        for workers in (2, 4, 8):
            found.append(
                Variant(
                    f"pool-{workers}@{age}",
                    f"django-safelive pool ({workers})",
                    "pool",
                    workers,
                    age,
                )
            )
    # The app called in this thread: the test client keeps its session whatever
    # CONN_MAX_AGE says, Schemathesis's WSGI transport under 600 too.
    found.append(
        Variant("from_wsgi", "Schemathesis from_wsgi, in-process", "wsgi", None, 600)
    )
    return found


VARIANTS = _variants()
BY_NAME = {variant.name: variant for variant in VARIANTS}
# What one run compares unless --variants says otherwise, in this order.
DEFAULT_VARIANTS = [
    "stock@0",
    "stock+pgpool@0",
    "single@0",
    "pool-4@0",
    "stock@600",
    "single@600",
    "pool-4@600",
    "from_wsgi",
]
# The reference of every ratio: Django's live server under Django's default.
BASELINE = "stock@0"
PG_POOL = "stock+pgpool@0"


@dataclass(frozen=True)
class Sizes:
    """How much work one run does."""

    requests: int
    clients: list[int]
    examples: int
    drain_clients: int
    drain_timeout: float
    fresh_clients: int = 32
    fresh_requests: int = 320
    resets: int = 20


@contextmanager
def database_settings(variant: Variant) -> Iterator[None]:
    """Serve `variant` under its CONN_MAX_AGE (and psycopg pool).

    Every thread's connection wrapper reads the one settings dict of the alias
    when it connects, so setting it here, with no session open, switches the
    live server's threads too; the settings are put back after, the pool closed.
    """
    connections.close_all()
    settings_dict = connections["default"].settings_dict
    options = settings_dict.setdefault("OPTIONS", {})
    saved = settings_dict["CONN_MAX_AGE"], options.get("pool")
    if saved[1]:
        connections["default"].close_pool()  # type: ignore[attr-defined]
    options.pop("pool", None)
    settings_dict["CONN_MAX_AGE"] = variant.conn_max_age
    if variant.pg_pool:
        options["pool"] = dict(PG_POOL_OPTIONS)
    try:
        yield
    finally:
        connections.close_all()
        if variant.pg_pool:
            connections["default"].close_pool()  # type: ignore[attr-defined]
            # Its sessions end as the pool closes them: the next variant starts
            # (and samples) only when the database has none left.
            wait_empty(settings_dict["NAME"])
        settings_dict["CONN_MAX_AGE"], pool = saved
        options.pop("pool", None)
        if pool:
            options["pool"] = pool


def new_thread(variant: Variant) -> LiveServerThread:
    """The server thread LiveServerTestCase would create for `variant`."""
    if variant.workers is None:
        return LiveServerThread("localhost", _StaticFilesHandler)
    config = Config(
        max_sessions=variant.workers + 2,
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
        registry.activate(thread.account)
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


@dataclass(frozen=True)
class Load:
    """What one load phase measured."""

    rate: float  # answered requests per second
    errors: int
    latency_ms: float  # the median request, as the client saw it


def http_load(
    url: str, clients: int, total: int, endpoint: str = "read", fresh: bool = False
) -> Load:
    """`clients` threads share `total` requests, each thread on one keep-alive
    session, or with `fresh` on a new ``requests.Session`` per request, closed
    after it (a new TCP connection every time, as Schemathesis and browsers)."""
    errors = 0
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    each = max(1, total // clients)

    def client() -> None:
        nonlocal errors
        failed = 0
        mine = []
        kept = None if fresh else requests.Session()
        start.wait()
        for number in range(each):
            began = time.perf_counter()
            try:
                if kept is None:
                    with requests.Session() as session:
                        failed += not _send(session, url, endpoint, number)
                else:
                    failed += not _send(kept, url, endpoint, number)
            except requests.RequestException:
                failed += 1
            mine.append(time.perf_counter() - began)
        if kept is not None:
            kept.close()
        with lock:
            errors += failed
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return Load(
        (each * clients - errors) / elapsed,
        errors,
        statistics.median(latencies) * 1000,
    )


def wsgi_load(total: int, endpoint: str) -> Load:
    """`total` requests through Django's test client, in this thread, no HTTP."""
    client = Client(headers=AUTH)
    latencies = []
    errors = 0
    for number in range(total):
        began = time.perf_counter()
        errors += not _send(client, "/items/", endpoint, number)
        latencies.append(time.perf_counter() - began)
    return Load(
        (total - errors) / sum(latencies), errors, statistics.median(latencies) * 1000
    )


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
    the stock server's threads gone with their clients, this thread's closed
    (with Django's psycopg pool, back in the pool, which keeps its sessions
    open: there is nothing to wait for)."""
    if isinstance(thread, SafeLiveServerThread):
        thread.reset()
    connections.close_all()
    if not connections["default"].settings_dict["OPTIONS"].get("pool"):
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
RESET_FIGURES = (
    "reset_ms",
    "reset_full_ms",
    "reset_empty_ms",
    "reset_empty_full_ms",
    "reset_sessions",
    "reset_exit_after_ms",
    "reset_peak_sessions",
)
BREAKDOWN = tuple(
    f"{client}_{figure}"
    for client in ("keepalive", "fresh")
    for figure in ("server_ms", "app_ms", "connects", "empty_reads")
)


def exited_after(account: ServerAccount) -> float | None:
    """Seconds until the sessions a reset closed have exited, counted from
    the reset's return (they exit while the test goes on); None if none was
    exiting."""
    began = time.perf_counter()
    if not account.exiting():
        return None
    while account.exiting():
        time.sleep(0.0002)
    return time.perf_counter() - began


def _worker_sessions() -> int:
    return sum(holder.role == SERVER_WORKER for holder in registry.holders("default"))


def reset_costs(
    thread: SafeLiveServerThread, base_url: str, datname: str, rounds: int
) -> dict[str, Any]:
    """What one reset between two examples costs, the median of `rounds`.

    ``thread.reset()`` alone (drain, every worker closes its sessions; their
    backends exit after, counted until then: ``reset_exit_after_ms`` is how
    long after), and the whole reset django-safelive runs
    between tests and examples (``_lifecycle.reset``: that, then one
    pg_stat_activity query when a worker opened a session since the last
    one); each after 2 x workers ``GET /items/`` (the workers hold sessions:
    how many is ``reset_sessions``) and after as many ``GET /openapi.json``,
    which opens none.
    """

    def full() -> None:
        _lifecycle.reset(thread, ["default"], thread.account)

    figures: dict[str, Any] = {}
    held = []
    exits: list[float] = []
    with Sampler(datname) as sampler:
        for phase, path in (("", "/items/"), ("_empty", "/openapi.json")):
            for suffix, reset in (("", thread.reset), ("_full", full)):
                full()  # from no session, and nothing opened since
                times = []
                for _ in range(rounds):
                    for _ in range(2 * thread.config.workers):
                        with requests.Session() as session:
                            session.get(
                                base_url + path, headers=AUTH, timeout=REQUEST_TIMEOUT
                            ).raise_for_status()
                    if not phase:
                        held.append(_worker_sessions())
                    began = time.perf_counter()
                    reset()
                    times.append(time.perf_counter() - began)
                    exited = exited_after(thread.account)
                    if exited is not None:
                        exits.append(exited)
                figures[f"reset{phase}{suffix}_ms"] = statistics.median(times) * 1000
    figures["reset_sessions"] = statistics.median(held)
    figures["reset_exit_after_ms"] = statistics.median(exits) * 1000 if exits else None
    figures["reset_peak_sessions"] = sampler.peak
    return figures


def run(variant: Variant, sizes: Sizes, datname: str) -> dict[str, Any]:
    """One run of every figure for `variant`, under its database settings."""
    with database_settings(variant):
        return _measure(variant, sizes, datname)


def _measure(variant: Variant, sizes: Sizes, datname: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "read_req_s": {},
        "write_req_s": {},
        "peak_sessions": {},
        "read_errors": {},
        "write_errors": {},
        "fresh_req_s": {},
        "fresh_errors": {},
        "fresh_peak_sessions": {},
        "keepalive_ms": None,
        "fresh_ms": None,
        **dict.fromkeys(BREAKDOWN),
        **dict.fromkeys(RESET_FIGURES),
    }

    def phase(
        thread: LiveServerThread | None,
        clients: int,
        endpoint: str,
        work: Callable[[int, str], Load],
        fresh: bool = False,
    ) -> None:
        # One client reading: the latency, and where the server spends it.
        probed = clients == 1 and endpoint == "read"
        probe = Probe() if probed and thread is not None else None
        with Sampler(datname) as sampler, probe or nullcontext():
            done = work(clients, endpoint)
        settle(thread, datname)
        prefix = "fresh" if fresh else endpoint
        result[f"{prefix}_req_s"][str(clients)] = done.rate
        result[f"{prefix}_errors"][str(clients)] = done.errors
        peaks = result["fresh_peak_sessions" if fresh else "peak_sessions"]
        peaks[str(clients)] = max(peaks.get(str(clients), 0), sampler.peak)
        if probed:
            client = "fresh" if fresh else "keepalive"
            result[f"{client}_ms"] = done.latency_ms
            if probe is not None:
                for figure, value in probe.summary().items():
                    result[f"{client}_{figure}"] = value

    drained: dict[str, Any] = NO_DRAIN
    if not variant.http:
        for endpoint in ENDPOINTS:
            phase(None, 1, endpoint, lambda _, kind: wsgi_load(sizes.requests, kind))
        schema = schemathesis.openapi.from_wsgi("/openapi.json", WSGIHandler())
        requests_sent = None
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

            def load(clients: int, endpoint: str) -> Load:
                return http_load(url, clients, sizes.requests, endpoint)

            def fresh_load(clients: int, endpoint: str) -> Load:
                total = sizes.requests if clients == 1 else sizes.fresh_requests
                return http_load(url, clients, total, endpoint, fresh=True)

            for endpoint in ENDPOINTS:
                for clients in sizes.clients:
                    phase(thread, clients, endpoint, load)
            for clients in (1, sizes.fresh_clients):
                phase(thread, clients, "read", fresh_load, fresh=True)

            def call(case: Any) -> None:
                try:
                    case.call_and_validate(base_url=base_url, headers=AUTH)
                finally:
                    if isinstance(thread, SafeLiveServerThread):
                        # What django_safelive.schemathesis runs between examples.
                        _lifecycle.reset(thread, ["default"], thread.account)

            with Sampler(datname) as sampler, _floor.counting_requests() as sent:
                wall, calls, failures = schemathesis_run(
                    schemathesis.openapi.from_dict(OPENAPI), sizes.examples, call
                )
            requests_sent = sent[0]
            settle(thread, datname)
            if isinstance(thread, SafeLiveServerThread):
                result.update(reset_costs(thread, base_url, datname, sizes.resets))
                settle(thread, datname)
            drained = drain(thread, url, datname, sizes)
    result.update(
        schemathesis_s=wall,
        schemathesis_calls=calls,
        schemathesis_requests=requests_sent,
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


def warm_up(sizes: Sizes) -> None:
    """One untimed in-process Schemathesis run and a few requests, so that the
    first variant does not pay for building strategies and imports alone."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", WSGIHandler())
    schemathesis_run(
        schema, sizes.examples, lambda case: case.call_and_validate(headers=AUTH)
    )
    wsgi_load(10, "read")
    connections.close_all()


def seed() -> int:
    """Twenty items, the page GET /items/ returns; the last one's pk."""
    Item.objects.bulk_create(Item(name=f"item {n}", price=n) for n in range(20))
    last = Item.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert last is not None
    return last
