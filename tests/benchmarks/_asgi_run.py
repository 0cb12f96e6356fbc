"""The measuring process of ``python -m tests.benchmarks --asgi`` (see
``tests.benchmarks._asgi``, which starts it on a throwaway PostgreSQL).

Creates the test database, then runs every server's three phases round-robin,
--repeat times, and prints the table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Only on the throwaway cluster tests.benchmarks._asgi starts: never on the
# configured server, which other test runs may share.
if "SAFELIVE_BENCH_PG_LOG" not in os.environ:
    sys.exit("run this with python -m tests.benchmarks --asgi")

import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402
from django.test.utils import (  # noqa: E402
    override_settings,
    setup_databases,
    teardown_databases,
)

from django_safelive.channels import (  # noqa: E402
    ChannelsLiveServerTestCase as SafeChannelsLiveServerTestCase,
)
from tests._sampler import connect  # noqa: E402
from tests.benchmarks import _report  # noqa: E402
from tests.benchmarks._asgi import ROOT, arguments  # noqa: E402
from tests.benchmarks._run import wait_empty  # noqa: E402
from tests.benchmarks._sessions import sampled  # noqa: E402
from tests.testapp.models import Item  # noqa: E402

ASGI_SETTINGS = {
    "ASGI_APPLICATION": "tests.asgiapp.asgi.application",
    "ROOT_URLCONF": "tests.asgiapp.urls",
}
# One keep-alive client alone (its latency), then the clients of each kind, then
# all of them at once.
PHASES = ("one", "http", "ws", "both")
LABELS = {
    "channels": "channels.testing.ChannelsLiveServerTestCase (Daphne, a child process)",
    "pool": "django_safelive.channels.ChannelsLiveServerTestCase, pool mode "
    "(the default)",
    "single": "django_safelive.channels.ChannelsLiveServerTestCase, single mode",
}
# Every phase's clients are done well before this, or something hangs.
LOAD_TIMEOUT = 600
# The figures that are the most of any run rather than the median.
WORST = ("peak", "errors", "sockets_failed", "refused")


@dataclass(frozen=True)
class Server:
    """One of the compared servers under one CONN_MAX_AGE."""

    kind: str
    conn_max_age: int

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.conn_max_age}"

    @property
    def channels(self) -> bool:
        """Channels' own class, rather than ours."""
        return self.kind == "channels"


@dataclass(frozen=True)
class Sizes:
    """How much work one phase does."""

    http_clients: int
    requests: int
    websockets: int
    messages: int


@dataclass(frozen=True)
class Live:
    """A started server: its URLs, and its budget and workers (ours only)."""

    http: str
    ws: str
    budget: str


def _nothing(self: Any) -> None:
    """The test method of the classes below, never run: their setUpClass and
    tearDownClass are what the benchmark calls."""


def case_class(server: Server) -> Any:
    """A test case class whose setUpClass starts `server`."""
    attributes: dict[str, Any] = {"runTest": _nothing}
    if server.channels:
        from channels.testing import ChannelsLiveServerTestCase as base
    else:
        base = SafeChannelsLiveServerTestCase
        attributes["server_mode"] = server.kind
    return type(f"Bench{server.kind.title()}", (base,), attributes)


def _budget(cls: Any) -> str:
    """Ours: "budget: HTTP + WebSocket workers"; Channels': "-"."""
    config = getattr(cls, "safelive_config", None)
    if config is None:
        return "-"
    return f"{config.max_sessions}: {config.workers}+{config.websocket_workers}"


@contextmanager
def live(server: Server) -> Iterator[Live]:
    """Start `server` as its test case class does, and stop it as it does;
    raise what the class cleanups raised."""
    cls = case_class(server)
    try:
        cls.setUpClass()
    except BaseException:
        cls.doClassCleanups()
        raise
    try:
        case = cls("runTest")
        yield Live(case.live_server_url, case.live_server_ws_url, _budget(cls))
    finally:
        try:
            cls.tearDownClass()
        finally:
            cls.doClassCleanups()
    if cls.tearDown_exceptions:
        raise cls.tearDown_exceptions[0][1]


@contextmanager
def conn_max_age(age: int) -> Iterator[None]:
    """Serve under CONN_MAX_AGE `age`: every thread's connection to the alias
    reads the one settings dict when it connects, and Daphne's process is
    forked from this one, so setting it with no session open reaches both."""
    connections.close_all()
    settings_dict = connections["default"].settings_dict
    saved = settings_dict["CONN_MAX_AGE"]
    settings_dict["CONN_MAX_AGE"] = age
    try:
        yield
    finally:
        connections.close_all()
        settings_dict["CONN_MAX_AGE"] = saved


def refusals(log: Path) -> int:
    """Sessions the cluster refused so far: its log's "too many clients"."""
    with log.open(errors="replace") as lines:
        return sum("too many clients" in line for line in lines)


