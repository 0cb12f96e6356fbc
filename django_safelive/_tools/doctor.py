"""``python -m django_safelive doctor``: check settings against the server's limits.

Reads the project's DJANGO_SETTINGS_MODULE, asks each PostgreSQL server how
many sessions it allows and has, and says which setting to change when a
test run could exhaust them.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any

TAKES_COMMAND = False

_SERVER = """
    SELECT current_setting('server_version'),
           current_setting('max_connections')::int,
           current_setting('superuser_reserved_connections')::int,
           coalesce(current_setting('reserved_connections', true), '0')::int,
           (SELECT count(*) FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())
"""

CONN_MAX_AGE_ADVICE = (
    "with Django's threaded live server (LiveServerTestCase, pytest-django's "
    "live_server) every idle keep-alive socket pins one session; use "
    "django_safelive.LiveServerTestCase / --safelive-live-server, whose workers "
    "keep one session each until the reset whatever CONN_MAX_AGE says, so keep "
    "the setting your application uses (setting it to 0 makes Django's server "
    "fork a backend per request and still gives each concurrent client a "
    "session)"
)


@dataclass(frozen=True)
class Server:
    """What one PostgreSQL server allows and has right now."""

    version: str
    max_connections: int
    superuser_reserved: int
    reserved: int  # reserved_connections, PostgreSQL 16+
    in_use: int

    @property
    def free(self) -> int:
        """Sessions an ordinary role can still open."""
        return max(
            0,
            self.max_connections
            - self.superuser_reserved
            - self.reserved
            - self.in_use,
        )


@dataclass
class Findings:
    """Everything worth telling the user, in order."""

    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _address(settings_dict: dict[str, Any]) -> str:
    host = settings_dict.get("HOST") or "the default host"
    return f"{host}:{settings_dict.get('PORT') or 5432}"


def query_server(alias: str) -> Server:
    """Ask the alias's server, through a session on its maintenance database
    (as Django creates test databases: the configured NAME need not exist),
    closed before returning; Django's psycopg pool is not used for it."""
    from django.db import connections

    with connections[alias]._nodb_cursor() as cursor:
        cursor.execute(_SERVER)
        row = cursor.fetchone()
    assert row is not None
    version, max_connections, superuser_reserved, reserved, in_use = row
    return Server(version, max_connections, superuser_reserved, reserved, in_use)


def _line(label: str, value: object) -> str:
    return f"  {label:<22}{value}"


def _wrap(text: str, bullet: str = "  - ") -> str:
    return textwrap.fill(
        text, width=88, initial_indent=bullet, subsequent_indent=" " * len(bullet)
    )


