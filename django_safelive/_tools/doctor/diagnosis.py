"""The doctor's checks: what Django, django-safelive and each database are set
to, what each PostgreSQL server allows, and what could exhaust it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django_safelive._tools.database_url import server_address
from django_safelive._tools.messages import one_line

if TYPE_CHECKING:
    from django_safelive._core.checks import ServerSlots

# Shown beside the server's slots (core's ServerSlots, which adds the two
# reserved settings up): each reserved setting, and the sessions open now.
_SERVER = """
    SELECT current_setting('server_version'),
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
    slots: ServerSlots
    superuser_reserved: int
    reserved_connections: int  # PostgreSQL 16+
    in_use: int

    @property
    def free(self) -> int:
        """Sessions an ordinary role can still open."""
        return max(0, self.slots.available - self.in_use)


@dataclass
class Findings:
    """Everything worth telling the user, in order."""

    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Budget:
    """The sessions a test run may open per alias: `per_process` in each process."""

    per_process: int
    processes: int


# address -> the server there, and the aliases on it (to add up what they need)
Servers = dict[str, tuple[Server, list[str]]]


def query_server(alias: str) -> Server:
    """Ask the alias's server, through a session on its maintenance database
    (as Django creates test databases: the configured NAME need not exist),
    closed before returning; Django's psycopg pool is not used for it."""
    from django.db import connections

    from django_safelive._core.checks import ServerSlots

    with connections[alias]._nodb_cursor() as cursor:
        slots = ServerSlots.read(cursor)
        cursor.execute(_SERVER)
        row = cursor.fetchone()
    assert row is not None
    version, superuser_reserved, reserved_connections, in_use = row
    return Server(version, slots, superuser_reserved, reserved_connections, in_use)


def _line(label: str, value: object) -> str:
    return f"  {label:<22}{value}"


def diagnose(xdist: int | None) -> tuple[list[str], Findings]:
    """The report's lines and what is wrong; Django must be set up."""
    from django.db import connections

    from django_safelive._core.config import xdist_workers

    findings = Findings()
    lines = check_django(findings)
    processes = xdist or xdist_workers()
    config_lines, budget = check_configuration(xdist, processes, findings)
    servers: Servers = {}
    for alias in connections:
        lines += ["", f"database {alias!r}"]
        lines += check_database(alias, budget, servers, findings)
    lines += config_lines
    if budget is not None:
        check_server_capacity(servers, budget, findings)
    return lines, findings


def check_django(findings: Findings) -> list[str]:
    """The report's first line; a warning for a Django that leaks sessions."""
    import django

    version = ".".join(map(str, django.VERSION[:3]))
    # Django's version, not a feature, is what this message is about.
    if django.VERSION < (4, 0):
        findings.warnings.append(
            f"Django {version}'s live server never closes its request threads' "
            "database connections, so each request leaks a session; upgrade Django "
            "to 4.2 or later (the oldest django-safelive supports)"
        )
    return [
        f"django-safelive doctor: DJANGO_SETTINGS_MODULE="
        f"{os.environ['DJANGO_SETTINGS_MODULE']}, Django {version}"
    ]


def check_configuration(
    xdist: int | None, processes: int, findings: Findings
) -> tuple[list[str], Budget | None]:
    """The django-safelive configuration a run would use, and its budget (None
    when the SAFELIVE settings are invalid, which is a problem)."""
    from django.core.exceptions import ImproperlyConfigured

    from django_safelive._core.config import resolve, total_budget

    lines = ["", "django-safelive"]
    try:
        config = resolve(processes=processes)
        total = total_budget()
    except ImproperlyConfigured as error:
        findings.problems.append(f"SAFELIVE settings: {error}")
        return [*lines, _line("configuration", "invalid (see problems below)")], None
    workers_from = "--xdist" if xdist else "PYTEST_XDIST_WORKER_COUNT, or 1"
    lines += [
        _line("budget", f"{config.max_sessions} sessions per alias per live server"),
        _line(
            "total budget",
            "unset" if total is None else f"{total} per alias for the whole run",
        ),
        _line("xdist workers", f"{processes} ({workers_from})"),
        _line(
            "live server",
            f"mode {config.mode}, {config.workers} worker(s), "
            f"drain timeout {config.drain_timeout:g}s",
        ),
    ]
    return lines, Budget(config.max_sessions, processes)


