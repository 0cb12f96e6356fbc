"""Resolve and validate django-safelive's settings."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from django_safelive._core.sources import (
    Mode,
    boolean,
    lookup,
    parse_mode,
    positive_int,
    seconds,
)

# 8 sessions per alias per test process: `pytest -n 8` then needs at most 64 of a
# stock PostgreSQL's 97 non-superuser slots (max_connections 100 minus 3 reserved),
# leaving room for psql, the test database's create/drop and a second suite.
DEFAULT_MAX_SESSIONS = 8
DEFAULT_MODE: Mode = "pool"
# Four workers serve the concurrency a test client realistically drives, and leave
# three sessions of the default budget for threads the application starts itself.
DEFAULT_WORKERS = 4
# The ASGI server's WebSocket connections share one worker (and its session)
# by default: their database work is short calls, not whole requests.
DEFAULT_WEBSOCKET_WORKERS = 1
DEFAULT_DRAIN_TIMEOUT = 10.0

# Set by SafeLiveRunner for the processes of `manage.py test --parallel N`.
DJANGO_PARALLEL_VARIABLE = "_SAFELIVE_DJANGO_PARALLEL"
DEFAULT_SERVER_BUDGET_TIMEOUT = 600.0


@dataclass(frozen=True)
class Config:
    """The settings one live server runs with, already validated."""

    max_sessions: int
    mode: Mode
    workers: int
    drain_timeout: float
    # Record the stack that opened each session (costly, so off by default).
    trace: bool = False
    # Close each worker's sessions after every request, whatever CONN_MAX_AGE
    # says; by default a worker keeps one session per alias until the reset.
    session_per_request: bool = False
    # The ASGI server's workers for WebSocket connections (0 for WSGI servers).
    websocket_workers: int = 0


def xdist_workers() -> int:
    """How many pytest-xdist worker processes share the database (1 without xdist)."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    return int(count) if count.isdigit() and int(count) > 0 else 1


def process_count() -> int:
    """How many test processes of this run share the database: pytest-xdist's
    workers, or the processes of ``manage.py test --parallel`` under
    SafeLiveRunner (1 for neither).

    A process of Django's parallel runner started without SafeLiveRunner
    cannot know how many there are: with a total budget set, it is refused.
    """
    if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
        return xdist_workers()
    count = _django_parallel()
    if count:
        return count
    if _in_django_parallel_worker() and total_budget() is not None:
        raise ImproperlyConfigured(
            "TOTAL_MAX_SESSIONS is split across the processes of `manage.py "
            "test --parallel` by django-safelive's runner only: set TEST_RUNNER = "
            "'django_safelive.runner.SafeLiveRunner' (or pass --testrunner), or "
            "unset TOTAL_MAX_SESSIONS and set MAX_SESSIONS per process."
        )
    return 1


def _django_parallel() -> int:
    """The processes of ``manage.py test --parallel``, as SafeLiveRunner told
    them (0 outside such a run)."""
    count = os.environ.get(DJANGO_PARALLEL_VARIABLE, "")
    return int(count) if count.isdigit() else 0


def split_across(processes: int, plural: str = "(s)") -> tuple[str, str]:
    """How a message names `processes` processes, and how to have fewer."""
    if _django_parallel() and "PYTEST_XDIST_WORKER_COUNT" not in os.environ:
        noun = "processes" if plural == "s" else "process(es)"
        return f"{processes} `manage.py test --parallel` {noun}", (
            "run fewer processes (--parallel)"
        )
    return f"{processes} pytest-xdist worker{plural}", "run fewer xdist workers (-n)"


def _in_django_parallel_worker() -> bool:
    """Whether this is a process of Django's parallel test runner (it numbers
    them from 1 in ``django.test.runner._worker_id``; 0 elsewhere)."""
    runner = sys.modules.get("django.test.runner")
    return bool(getattr(runner, "_worker_id", 0))


def server_budget() -> int | None:
    """SAFELIVE["SERVER_BUDGET"] or its environment variable, if set: the
    sessions every process on one PostgreSQL server may hold together."""
    found = lookup("SERVER_BUDGET", None)
    return None if found is None else positive_int("SERVER_BUDGET", *found, 2)


def server_budget_timeout() -> float:
    """How long a process waits for its slots of the server budget, in seconds."""
    found = lookup("SERVER_BUDGET_TIMEOUT", None)
    if found is None:
        return DEFAULT_SERVER_BUDGET_TIMEOUT
    return seconds("SERVER_BUDGET_TIMEOUT", *found)


