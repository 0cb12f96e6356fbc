"""One budget of sessions for every process that runs live-server tests on one
PostgreSQL server, however many machines they run on, kept by the server itself.

``SERVER_BUDGET = N`` makes N slots: session-level advisory locks
``(KEY, 0)`` to ``(KEY, N - 1)`` in the server's maintenance database. A
process takes, through one coordinator session of its own, one slot per
session its budget allows (``MAX_SESSIONS`` per alias on that server) and
one for the coordinator; all of them or none, so that waiting processes never
hold slots another needs. Slots taken before the test databases are created
are kept until the process exits; those a live server's start took are given
back when it stops. PostgreSQL releases a session's advisory locks when the
session ends, so a process killed with SIGKILL, or a machine gone, frees its
slots once the server notices.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import NO_DB_ALIAS

from django_safelive._core.checks import SERVER_SLOTS, ServerSlots
from django_safelive._core.config import server_budget, server_budget_timeout
from django_safelive._core.exceptions import ServerBudgetExhausted
from django_safelive._core.slot_holders import KEY, slot_holders

# How often a waiting process tries again, and reports that it waits.
POLL = 0.25
PROGRESS_EVERY = 10.0
APPLICATION_NAME = "safelive-slots:{pid}@{host}"

Server = tuple[str, str]


@dataclass
class _Coordinator:
    """The session holding this process's slots on one PostgreSQL server."""

    server: Server
    connection: Any
    slots: list[int] = field(default_factory=list)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())


_coordinators: dict[Server, _Coordinator] = {}
_lock = threading.Lock()


# The sessions each live server running in this process may hold on each
# PostgreSQL server, from its reserve() to its give_back(): two servers
# running at once each have a budget of their own, so both need slots.
_running: dict[Server, list[int]] = {}

Taken = list[tuple[Server, list[int], int]]
"""What one call to :func:`reserve` took, per server: the slots, and the
sessions they are for; for :func:`give_back`."""


def reserve(aliases: Iterable[str], per_alias: int, *, server: bool = True) -> Taken:
    """Hold enough slots of SERVER_BUDGET for `per_alias` sessions on each of
    `aliases`, waiting (bounded) for them; nothing when SERVER_BUDGET is unset.
    Return the slots it took (none when the process held enough already).
    With `server`, for a live server that starts: the slots cover it besides
    the live servers already running in the process.

    Before it waits, the process closes the sessions it holds on them (the
    test thread's, idle), which no slot covers yet.
    """
    budget = server_budget()
    if budget is None:
        return []
    taken: Taken = []
    with _lock:
        for db_server, group in _by_server(list(aliases)).items():
            wanted = per_alias * len(group)
            needed = sum(_running.get(db_server, [])) + wanted + 1
            if needed > budget:
                raise ImproperlyConfigured(
                    f"SERVER_BUDGET is {budget} session(s), fewer than the {needed} "
                    f"one process needs on {_name(db_server)}: {per_alias} per alias "
                    f"for {len(group)} alias(es) ({', '.join(map(repr, group))})"
                    + (
                        ", besides the live servers running in it,"
                        if _running.get(db_server)
                        else ""
                    )
                    + f" plus its coordinator session. Raise SERVER_BUDGET to {needed} "
                    "or more, or lower MAX_SESSIONS (or TOTAL_MAX_SESSIONS)."
                )
            coordinator = _coordinators.get(db_server) or _connect(db_server, group[0])
            _coordinators[db_server] = coordinator
            before = list(coordinator.slots)
            try:
                if len(coordinator.slots) < needed:
                    _check_server(coordinator, budget)
                    _take(coordinator, budget, needed, group)
            finally:
                if not coordinator.slots:  # an idle session would be one more
                    _close(coordinator)
            new = [s for s in coordinator.slots if s not in before]
            if server:
                _running.setdefault(db_server, []).append(wanted)
            taken.append((db_server, new, wanted if server else 0))
    return taken