def diagnose(xdist: int | None) -> tuple[list[str], Findings]:
    """The report's lines and what is wrong; Django must be set up."""
    import django
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    from django_safelive._core.config import (
        pool_sizes,
        resolve,
        total_budget,
        xdist_workers,
    )

    findings = Findings()
    version = ".".join(map(str, django.VERSION[:3]))
    lines = [
        f"django-safelive doctor: DJANGO_SETTINGS_MODULE="
        f"{os.environ['DJANGO_SETTINGS_MODULE']}, Django {version}"
    ]
    # Django's version, not a feature, is what this message is about.
    if django.VERSION < (4, 0):
        findings.warnings.append(
            f"Django {version}'s live server never closes its request threads' "
            "database connections, so each request leaks a session; upgrade Django "
            "to 4.2 or later (the oldest django-safelive supports)"
        )

    processes = xdist or xdist_workers()
    budget: int | None = None
    config_lines = ["", "django-safelive"]
    try:
        config = resolve(processes=processes)
        total = total_budget()
    except ImproperlyConfigured as error:
        findings.problems.append(f"SAFELIVE settings: {error}")
        config_lines.append(_line("configuration", "invalid (see problems below)"))
    else:
        budget = config.max_connections
        config_lines += [
            _line("budget", f"{budget} sessions per alias per test process"),
            _line(
                "total budget",
                "unset" if total is None else f"{total} per alias for the whole run",
            ),
            _line(
                "xdist workers",
                f"{processes} ("
                + ("--xdist" if xdist else "PYTEST_XDIST_WORKER_COUNT, or 1")
                + ")",
            ),
            _line(
                "live server",
                f"mode {config.mode}, {config.workers} worker(s), "
                f"drain timeout {config.drain_timeout:g}s",
            ),
        ]

    # (address, Server, aliases on it), to add up what all aliases could need.
    servers: dict[str, tuple[Server, list[str]]] = {}
    for alias in connections:
        lines += ["", f"database {alias!r}"]
        settings_dict: dict[str, Any] = dict(settings.DATABASES[alias])
        engine = settings_dict.get("ENGINE", "")
        try:
            connection = connections[alias]
            vendor = connection.vendor
            settings_dict = dict(connection.settings_dict)
        except ImproperlyConfigured as error:
            lines.append(_line("ENGINE", engine))
            findings.problems.append(f"database {alias!r}: {error}")
            continue
        lines.append(_line("ENGINE", f"{engine} (vendor {vendor})"))
        if vendor == "postgresql":
            address = _address(settings_dict)
            try:
                server = query_server(alias)
            except Exception as error:
                message = " ".join(str(error).split()) or type(error).__name__
                lines.append(_line("server", f"{address}: unreachable"))
                findings.problems.append(
                    f"database {alias!r}: cannot query {address}: {message}"
                )
            else:
                lines += [
                    _line("server", f"{address}, PostgreSQL {server.version}"),
                    _line("max_connections", server.max_connections),
                    _line("superuser_reserved", server.superuser_reserved),
                    _line("reserved_connections", server.reserved),
                    _line("client sessions now", f"{server.in_use} (besides ours)"),
                ]
                servers.setdefault(address, (server, []))[1].append(alias)
        else:
            lines.append(_line("server", "not PostgreSQL: no session limits to check"))
        conn_max_age = settings_dict.get("CONN_MAX_AGE", 0)
        lines += [
            _line("CONN_MAX_AGE", conn_max_age),
            _line("CONN_HEALTH_CHECKS", settings_dict.get("CONN_HEALTH_CHECKS", False)),
        ]
        if conn_max_age is None or conn_max_age > 0:
            findings.warnings.append(
                f"database {alias!r}: CONN_MAX_AGE = {conn_max_age}: "
                + CONN_MAX_AGE_ADVICE
            )
        pool = pool_sizes(settings_dict)
        lines.append(
            _line(
                "pool",
                "off" if pool is None else f"min_size {pool[0]}, max_size {pool[1]}",
            )
        )
        if pool is not None and budget is not None and pool[1] > budget:
            findings.warnings.append(
                f"database {alias!r}: OPTIONS['pool'] max_size {pool[1]} is above "
                f"the django-safelive budget of {budget} sessions per alias: "
                "django-safelive shrinks the pool to the budget while a live "
                f"server runs, but other tests may still open {pool[1]} sessions "
                "per process; set OPTIONS['pool']['max_size'] to "
                f"{budget} or less in test settings, or raise "
                "SAFELIVE['MAX_CONNECTIONS']"
            )

    lines += config_lines
    if budget is not None:
        run = f"pytest -n {processes}" if processes > 1 else "pytest"
        for address, (server, aliases) in servers.items():
            needed = budget * processes * len(aliases)
            if needed <= server.free:
                continue
            per_alias = server.free // len(aliases)
            advice = f"set SAFELIVE['TOTAL_MAX_CONNECTIONS'] = {per_alias}"
            if per_alias // processes < 2:
                # Even "single" mode needs a worker's session and the test thread's.
                advice += f" and run at most {max(1, per_alias // 2)} xdist workers"
            findings.warnings.append(
                f"{run} could need up to {needed} sessions but only {server.free} "
                f"are free on {address}; {advice} ({budget} per alias per process "
                f"x {processes} process(es) x {len(aliases)} alias(es); "
                f"max_connections {server.max_connections} - "
                f"{server.superuser_reserved + server.reserved} reserved - "
                f"{server.in_use} in use)"
            )
    return lines, findings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``doctor``."""
    parser.description = (
        "Show, for each database of $DJANGO_SETTINGS_MODULE, the server's session "
        "limits and current use, CONN_MAX_AGE, CONN_HEALTH_CHECKS and pool "
        "options, and the django-safelive configuration a test run would use; "
        "then warn about settings that can exhaust the server's connections, "
        "naming the setting to change."
    )
    parser.epilog = (
        "Exit status: 0 when there is nothing to warn about; 1 when a warning or a "
        "problem (unreachable database, invalid SAFELIVE setting) was printed; 2 "
        "when the settings cannot be loaded."
    )
    parser.add_argument(
        "--xdist",
        type=int,
        metavar="N",
        help="check for a run of pytest -n N (default: $PYTEST_XDIST_WORKER_COUNT, "
        "else 1)",
    )


def _fail(message: str) -> int:
    print(f"django-safelive doctor: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Print the diagnosis; 0 if all is well, 1 with warnings or problems."""
    if args.xdist is not None and args.xdist < 1:
        return _fail(f"--xdist must be at least 1, got {args.xdist}")
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not module:
        return _fail(
            "DJANGO_SETTINGS_MODULE is not set: set it to the settings your tests "
            "use, e.g. DJANGO_SETTINGS_MODULE=mysite.settings python -m "
            "django_safelive doctor"
        )
    try:
        import django

        django.setup()
    except Exception as error:
        message = " ".join(str(error).split()) or type(error).__name__
        return _fail(f"cannot load DJANGO_SETTINGS_MODULE={module}: {message}")

    lines, findings = diagnose(args.xdist)
    print("\n".join(lines))
    if findings.warnings:
        print(f"\n{len(findings.warnings)} warning(s):")
        print("\n".join(_wrap(warning) for warning in findings.warnings))
    if findings.problems:
        print(f"\n{len(findings.problems)} problem(s):")
        print("\n".join(_wrap(problem) for problem in findings.problems))
    if not findings.warnings and not findings.problems:
        print("\nNo problems found.")
        return 0
    return 1