def clients(where: Live, phase: str, sizes: Sizes) -> dict[str, Any]:
    """Run one phase's clients in a process of their own; their summary."""
    spec = {
        "http": where.http,
        "ws": where.ws,
        "http_clients": {"one": 1, "ws": 0}.get(phase, sizes.http_clients),
        "http_requests": sizes.requests,
        "websockets": 0 if phase in ("one", "http") else sizes.websockets,
        "messages": sizes.messages,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks._asgi_load", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=LOAD_TIMEOUT,
    )
    if done.returncode:
        raise RuntimeError(f"the clients failed:\n{done.stdout}{done.stderr}")
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def run_phase(
    server: Server, phase: str, sizes: Sizes, datname: str, log: Path
) -> tuple[dict[str, Any], str]:
    """One phase on a server started for it, from an empty table and no
    session; its figures, and the server's budget."""
    Item.objects.all().delete()
    connections.close_all()
    wait_empty(datname)
    refused = refusals(log)
    began = time.perf_counter()
    with live(server) as where:
        started = time.perf_counter() - began
        with sampled(datname) as sampler:
            done = clients(where, phase, sizes)
    wait_empty(datname)
    http, ws = done["http"] or {}, done["ws"] or {}
    figures = {
        "req_s": http.get("rate"),
        "http_ms": http.get("median_ms"),
        "msg_s": ws.get("rate"),
        "ws_ms": ws.get("median_ms"),
        "errors": http.get("failed", 0) + ws.get("failed", 0),
        "sockets_failed": ws.get("sockets_failed", 0),
        "peak": sampler["peak"],
        "refused": refusals(log) - refused,
        "start_s": started,
        "interval_ms": sampler["mean_interval_ms"],
        "max_interval_ms": sampler["max_interval_ms"],
    }
    return {f"{phase}_{key}": value for key, value in figures.items()}, where.budget


def run_once(
    server: Server, sizes: Sizes, datname: str, log: Path
) -> tuple[dict[str, Any], str]:
    """Every phase of `server` under its CONN_MAX_AGE; figures and budget."""
    found: dict[str, Any] = {}
    budget = "-"
    with conn_max_age(server.conn_max_age):
        for phase in PHASES:
            figures, budget = run_phase(server, phase, sizes, datname, log)
            found.update(figures)
    found["load_average"] = round(os.getloadavg()[0], 2)
    return found, budget


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates, latencies and times: the median; peaks, errors and refusals:
    the most of any run."""
    found = _report.medians(runs)
    for key in found:
        if key.endswith(WORST):
            found[key] = max(run[key] for run in runs)
    return found


def _cell(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _times(value: float | None, reference: float | None) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}x"


def _phases(figures: dict[str, Any], figure: str) -> str:
    return "/".join(_cell(figures[f"{phase}_{figure}"]) for phase in PHASES)


def table(
    servers: list[Server], results: dict[str, dict[str, Any]], sizes: Sizes
) -> _report.Table:
    """One row per server; x: the ratio to Channels' at the same CONN_MAX_AGE."""
    found = _report.Table(
        f"ASGI live servers on tests.asgiapp: {sizes.http_clients} keep-alive HTTP "
        f"clients x {sizes.requests} requests; {sizes.websockets} WebSockets x "
        f"{sizes.messages} messages; both = all of them at once; 1 client ms = "
        "the median request of one keep-alive client alone; 1/H/W/B = the "
        "1-client, HTTP, WebSocket and both phases; x = the ratio to channels@ "
        "the same CONN_MAX_AGE; budget = ours: sessions allowed: HTTP+WebSocket "
        "workers",
        [
            "server",
            "CONN_MAX_AGE",
            "budget",
            "start s",
            "1 client ms",
            "HTTP req/s",
            "x",
            "ms",
            "WS msg/s",
            "x",
            "ms",
            "both req/s",
            "x",
            "both msg/s",
            "x",
            "peak 1/H/W/B",
            "errors 1/H/W/B",
            "refused 1/H/W/B",
        ],
        [],
    )
    for server in servers:
        done = results[server.name]
        figures = done["summary"]
        channels = results.get(Server("channels", server.conn_max_age).name)
        reference = channels["summary"] if channels else {}
        start = [figures[f"{phase}_start_s"] for phase in PHASES]
        found.rows.append(
            [
                server.name,
                str(server.conn_max_age),
                done["budget"],
                _cell(statistics.median(start), 2),
                _cell(figures["one_http_ms"], 1),
                *(
                    cell
                    for figure, digits in (
                        ("http_req_s", 0),
                        ("http_http_ms", 1),
                        ("ws_msg_s", 0),
                        ("ws_ws_ms", 1),
                        ("both_req_s", 0),
                        ("both_msg_s", 0),
                    )
                    for cell in (
                        _cell(figures[figure], digits),
                        *(
                            []
                            if figure.endswith("_ms")
                            else [_times(figures[figure], reference.get(figure))]
                        ),
                    )
                ),
                _phases(figures, "peak"),
                _phases(figures, "errors"),
                _phases(figures, "refused"),
            ]
        )
    return found


