"""The machine a run was on, medians of runs, the tables, the targets, and the
JSON, Markdown and chart."""

from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import django
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from tests._sampler import connect
from tests.benchmarks import _floor
from tests.benchmarks._run import (
    BASELINE,
    ENDPOINTS,
    OPERATIONS,
    PG_POOL,
    PG_POOL_OPTIONS,
    Sizes,
    Variant,
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages / 2**30, 1)


def library_state() -> str | None:
    """The commit django-safelive was measured at, "+ changes" when its files
    differ from it; None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "django_safelive"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} + changes" if changed else commit


def machine() -> dict[str, Any]:
    """What the figures depend on: hardware, load, and every version involved."""
    conn = connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            server = str(cursor.fetchone()[0])
    finally:
        conn.close()
    driver = importlib.import_module("psycopg" if is_psycopg3 else "psycopg2")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        # Other work may share the machine: the load when the run started.
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "django": django.get_version(),
        "driver": f"{driver.__name__} {driver.__version__.split()[0]}",
        "postgresql": server,
        "schemathesis": version("schemathesis"),
        "hypothesis": version("hypothesis"),
        "django_safelive": library_state(),
        # CONN_MAX_AGE is each variant's; stock+pgpool's pool is this one.
        "pg_pool_options": PG_POOL_OPTIONS,
    }


def _median(values: list[Any]) -> Any:
    """The median of numbers, None counting as worse than any (a timeout), or
    of dicts of them key by key; None when every run had nothing."""
    if isinstance(values[0], dict):
        return {key: _median([value[key] for value in values]) for key in values[0]}
    if all(value is None for value in values):
        return None
    middle = statistics.median(math.inf if value is None else value for value in values)
    return None if middle == math.inf else middle


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs."""
    return {key: _median([run[key] for run in runs]) for key in runs[0]}


def _cell(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Table:
    """A titled table of cells, printed as text or written as Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        widths = [
            max(len(row[column]) for row in [self.headers, *self.rows])
            for column in range(len(self.headers))
        ]

        def line(cells: list[str]) -> str:
            first, *rest = cells
            return " ".join(
                [first.ljust(widths[0])]
                + [
                    cell.rjust(width)
                    for cell, width in zip(rest, widths[1:], strict=True)
                ]
            )

        return "\n".join([self.title, *map(line, [self.headers, *self.rows])])

    def markdown(self) -> str:
        lines = [
            f"{self.title}:",
            "",
            "| " + " | ".join(self.headers) + " |",
            "|---|" + "--:|" * (len(self.headers) - 1),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def grid(headers: list[str], rows: list[list[str]], *, markdown: bool) -> str:
    """`rows` under `headers`: a Markdown table, or left-aligned columns."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, *rows]
    )


def suite_conditions(about: dict[str, Any], loads: list[float]) -> str:
    """The machine and versions a suite benchmark (--rollback, --newuser) ran
    on, its load and how long it took."""
    return (
        f"{about['cpu_count']} CPUs ({about['cpu']}), Python {about['python']}, "
        f"Django {about['django']}, {about['driver']}, PostgreSQL "
        f"{about['postgresql']}, Hypothesis {about['hypothesis']}, Schemathesis "
        f"{about['schemathesis']}; load average (1 min) {min(loads):.2f} to "
        f"{max(loads):.2f}; {about['elapsed_s']} s; django-safelive "
        f"{about['django_safelive']}"
    )


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _peak(run: dict[str, Any]) -> int:
    """The most sessions on the test database in any phase of one run."""
    peaks = [
        *run["peak_sessions"].values(),
        *run["fresh_peak_sessions"].values(),
        run["schemathesis_peak_sessions"],
        run["reset_peak_sessions"],
        run["drain_sessions"],
    ]
    return max(int(peak) for peak in peaks if peak is not None)


def peak_sessions(results: dict[str, dict[str, Any]], name: str) -> int:
    """The most sessions `name` ever had: a bound, so the max over runs."""
    return max(_peak(run) for run in results[name]["runs"])