def give_back(aliases: Iterable[str], taken: Taken) -> None:
    """Release the slots :func:`reserve` took for a server that has stopped,
    after closing the process's idle sessions on `aliases`, which they covered.

    Slots taken before the test databases were created stay until exit.
    """
    with _lock:
        for db_server, _, wanted in taken:
            running = _running.get(db_server, [])
            if wanted and wanted in running:
                running.remove(wanted)
    if not any(slots for _, slots, _ in taken):
        return
    _close_idle(aliases)
    with _lock:
        for db_server, slots, _ in taken:
            coordinator = _coordinators.get(db_server)
            if coordinator is None or not slots:  # gone, or another process's
                continue
            _unlock(coordinator, slots)
            coordinator.slots = [s for s in coordinator.slots if s not in slots]
            if not coordinator.slots:
                _close(coordinator)


def reserve_for_run(processes: int | None = None) -> None:
    """Before the test databases are created: slots for the process's budget
    on every alias, kept until it exits, so that creating, migrating and
    dropping the databases are counted too."""
    if server_budget() is None:
        return
    from django_safelive._core.config import resolve, xdist_workers

    per_alias = resolve(processes=processes).max_sessions
    check_run(per_alias, xdist_workers())
    reserve(list(connections), per_alias, server=False)


def check_run(per_alias: int, workers: int) -> None:
    """Refuse pytest-xdist workers that together need more slots than
    SERVER_BUDGET: each keeps its slots until the run ends, so they would
    wait for each other until the timeout."""
    budget = server_budget()
    if budget is None or workers < 2:
        return
    for server, group in _by_server(list(connections)).items():
        needed = (per_alias * len(group) + 1) * workers
        if needed > budget:
            raise ImproperlyConfigured(
                f"The {workers} pytest-xdist workers of this run each hold "
                f"{needed // workers} slot(s) of SERVER_BUDGET on {_name(server)} "
                f"until the run ends, {needed} together, more than its {budget}: "
                f"they would wait for each other. Raise SERVER_BUDGET to {needed} "
                "or more, lower TOTAL_MAX_SESSIONS (or MAX_SESSIONS), or run "
                "fewer xdist workers (-n)."
            )


def _close(coordinator: _Coordinator) -> None:
    coordinator.connection.close()
    _coordinators.pop(coordinator.server, None)


def _close_idle(aliases: Iterable[str]) -> None:
    """Close the calling thread's sessions on `aliases`, unless in a transaction."""
    for alias in aliases:
        connection = connections[alias]
        if connection.connection is not None and not connection.in_atomic_block:
            connection.close()


def release_all() -> None:
    """Give every slot back: close the coordinator sessions (at exit)."""
    with _lock:
        for coordinator in _coordinators.values():
            coordinator.connection.close()
        _coordinators.clear()


def _name(server: Server) -> str:
    host, port = server
    return f"PostgreSQL {host or 'local socket'}:{port or 5432}"


def _by_server(aliases: list[str]) -> dict[Server, list[str]]:
    """The aliases grouped by server; an alias no server budget can count is
    refused rather than ignored."""
    groups: dict[Server, list[str]] = {}
    for alias in aliases:
        settings = connections[alias].settings_dict
        vendor = connections[alias].vendor
        if settings.get("TEST", {}).get("MIRROR"):
            continue
        if vendor == "postgresql":
            server = str(settings.get("HOST") or ""), str(settings.get("PORT") or "")
            groups.setdefault(server, []).append(alias)
        elif vendor != "sqlite":  # SQLite has no server to share
            raise ImproperlyConfigured(
                "SERVER_BUDGET is kept by PostgreSQL and counts PostgreSQL "
                f"sessions only, but DATABASES[{alias!r}] is {vendor}. {_UNSET}"
            )
    if aliases and not groups:
        raise ImproperlyConfigured(
            "SERVER_BUDGET is kept by PostgreSQL, but none of the databases "
            f"{', '.join(map(repr, aliases))} is PostgreSQL. {_UNSET}"
        )
    return groups


_UNSET = (
    "Unset SERVER_BUDGET (SAFELIVE['SERVER_BUDGET'] or the environment variable "
    "SAFELIVE_SERVER_BUDGET) for this run."
)


