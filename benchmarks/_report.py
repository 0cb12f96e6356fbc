"""The machine a run was on, medians of runs, and the table, JSON and chart."""

from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import platform
import statistics
from importlib.metadata import version
from pathlib import Path
from typing import Any

import django
from django.db import connections
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from benchmarks._run import ENDPOINTS, OPERATIONS, Sizes, Variant
from tests._sampler import connect


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
        "conn_max_age": connections["default"].settings_dict["CONN_MAX_AGE"],
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


def tables(
    variants: list[Variant], results: dict[str, dict[str, Any]], sizes: Sizes
) -> str:
    """Throughput per endpoint and clients; then sessions, Schemathesis, drain."""
    clients = sizes.clients
    heads = [f"{endpoint} {count}" for endpoint in ENDPOINTS for count in clients]
    lines = [
        "Requests/s: read = GET /items/, write = POST /items/; N keep-alive clients",
        f"{'variant':<10} " + " ".join(f"{head:>8}" for head in heads),
    ]
    for variant in variants:
        medians = results[variant.name]["median"]
        cells = [
            _cell(medians[f"{endpoint}_req_s"].get(str(count)))
            for endpoint in ENDPOINTS
            for count in clients
        ]
        lines.append(f"{variant.name:<10} " + " ".join(f"{c:>8}" for c in cells))
    lines += [
        "",
        "Sessions: peak by clients; errors: failed requests above; Schemathesis: "
        f"{len(OPERATIONS)} operations x {sizes.examples} examples; stop: "
        f"terminate() with {sizes.drain_clients} idle keep-alive clients, the "
        "sessions then and the seconds until none was left",
        f"{'':<10} {'':>7} {'':>6} {'sessions':>12} {'':>6}  "
        f"{'--- schemathesis ---':>20}  {'----- stop -----':>16}",
        f"{'variant':<10} {'workers':>7} {'budget':>6} "
        f"{'/'.join(map(str, clients)):>12} {'errors':>6}  "
        f"{'s':>6} {'peak':>6} {'failed':>6}  {'sessions':>8} {'drain s':>7}",
    ]
    for variant in variants:
        medians = results[variant.name]["median"]
        errors = sum(
            count
            for endpoint in ENDPOINTS
            for count in medians[f"{endpoint}_errors"].values()
        )
        peaks = "/".join(
            _cell(medians["peak_sessions"].get(str(count))) for count in clients
        )
        if medians["drain_left"] and medians["drain_s"] is None:
            drained = f">{sizes.drain_timeout:g}, {medians['drain_left']:.0f} left"
        else:
            drained = _cell(medians["drain_s"], 2)
        lines.append(
            f"{variant.name:<10} {_cell(variant.workers):>7} "
            f"{_cell(variant.budget):>6} {peaks:>12} {errors:>6.0f}  "
            f"{medians['schemathesis_s']:>6.2f} "
            f"{medians['schemathesis_peak_sessions']:>6.0f} "
            f"{medians['schemathesis_failures']:>6.0f}  "
            f"{_cell(medians['drain_sessions']):>8} {drained:>7}"
        )
    return "\n".join(lines)


def write_json(
    path: str,
    about: dict[str, Any],
    sizes: Sizes,
    variants: list[Variant],
    results: dict[str, dict[str, Any]],
) -> None:
    """Every median, every run, the sizes and the machine, as JSON."""
    document = {
        "machine": about,
        "sizes": {
            "requests": sizes.requests,
            "clients": sizes.clients,
            "examples_per_operation": sizes.examples,
            "drain_clients": sizes.drain_clients,
            "drain_timeout": sizes.drain_timeout,
        },
        "variants": {
            variant.name: {
                "label": variant.label,
                "workers": variant.workers,
                "budget": variant.budget,
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
    """A bar chart of requests/s by variant and clients, read and write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(ENDPOINTS), sharey=True)
    width = 0.8 / len(sizes.clients)
    names = [variant.name for variant in variants]
    colors = {count: f"C{index}" for index, count in enumerate(sizes.clients)}
    for axis, endpoint in zip(axes, ENDPOINTS, strict=True):
        for position, name in enumerate(names):
            rates = results[name]["median"][f"{endpoint}_req_s"]
            # Each variant's bars centred on its tick (in-process: one client).
            shown = [count for count in sizes.clients if rates.get(str(count))]
            for index, count in enumerate(shown):
                offset = (index - (len(shown) - 1) / 2) * width
                axis.bar(
                    position + offset,
                    rates[str(count)],
                    width,
                    color=colors[count],
                    label=f"{count} client{'s' if count > 1 else ''}",
                )
        method = "GET" if endpoint == "read" else "POST"
        axis.set_title(f"{endpoint}: {method} /items/")
        axis.set_xticks(range(len(names)), names, rotation=0)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("requests/s (median)")
    # One legend entry per client count, not one per bar.
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[0].legend(unique.values(), unique.keys())
    figure.suptitle(
        f"{about['cpu_count']} CPUs, Python {about['python']}, "
        f"Django {about['django']}, {about['driver']}, "
        f"PostgreSQL {about['postgresql'].split()[0]}; median of runs of "
        f"{sizes.requests} requests"
    )
    figure.savefig(path, dpi=100)