def _reference(
    results: dict[str, dict[str, Any]], name: str, figure: str, key: str | None = None
) -> float | None:
    if name not in results:
        return None
    value = results[name]["median"][figure]
    if key is not None and value is not None:
        value = value.get(key)
    return None if value is None else float(value)


def tables(
    variants: list[Variant], results: dict[str, dict[str, Any]], sizes: Sizes
) -> list[Table]:
    """The headline figures and their ratios to stock@0; where a request's time
    goes; keep-alive throughput; sessions, Schemathesis and stop; the reset."""
    fresh = str(sizes.fresh_clients)
    base_ms = _reference(results, BASELINE, "fresh_ms")
    base_rate = _reference(results, BASELINE, "fresh_req_s", fresh)
    base_st = _reference(results, BASELINE, "schemathesis_s")
    headline = Table(
        "GET /items/ (one query, 20 rows): median latency of 1 client and "
        f"requests/s of {fresh} clients on a fresh connection per request, "
        "latency of 1 keep-alive client; the Schemathesis run; x: ratio to "
        f"{BASELINE}; peak sessions: the most in any phase of any run",
        [
            "variant",
            "CONN_MAX_AGE",
            "fresh ms",
            "x",
            f"{fresh} fresh req/s",
            "x",
            "keep-alive ms",
            "Schemathesis s",
            "x",
            "peak sessions",
            "budget",
        ],
        [],
    )
    breakdown = Table(
        "Where 1 client's GET /items/ goes (medians, ms): client = as the client "
        "saw it; server = parsed request line to response written and "
        "request_finished sent; app = Django's WSGIHandler (middleware, view, "
        "query, opening a session); connects = sessions Django opened (or took "
        "from its pool) per request; empty = reads of no request, only the "
        "client's close, per request",
        [
            "variant",
            "keep-alive client",
            "server",
            "app",
            "connects",
            "empty",
            "fresh client",
            "server",
            "app",
            "connects",
            "empty",
        ],
        [],
    )
    clients = sizes.clients
    throughput = Table(
        "Requests/s with N keep-alive clients: read = GET /items/, write = "
        "POST /items/",
        ["variant", *(f"{e} {n}" for e in ENDPOINTS for n in clients)],
        [],
    )
    sessions = Table(
        "Peak sessions by keep-alive clients and by fresh clients; errors: "
        "failed requests of every phase; Schemathesis: "
        f"{len(OPERATIONS)} operations x {sizes.examples} examples; stop: "
        f"terminate() with {sizes.drain_clients} idle keep-alive clients, the "
        "sessions then and the seconds until none was left",
        [
            "variant",
            "workers",
            "budget",
            f"keep-alive {'/'.join(map(str, clients))}",
            f"fresh 1/{fresh}",
            "errors",
            "Schemathesis s",
            "peak",
            "failed",
            "stop sessions",
            "drain s",
        ],
        [],
    )
    reset = Table(
        "One reset between examples (ms, median of "
        f"{sizes.resets} per run): thread.reset() alone, and the whole reset "
        "(_lifecycle.reset, as between tests and examples), after the workers "
        "opened sessions (held: how many; exited after: how long after the "
        "reset returned the closed sessions' backends had exited, counted "
        "against the budget until then) and after none did",
        [
            "variant",
            "held",
            "thread.reset()",
            "whole reset",
            "exited after",
            "thread.reset(), none",
            "whole reset, none",
            "peak sessions",
        ],
        [],
    )
    for variant in variants:
        medians = results[variant.name]["median"]
        name = variant.name
        rate = medians["fresh_req_s"].get(fresh)
        headline.rows.append(
            [
                name,
                str(variant.conn_max_age),
                _cell(medians["fresh_ms"], 2),
                _times(_ratio(medians["fresh_ms"], base_ms)),
                _cell(rate),
                _times(_ratio(rate, base_rate)),
                _cell(medians["keepalive_ms"], 2),
                _cell(medians["schemathesis_s"], 2),
                _times(_ratio(medians["schemathesis_s"], base_st)),
                str(peak_sessions(results, name)),
                _cell(variant.budget),
            ]
        )
        breakdown.rows.append(
            [
                name,
                *(
                    _cell(medians[f"{client}_{figure}"], digits)
                    for client in ("keepalive", "fresh")
                    for figure, digits in (
                        ("ms", 2),
                        ("server_ms", 2),
                        ("app_ms", 2),
                        ("connects", 2),
                        ("empty_reads", 2),
                    )
                ),
            ]
        )
        throughput.rows.append(
            [
                name,
                *(
                    _cell(medians[f"{endpoint}_req_s"].get(str(count)))
                    for endpoint in ENDPOINTS
                    for count in clients
                ),
            ]
        )
        errors = sum(
            count
            for figure in ("read_errors", "write_errors", "fresh_errors")
            for count in medians[figure].values()
        )
        if medians["drain_left"] and medians["drain_s"] is None:
            drained = f">{sizes.drain_timeout:g}, {medians['drain_left']:.0f} left"
        else:
            drained = _cell(medians["drain_s"], 2)
        sessions.rows.append(
            [
                name,
                _cell(variant.workers),
                _cell(variant.budget),
                "/".join(
                    _cell(medians["peak_sessions"].get(str(count))) for count in clients
                ),
                "/".join(
                    _cell(medians["fresh_peak_sessions"].get(str(count)))
                    for count in (1, sizes.fresh_clients)
                ),
                f"{errors:.0f}",
                _cell(medians["schemathesis_s"], 2),
                _cell(medians["schemathesis_peak_sessions"]),
                _cell(medians["schemathesis_failures"]),
                _cell(medians["drain_sessions"]),
                drained,
            ]
        )
        if variant.safelive:
            reset.rows.append(
                [
                    name,
                    _cell(medians["reset_sessions"], 1),
                    _cell(medians["reset_ms"], 2),
                    _cell(medians["reset_full_ms"], 2),
                    _cell(medians["reset_exit_after_ms"], 2),
                    _cell(medians["reset_empty_ms"], 2),
                    _cell(medians["reset_empty_full_ms"], 2),
                    _cell(medians["reset_peak_sessions"]),
                ]
            )
    found = [headline, breakdown, throughput, sessions]
    return [*found, reset] if reset.rows else found