def total_budget() -> int | None:
    """SAFELIVE["TOTAL_MAX_SESSIONS"] or its environment variable, if set."""
    found = lookup("TOTAL_MAX_SESSIONS", None)
    return None if found is None else positive_int("TOTAL_MAX_SESSIONS", *found)


def resolve_options(owner: object | None = None) -> tuple[float, bool, bool]:
    """DRAIN_TIMEOUT, TRACE and SESSION_PER_REQUEST for `owner`, in that order:
    the settings that apply to any server, whatever its mode and budget."""
    found = lookup("DRAIN_TIMEOUT", owner)
    drain_timeout = (
        DEFAULT_DRAIN_TIMEOUT if found is None else seconds("DRAIN_TIMEOUT", *found)
    )
    found = lookup("TRACE", owner)
    trace = False if found is None else boolean("TRACE", *found)
    found = lookup("SESSION_PER_REQUEST", owner)
    session_per_request = (
        False if found is None else boolean("SESSION_PER_REQUEST", *found)
    )
    return drain_timeout, trace, session_per_request


def resolve(
    owner: object | None = None,
    processes: int | None = None,
    *,
    websockets: bool = False,
) -> Config:
    """Build the configuration for `owner` (a test case class, or None);
    with `websockets`, for the ASGI server, whose WebSocket workers come out
    of the same budget.

    Environment variables win over class attributes, which win over
    ``settings.SAFELIVE``, so CI can tune a suite without touching its code.
    A total budget is split evenly across `processes` (default: the
    pytest-xdist workers); the per-process budget is the smaller of that share
    and MAX_SESSIONS, when both are set.
    """
    processes = processes or process_count()
    max_sessions = _process_budget(owner, processes)
    found = lookup("MODE", owner)
    mode = DEFAULT_MODE if found is None else parse_mode(*found)
    drain_timeout, trace, session_per_request = resolve_options(owner)
    websocket_workers = 0
    if websockets:
        found = lookup("WEBSOCKET_WORKERS", owner)
        websocket_workers = (
            DEFAULT_WEBSOCKET_WORKERS
            if found is None
            else positive_int("WEBSOCKET_WORKERS", *found)
        )
    found = lookup("WORKERS", owner)
    if mode == "single":
        workers = 1
    elif found is None:
        workers = max(1, min(DEFAULT_WORKERS, max_sessions - 1 - websocket_workers))
    else:
        workers = positive_int("WORKERS", *found)
    _check_room(max_sessions, processes, mode, workers, websocket_workers)
    return Config(
        max_sessions=max_sessions,
        mode=mode,
        workers=workers,
        drain_timeout=drain_timeout,
        trace=trace,
        session_per_request=session_per_request,
        websocket_workers=websocket_workers,
    )


def _process_budget(owner: object | None, processes: int) -> int:
    """MAX_SESSIONS, or this process's share of TOTAL_MAX_SESSIONS."""
    found = lookup("MAX_SESSIONS", owner)
    total = total_budget()
    if total is None:
        if found is None:
            return DEFAULT_MAX_SESSIONS
        return positive_int("MAX_SESSIONS", *found)
    share = total // processes
    if found is None:
        return share
    return min(share, positive_int("MAX_SESSIONS", *found))


def _check_room(
    max_sessions: int,
    processes: int,
    mode: str,
    workers: int,
    websocket_workers: int = 0,
) -> None:
    """Refuse a budget too small for the workers plus the test thread."""
    needed = workers + websocket_workers + 1
    if websocket_workers:
        workers_text = (
            f"{workers} worker(s) and {websocket_workers} WebSocket worker(s)"
        )
        per = "one per worker, one per WebSocket worker, plus the test thread"
        lower = ", or lower WORKERS or WEBSOCKET_WORKERS."
    else:
        workers_text = f"{workers} worker(s)"
        per = "one per worker plus the test thread"
        lower = ", or lower WORKERS." if workers > 1 else "."
    total = total_budget()
    if total is not None and total // processes < needed:
        across, fewer = split_across(processes)
        raise ImproperlyConfigured(
            f"The django-safelive total budget of {total} database session(s) per "
            f"alias, split across {across}, gives each "
            f"{total // processes}, but mode {mode!r} with {workers_text} needs "
            f"{needed} per process ({per}). "
            f"Raise TOTAL_MAX_SESSIONS to {needed * processes} or more, {fewer}" + lower
        )
    if max_sessions < needed:
        raise ImproperlyConfigured(
            f"The django-safelive budget of {max_sessions} database session(s) "
            f"per alias is too small for mode {mode!r} with {workers_text}: "
            f"it needs at least {needed} ({per}). "
            f"Raise MAX_SESSIONS to {needed} or more" + lower
        )