def _connect(server: Server, alias: str) -> _Coordinator:
    """A session of its own on the server's maintenance database, where every
    process looks for the same locks, whatever its test database."""
    template = connections[alias]
    # As Django's own _nodb_cursor(): NAME None is the "postgres" database.
    wrapper: Any = type(template)({**template.settings_dict, "NAME": None}, NO_DB_ALIAS)
    params = wrapper.get_connection_params()
    params["application_name"] = APPLICATION_NAME.format(
        pid=os.getpid(), host=socket.gethostname()
    )[:63]
    # The driver's own connect: the budget's accounting is not for this session.
    connection = wrapper.Database.connect(**params)
    connection.autocommit = True
    return _Coordinator(server, connection)


def _check_server(coordinator: _Coordinator, budget: int) -> None:
    ((max_connections, reserved),) = coordinator.query(SERVER_SLOTS)
    available = ServerSlots(max_connections, reserved).available
    if budget > available:
        raise ImproperlyConfigured(
            f"SERVER_BUDGET is {budget} session(s), more than the {available} "
            f"{_name(coordinator.server)} accepts from an ordinary role "
            "(max_connections minus the reserved slots). Lower SERVER_BUDGET to "
            f"{available} or less, or raise max_connections in postgresql.conf."
        )


def _try(coordinator: _Coordinator, budget: int, wanted: int) -> bool:
    """Take `wanted` more free slots at once, or none; whether it did."""
    mine = ",".join(map(str, coordinator.slots)) or "NULL"
    # CASE keeps a slot already ours from being locked twice (advisory locks
    # stack within a session), whatever order PostgreSQL evaluates in.
    taken = [
        int(slot)
        for (slot,) in coordinator.query(
            f"SELECT slot FROM generate_series(0, {budget - 1}) AS slot "
            f"WHERE CASE WHEN slot IN ({mine}) THEN false "
            f"ELSE pg_try_advisory_lock({KEY}, slot) END LIMIT {wanted}"
        )
    ]
    if len(taken) == wanted:
        coordinator.slots.extend(taken)
        return True
    if taken:
        _unlock(coordinator, taken)
    return False


def _unlock(coordinator: _Coordinator, slots: list[int]) -> None:
    coordinator.query(
        f"SELECT pg_advisory_unlock({KEY}, slot) "
        f"FROM unnest(ARRAY[{','.join(map(str, slots))}]) AS slot"
    )


def _take(
    coordinator: _Coordinator, budget: int, needed: int, aliases: list[str]
) -> None:
    """Take slots until `needed` are held, waiting at most the timeout."""
    wanted = needed - len(coordinator.slots)
    if _try(coordinator, budget, wanted):
        return
    _close_idle(aliases)
    timeout = server_budget_timeout()
    started = time.monotonic()
    reported = started - PROGRESS_EVERY
    while not _try(coordinator, budget, wanted):
        now = time.monotonic()
        if now - started >= timeout:
            raise ServerBudgetExhausted(
                server=_name(coordinator.server),
                budget=budget,
                wanted=wanted,
                timeout=timeout,
                holders=slot_holders(coordinator.query),
            )
        if now - reported >= PROGRESS_EVERY:
            reported = now
            print(
                f"django-safelive: waiting for {wanted} of the {budget} session "
                f"slots of SERVER_BUDGET on {_name(coordinator.server)} "
                f"({now - started:.0f}s of {timeout:g}s); held by: "
                + "; ".join(slot_holders(coordinator.query) or ["(none)"]),
                file=sys.stderr,
                flush=True,
            )
        time.sleep(POLL)


def _forget_inherited() -> None:
    """In a forked child: the parent's coordinator sessions are not ours.

    Their sockets are pointed at /dev/null before closing, so that the close
    (which tells the server to end the session) cannot end the parent's.
    """
    inherited = list(_coordinators.values())
    _coordinators.clear()
    _running.clear()
    for coordinator in inherited:
        try:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, coordinator.connection.fileno())
            os.close(null)
            coordinator.connection.close()
        except Exception:  # a broken inherited connection: nothing to protect
            pass


os.register_at_fork(after_in_child=_forget_inherited)
atexit.register(release_all)