@dataclass(frozen=True)
class Target:
    """One of issue 10's targets for one variant: its figure, the ratio to
    stock@0, and whether it is met (None: no reference in this run)."""

    target: str
    variant: str
    value: str
    ratio: float | None
    met: bool | None


def _check(
    target: str,
    variant: Variant,
    value: float | None,
    unit: str,
    reference: float | None,
    ok: Callable[[float, float], bool],
) -> Target:
    ratio = _ratio(value, reference)
    met = None if value is None or reference is None else ok(value, reference)
    return Target(target, variant.name, f"{_cell(value, 2)} {unit}", ratio, met)


def check_targets(
    variants: list[Variant], results: dict[str, dict[str, Any]], sizes: Sizes
) -> list[Target]:
    """Issue 10's targets for every django-safelive variant, against stock@0
    (and stock+pgpool@0 for the latency); the benchmark only reports them."""
    fresh = str(sizes.fresh_clients)
    base_ms = _reference(results, BASELINE, "fresh_ms")
    pool_ms = _reference(results, PG_POOL, "fresh_ms")
    base_rate = _reference(results, BASELINE, "fresh_req_s", fresh)
    base_st = _reference(results, BASELINE, "schemathesis_s")
    found = []
    for variant in variants:
        if not variant.safelive:
            continue
        medians = results[variant.name]["median"]
        latency = medians["fresh_ms"]
        found.append(
            _check(
                "fresh-connection latency <= 0.4x stock@0",
                variant,
                latency,
                "ms",
                base_ms,
                lambda value, base: value <= 0.4 * base,
            )
        )
        found.append(
            _check(
                f"fresh-connection latency <= {PG_POOL}",
                variant,
                latency,
                "ms",
                pool_ms,
                lambda value, pool: value <= pool,
            )
        )
        found.append(
            _check(
                "Schemathesis run <= 0.5x stock@0",
                variant,
                medians["schemathesis_s"],
                "s",
                base_st,
                lambda value, base: value <= 0.5 * base,
            )
        )
        factor = 1.5 if variant.kind == "pool" else 1.0

        def enough(value: float, base: float, factor: float = factor) -> bool:
            return value >= factor * base

        found.append(
            _check(
                f"{fresh} fresh clients >= {factor:g}x stock@0 req/s",
                variant,
                medians["fresh_req_s"].get(fresh),
                "req/s",
                base_rate,
                enough,
            )
        )
        peak = peak_sessions(results, variant.name)
        budget = variant.budget
        found.append(
            Target(
                "peak sessions <= budget",
                variant.name,
                f"{peak} of {budget}",
                None,
                budget is not None and peak <= budget,
            )
        )
    return found


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "no reference"}[met]