def check_database(
    alias: str, budget: Budget | None, servers: Servers, findings: Findings
) -> list[str]:
    """The alias's engine, server and connection settings; its server is added
    to `servers`."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    settings_dict: dict[str, Any] = dict(settings.DATABASES[alias])
    engine = settings_dict.get("ENGINE", "")
    try:
        connection = connections[alias]
        vendor = connection.vendor
        settings_dict = dict(connection.settings_dict)
    except ImproperlyConfigured as error:
        findings.problems.append(f"database {alias!r}: {error}")
        return [_line("ENGINE", engine)]
    lines = [_line("ENGINE", f"{engine} (vendor {vendor})")]
    if vendor == "postgresql":
        lines += check_server(alias, settings_dict, servers, findings)
    else:
        lines.append(_line("server", "not PostgreSQL: no session limits to check"))
    lines += check_conn_max_age(alias, settings_dict, findings)
    lines += check_pool(alias, settings_dict, budget, findings)
    return lines


def check_server(
    alias: str, settings_dict: dict[str, Any], servers: Servers, findings: Findings
) -> list[str]:
    """The limits and current sessions of the alias's PostgreSQL server."""
    address = server_address(settings_dict.get("HOST"), settings_dict.get("PORT"))
    try:
        server = query_server(alias)
    except Exception as error:
        findings.problems.append(
            f"database {alias!r}: cannot query {address}: {one_line(error)}"
        )
        return [_line("server", f"{address}: unreachable")]
    servers.setdefault(address, (server, []))[1].append(alias)
    return [
        _line("server", f"{address}, PostgreSQL {server.version}"),
        _line("max_connections", server.slots.max_connections),
        _line("superuser_reserved", server.superuser_reserved),
        _line("reserved_connections", server.reserved_connections),
        _line("client sessions now", f"{server.in_use} (besides ours)"),
    ]


def check_conn_max_age(
    alias: str, settings_dict: dict[str, Any], findings: Findings
) -> list[str]:
    """CONN_MAX_AGE and CONN_HEALTH_CHECKS; persistent connections are warned of."""
    conn_max_age = settings_dict.get("CONN_MAX_AGE", 0)
    if conn_max_age is None or conn_max_age > 0:
        findings.warnings.append(
            f"database {alias!r}: CONN_MAX_AGE = {conn_max_age}: " + CONN_MAX_AGE_ADVICE
        )
    return [
        _line("CONN_MAX_AGE", conn_max_age),
        _line("CONN_HEALTH_CHECKS", settings_dict.get("CONN_HEALTH_CHECKS", False)),
    ]


def check_pool(
    alias: str, settings_dict: dict[str, Any], budget: Budget | None, findings: Findings
) -> list[str]:
    """Django's psycopg pool; one larger than the budget is warned of."""
    from django_safelive._core.psycopg_pools import pool_sizes

    pool = pool_sizes(settings_dict)
    if pool is None:
        return [_line("pool", "off")]
    if budget is not None and pool[1] > budget.per_process:
        findings.warnings.append(
            f"database {alias!r}: OPTIONS['pool'] max_size {pool[1]} is above "
            f"the django-safelive budget of {budget.per_process} sessions per alias: "
            "django-safelive shrinks the pool to the budget while a live "
            f"server runs, but other tests may still open {pool[1]} sessions "
            "per process; set OPTIONS['pool']['max_size'] to "
            f"{budget.per_process} or less in test settings, or raise "
            "SAFELIVE['MAX_SESSIONS']"
        )
    return [_line("pool", f"min_size {pool[0]}, max_size {pool[1]}")]


def check_server_capacity(servers: Servers, budget: Budget, findings: Findings) -> None:
    """Warn where every process's budget on every alias could exceed a server's
    free sessions, saying what total budget and worker count would fit."""
    per_process, processes = budget.per_process, budget.processes
    run = f"pytest -n {processes}" if processes > 1 else "pytest"
    for address, (server, aliases) in servers.items():
        needed = per_process * processes * len(aliases)
        if needed <= server.free:
            continue
        per_alias = server.free // len(aliases)
        advice = f"set SAFELIVE['TOTAL_MAX_SESSIONS'] = {per_alias}"
        if per_alias // processes < 2:
            # Even "single" mode needs a worker's session and the test thread's.
            advice += f" and run at most {max(1, per_alias // 2)} xdist workers"
        findings.warnings.append(
            f"{run} could need up to {needed} sessions but only {server.free} "
            f"are free on {address}; {advice} ({per_process} per alias per process "
            f"x {processes} process(es) x {len(aliases)} alias(es); "
            f"max_connections {server.slots.max_connections} - "
            f"{server.slots.reserved} reserved - {server.in_use} in use)"
        )