def notes(servers: list[Server], results: dict[str, dict[str, Any]]) -> str:
    """What the servers are, and what peak, errors and refused mean."""
    interval = max(
        results[s.name]["summary"][f"{p}_interval_ms"] for s in servers for p in PHASES
    )
    longest = max(
        results[s.name]["summary"][f"{p}_max_interval_ms"]
        for s in servers
        for p in PHASES
    )
    kinds = dict.fromkeys(server.kind for server in servers)
    return "\n".join(
        [
            *(f"{kind}: {LABELS[kind]}" for kind in kinds),
            "Each phase on a server started for it (as setUpClass does; start s: "
            "its median time), from an empty table and no session; the clients "
            "in a process of their own. req/s, msg/s, ms (median latency) and "
            "start s: the median of the runs; peak, errors and refused: the "
            "most of any run.",
            "peak: the most client sessions on the test database at once during "
            "the phase, as pg_stat_activity showed them to an independent "
            "session in another process, polling every "
            f"{interval:.1f} ms on average (longest gap {longest:.0f} ms).",
            "errors: HTTP requests not answered 200 plus WebSocket messages not "
            'answered; refused: sessions PostgreSQL refused ("too many '
            'clients" in its log).',
        ]
    )


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("channels", "daphne", "uvicorn", "asgiref", "websockets"):
        try:
            found[package] = version(package)
        except ImportError:
            found[package] = None
    return found


def _cluster_settings() -> dict[str, int]:
    """max_connections and superuser_reserved_connections of the cluster."""
    conn = connect()
    try:
        found = {}
        with conn.cursor() as cursor:
            for name in ("max_connections", "superuser_reserved_connections"):
                cursor.execute(f"SHOW {name}")
                found[name] = int(cursor.fetchone()[0])
        return found
    finally:
        conn.close()


def warm_up(servers: list[Server], datname: str, log: Path) -> None:
    """Untimed: the app's and each kind of server's imports and first requests."""
    warm = Sizes(4, 2, 2, 2)
    for server in {server.kind: server for server in servers}.values():
        with conn_max_age(server.conn_max_age):
            run_phase(server, "both", warm, datname, log)


def main() -> None:
    args = arguments(sys.argv[1:])
    sizes = Sizes(args.http_clients, args.requests, args.websockets, args.messages)
    servers = [
        Server(kind, int(age))
        for kind, age in (name.split("@") for name in args.variants.split(","))
    ]
    left_out = ""
    if importlib.util.find_spec("daphne") is None:
        left_out = "daphne is not installed: Channels' server left out."
        servers = [server for server in servers if not server.channels]
        print(left_out, file=sys.stderr)
    about = _report.machine()
    about.update(_versions(), **_cluster_settings())
    log = Path(os.environ["SAFELIVE_BENCH_PG_LOG"])
    began = time.monotonic()
    loads = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {server.name: [] for server in servers}
    budgets: dict[str, str] = {}
    old_config = setup_databases(verbosity=0, interactive=False)
    datname = connections["default"].settings_dict["NAME"]
    connections.close_all()
    asgi = override_settings(**ASGI_SETTINGS)
    asgi.enable()
    try:
        warm_up(servers, datname, log)
        for number in range(args.repeat):
            for server in servers:
                print(
                    f"run {number + 1}/{args.repeat}: {server.name}",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                started = time.monotonic()
                done, budgets[server.name] = run_once(server, sizes, datname, log)
                runs[server.name].append(done)
                loads.append(done["load_average"])
                print(f" ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    finally:
        asgi.disable()
        connections.close_all()
        teardown_databases(old_config, verbosity=0)
    results = {
        name: {"budget": budgets[name], "summary": summarize(done), "runs": done}
        for name, done in runs.items()
    }
    about["load_average_range"] = [min(loads), max(loads)]
    about["elapsed_s"] = round(time.monotonic() - began)
    print(
        f"median of {args.repeat} runs; a throwaway PostgreSQL "
        f"{about['postgresql']}, max_connections {about['max_connections']} "
        f"({about['superuser_reserved_connections']} reserved for superusers; "
        f"every session here is one); {about['cpu_count']} CPUs, Python "
        f"{about['python']}, Django {about['django']}, {about['driver']}, "
        f"Channels {about['channels']}, Daphne {about['daphne']}, uvicorn "
        f"{about['uvicorn']}, asgiref {about['asgiref']}, websockets "
        f"{about['websockets']}; load average (1 min) {min(loads):.2f} to "
        f"{max(loads):.2f}; {about['elapsed_s']} s; django-safelive "
        f"{about['django_safelive']}\n"
    )
    found = table(servers, results, sizes)
    print(found.text())
    print()
    print(notes(servers, results))
    if left_out:
        print(left_out)
    if args.markdown:
        Path(args.markdown).write_text(
            f"{found.markdown()}\n\n{notes(servers, results)}\n"
        )
    if args.json:
        document = {
            "machine": about,
            "sizes": sizes.__dict__,
            "repeat": args.repeat,
            "variants": {
                server.name: {
                    "label": LABELS[server.kind],
                    "conn_max_age": server.conn_max_age,
                    **results[server.name],
                }
                for server in servers
            },
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