def targets_table(found: list[Target]) -> Table:
    """The targets as a table, ratios to stock@0 (to stock+pgpool@0 for the
    comparison with it)."""
    return Table(
        f"Targets (ratio: to {BASELINE}, or to {PG_POOL} where the target names it)",
        ["target", "variant", "value", "ratio", "met"],
        [
            [
                target.target,
                target.variant,
                target.value,
                _times(target.ratio),
                _verdict(target.met),
            ]
            for target in found
        ],
    )


def targets(
    variants: list[Variant], results: dict[str, dict[str, Any]], sizes: Sizes
) -> str:
    """The targets table and how many are met."""
    found = check_targets(variants, results, sizes)
    met = sum(target.met is True for target in found)
    checked = sum(target.met is not None for target in found)
    return f"{targets_table(found).text()}\n{met} of {checked} targets met"


def schemathesis_floor(
    results: dict[str, dict[str, Any]], per_call: dict[str, float], connect_ms: float
) -> dict[str, float] | None:
    """The least a live server that ends its sessions between examples (as
    ours do) could take for the Schemathesis run: the in-process run, plus
    what HTTP's client alone adds to each request it sent (see ``_floor``),
    plus a new session per example; None without from_wsgi and stock@0."""
    if "from_wsgi" not in results or BASELINE not in results:
        return None
    in_process = results["from_wsgi"]["median"]["schemathesis_s"]
    sent = max(
        (done["median"]["schemathesis_requests"] or 0) for done in results.values()
    )
    examples = results[BASELINE]["median"]["schemathesis_calls"]
    floor = _floor.least(
        in_process, sent, per_call, sessions=examples, connect_ms=connect_ms
    )
    return {
        **floor,
        "connect_ms": connect_ms,
        "examples": examples,
        "least_ratio": floor["least_s"] / results[BASELINE]["median"]["schemathesis_s"],
    }


def floor_text(floor: dict[str, float]) -> str:
    """`schemathesis_floor`'s figures, said."""
    return (
        f"Schemathesis floor: a call through Schemathesis's HTTP transport to a "
        f"server that answers at once took {floor['http_ms']:.2f} ms, through its "
        f"in-process transport {floor['wsgi_ms']:.2f} ms; opening a session "
        f"{floor['connect_ms']:.2f} ms. With {floor['requests']} requests and a "
        f"new session in each of the {floor['examples']} examples, a live server "
        f"that cost nothing else would take {floor['least_s']:.2f} s: "
        f"{floor['least_ratio']:.2f}x {BASELINE} at best."
    )


def write_markdown(
    path: str,
    tables_: list[Table],
    variants: list[Variant],
    results: dict[str, dict[str, Any]],
    sizes: Sizes,
) -> None:
    """Every table and the targets as Markdown, to paste into the docs."""
    found = check_targets(variants, results, sizes)
    parts = [table.markdown() for table in [*tables_, targets_table(found)]]
    Path(path).write_text("\n\n".join(parts) + "\n")


def write_json(
    path: str,
    about: dict[str, Any],
    sizes: Sizes,
    variants: list[Variant],
    results: dict[str, dict[str, Any]],
    floor: dict[str, float] | None = None,
) -> None:
    """Every median, every run, the sizes, the machine and the Schemathesis
    floor, as JSON."""
    document = {
        "machine": about,
        "sizes": {
            "requests": sizes.requests,
            "clients": sizes.clients,
            "examples_per_operation": sizes.examples,
            "drain_clients": sizes.drain_clients,
            "drain_timeout": sizes.drain_timeout,
            "fresh_clients": sizes.fresh_clients,
            "fresh_requests": sizes.fresh_requests,
            "resets": sizes.resets,
        },
        "targets": [
            target.__dict__ for target in check_targets(variants, results, sizes)
        ],
        "schemathesis_floor": floor,
        "variants": {
            variant.name: {
                "label": variant.label,
                "workers": variant.workers,
                "budget": variant.budget,
                "conn_max_age": variant.conn_max_age,
                "pg_pool": variant.pg_pool,
                "peak_sessions_all_runs": peak_sessions(results, variant.name),
                **results[variant.name],
            }
            for variant in variants
        },
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def plot(
    path: str,
    about: dict[str, Any],
    sizes: Sizes,
    variants: list[Variant],
    results: dict[str, dict[str, Any]],
) -> None:
    """Bars of the three headline figures by variant, coloured by CONN_MAX_AGE,
    with the targets drawn against stock@0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fresh = str(sizes.fresh_clients)
    panels: list[tuple[str, Callable[[dict[str, Any]], float | None], float]] = [
        ("fresh connection, 1 client:\nms per GET /items/ (lower is better)",
         lambda medians: medians["fresh_ms"], 0.4),
        (f"fresh connections, {fresh} clients:\nrequests/s (higher is better)",
         lambda medians: medians["fresh_req_s"].get(fresh), 1.5),
        (f"Schemathesis, {len(OPERATIONS)} operations x {sizes.examples} "
         "examples:\ns (lower is better)",
         lambda medians: medians["schemathesis_s"], 0.5),
    ]  # fmt: skip
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels))
    names = [variant.name for variant in variants]
    colors = [
        "0.6"
        if not variant.http
        else ("C0" if variant.conn_max_age == 0 else "C1")
        if variant.safelive
        else ("C3" if variant.conn_max_age == 0 else "C5")
        for variant in variants
    ]
    for axis, (title, figure_of, factor) in zip(axes, panels, strict=True):
        values = [figure_of(results[name]["median"]) for name in names]
        shown = [(i, v) for i, v in enumerate(values) if v is not None]
        axis.barh(
            [i for i, _ in shown],
            [v for _, v in shown],
            color=[colors[i] for i, _ in shown],
        )
        for index, value in shown:
            axis.annotate(
                f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}",
                (value, index),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        base = figure_of(results[BASELINE]["median"]) if BASELINE in results else None
        if base:
            axis.axvline(factor * base, color="k", linestyle="--", linewidth=1)
            title += f"\ndashed: the target, {factor:g}x {BASELINE}"
        axis.set_title(title, fontsize=9)
        axis.set_yticks(range(len(names)), names if axis is axes[0] else [])
        axis.set_ylim(len(names) - 0.5, -0.5)  # the first variant on top
        axis.grid(axis="x", alpha=0.3)
        axis.margins(x=0.15)
    figure.suptitle(
        f"{about['cpu_count']} CPUs, Python {about['python']}, "
        f"Django {about['django']}, {about['driver']}, "
        f"PostgreSQL {about['postgresql'].split()[0]}; medians of runs\n"
        "blue/orange: django-safelive under CONN_MAX_AGE 0/600; red/brown: "
        "Django's live server under 0/600; grey: in-process",
        fontsize=10,
    )
    figure.savefig(path, dpi=100)
