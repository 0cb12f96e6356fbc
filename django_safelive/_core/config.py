"""Resolve and validate django-safelive's settings."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

Mode = Literal["single", "pool"]
MODES: tuple[Mode, ...] = ("single", "pool")

# 8 sessions per alias per test process: `pytest -n 8` then needs at most 64 of a
# stock PostgreSQL's 97 non-superuser slots (max_connections 100 minus 3 reserved),
# leaving room for psql, the test database's create/drop and a second suite.
DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_MODE: Mode = "pool"
# Four workers serve the concurrency a test client realistically drives, and leave
# three sessions of the default budget for threads the application starts itself.
DEFAULT_WORKERS = 4
DEFAULT_DRAIN_TIMEOUT = 10.0

# setting key -> (class attribute, environment variable)
_SOURCES: dict[str, tuple[str | None, str]] = {
    "MAX_CONNECTIONS": ("max_connections", "SAFELIVE_MAX_CONNECTIONS"),
    # The whole run's budget, split across pytest-xdist workers: no class attribute.
    "TOTAL_MAX_CONNECTIONS": (None, "SAFELIVE_TOTAL_MAX_CONNECTIONS"),
    "MODE": ("server_mode", "SAFELIVE_MODE"),
    "WORKERS": ("server_workers", "SAFELIVE_WORKERS"),
    "DRAIN_TIMEOUT": ("drain_timeout", "SAFELIVE_DRAIN_TIMEOUT"),
    "TRACE": ("trace", "SAFELIVE_TRACE"),
    "SESSION_PER_REQUEST": ("session_per_request", "SAFELIVE_SESSION_PER_REQUEST"),
    # Sessions shared by every process on one PostgreSQL server, and how long
    # a process waits for its share: facts of the run, not of a test class.
    "SERVER_BUDGET": (None, "SAFELIVE_SERVER_BUDGET"),
    "SERVER_BUDGET_TIMEOUT": (None, "SAFELIVE_SERVER_BUDGET_TIMEOUT"),
}
# Set by SafeLiveRunner for the processes of `manage.py test --parallel N`.
DJANGO_PARALLEL_VARIABLE = "_SAFELIVE_DJANGO_PARALLEL"
DEFAULT_SERVER_BUDGET_TIMEOUT = 600.0


@dataclass(frozen=True)
class Config:
    """The settings one live server runs with, already validated."""

    max_connections: int
    mode: Mode
    workers: int
    drain_timeout: float
    # Record the stack that opened each session (costly, so off by default).
    trace: bool = False
    # Close each worker's sessions after every request, whatever CONN_MAX_AGE
    # says; by default a worker keeps one session per alias until the reset.
    session_per_request: bool = False


def where(key: str, source: str) -> str:
    """How messages name the place `key` was set: ``"env"``, ``"class"`` or
    ``"settings"`` (the environment variable, the class attribute, the
    ``SAFELIVE`` dict's key)."""
    attribute, variable = _SOURCES[key]
    if source == "env":
        return f"the environment variable {variable}"
    if source == "class":
        return f"the class attribute {attribute}"
    return f"SAFELIVE[{key!r}]"


def positive_int(key: str, value: object, source: str, minimum: int = 1) -> int:
    """`value`, set for `key` at `source`, as a whole number of at least `minimum`."""
    if source == "env" and isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ImproperlyConfigured(
                f"{where(key, source)} must be a whole number, got {value!r}."
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImproperlyConfigured(
            f"{where(key, source)} must be an int, got {type(value).__name__} "
            f"{value!r}."
        )
    if value < minimum:
        raise ImproperlyConfigured(
            f"{where(key, source)} must be at least {minimum}, got {value}."
        )
    return value


def parse_mode(value: object, source: str) -> Mode:
    """`value`, set for MODE at `source`, as a mode."""
    if isinstance(value, str) and value.strip().lower() in MODES:
        mode: Mode = "single" if value.strip().lower() == "single" else "pool"
        return mode
    raise ImproperlyConfigured(
        f"{where('MODE', source)} must be 'single' or 'pool', got {value!r}."
    )


def _seconds(key: str, value: object, source: str) -> float:
    if source == "env" and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ImproperlyConfigured(
                f"{where(key, source)} must be a number of seconds, got {value!r}."
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImproperlyConfigured(
            f"{where(key, source)} must be a number of seconds, got "
            f"{type(value).__name__} {value!r}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ImproperlyConfigured(
            f"{where(key, source)} must be a positive, finite number of seconds, "
            f"got {value!r}."
        )
    return float(value)


_TRUE = ("1", "true")
_FALSE = ("0", "false")


def _bool(key: str, value: object, source: str) -> bool:
    if source == "env" and isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE + _FALSE:
            return text in _TRUE
        raise ImproperlyConfigured(
            f"{where(key, source)} must be 1, 0, true or false, got {value!r}."
        )
    if not isinstance(value, bool):
        raise ImproperlyConfigured(
            f"{where(key, source)} must be True or False, got "
            f"{type(value).__name__} {value!r}."
        )
    return value


def _raw_settings() -> Mapping[str, Any]:
    raw = getattr(settings, "SAFELIVE", {})
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"settings.SAFELIVE must be a dict, got {type(raw).__name__}."
        )
    unknown = sorted(set(raw) - set(_SOURCES))
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown key(s) in settings.SAFELIVE: {', '.join(map(repr, unknown))}. "
            f"Valid keys are {', '.join(map(repr, _SOURCES))}."
        )
    return raw


def lookup(key: str, owner: object | None) -> tuple[object, str] | None:
    """Return the winning (value, source) for a key: environment, class, settings."""
    attribute, variable = _SOURCES[key]
    if variable in os.environ:
        return os.environ[variable], "env"
    if attribute and owner is not None and getattr(owner, attribute, None) is not None:
        return getattr(owner, attribute), "class"
    raw = _raw_settings()
    if key in raw:
        return raw[key], "settings"
    return None


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
            "TOTAL_MAX_CONNECTIONS is split across the processes of `manage.py "
            "test --parallel` by django-safelive's runner only: set TEST_RUNNER = "
            "'django_safelive.runner.SafeLiveRunner' (or pass --testrunner), or "
            "unset TOTAL_MAX_CONNECTIONS and set MAX_CONNECTIONS per process."
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
    return _seconds("SERVER_BUDGET_TIMEOUT", *found)


def total_budget() -> int | None:
    """SAFELIVE["TOTAL_MAX_CONNECTIONS"] or its environment variable, if set."""
    found = lookup("TOTAL_MAX_CONNECTIONS", None)
    return None if found is None else positive_int("TOTAL_MAX_CONNECTIONS", *found)


def resolve_options(owner: object | None = None) -> tuple[float, bool, bool]:
    """DRAIN_TIMEOUT, TRACE and SESSION_PER_REQUEST for `owner`, in that order:
    the settings that apply to any server, whatever its mode and budget."""
    found = lookup("DRAIN_TIMEOUT", owner)
    drain_timeout = (
        DEFAULT_DRAIN_TIMEOUT if found is None else _seconds("DRAIN_TIMEOUT", *found)
    )
    found = lookup("TRACE", owner)
    trace = False if found is None else _bool("TRACE", *found)
    found = lookup("SESSION_PER_REQUEST", owner)
    session_per_request = (
        False if found is None else _bool("SESSION_PER_REQUEST", *found)
    )
    return drain_timeout, trace, session_per_request


def resolve(owner: object | None = None, processes: int | None = None) -> Config:
    """Build the configuration for `owner` (a test case class, or None).

    Environment variables win over class attributes, which win over
    ``settings.SAFELIVE``, so CI can tune a suite without touching its code.
    A total budget is split evenly across `processes` (default: the
    pytest-xdist workers); the per-process budget is the smaller of that share
    and MAX_CONNECTIONS, when both are set.
    """
    processes = processes or process_count()
    max_connections = _process_budget(owner, processes)
    found = lookup("MODE", owner)
    mode = DEFAULT_MODE if found is None else parse_mode(*found)
    drain_timeout, trace, session_per_request = resolve_options(owner)
    found = lookup("WORKERS", owner)
    if mode == "single":
        workers = 1
    elif found is None:
        workers = max(1, min(DEFAULT_WORKERS, max_connections - 1))
    else:
        workers = positive_int("WORKERS", *found)
    _check_room(max_connections, processes, mode, workers)
    return Config(
        max_connections=max_connections,
        mode=mode,
        workers=workers,
        drain_timeout=drain_timeout,
        trace=trace,
        session_per_request=session_per_request,
    )


def _process_budget(owner: object | None, processes: int) -> int:
    """MAX_CONNECTIONS, or this process's share of TOTAL_MAX_CONNECTIONS."""
    found = lookup("MAX_CONNECTIONS", owner)
    total = total_budget()
    if total is None:
        if found is None:
            return DEFAULT_MAX_CONNECTIONS
        return positive_int("MAX_CONNECTIONS", *found)
    share = total // processes
    if found is None:
        return share
    return min(share, positive_int("MAX_CONNECTIONS", *found))


def _check_room(max_connections: int, processes: int, mode: str, workers: int) -> None:
    """Refuse a budget too small for the workers plus the test thread."""
    needed = workers + 1
    total = total_budget()
    if total is not None and total // processes < needed:
        across, fewer = split_across(processes)
        raise ImproperlyConfigured(
            f"The django-safelive total budget of {total} database session(s) per "
            f"alias, split across {across}, gives each "
            f"{total // processes}, but mode {mode!r} with {workers} worker(s) needs "
            f"{needed} per process (one per server worker plus the test thread). "
            f"Raise TOTAL_MAX_CONNECTIONS to {needed * processes} or more, {fewer}"
            + (", or lower WORKERS." if workers > 1 else ".")
        )
    if max_connections < needed:
        raise ImproperlyConfigured(
            f"The django-safelive budget of {max_connections} database session(s) "
            f"per alias is too small for mode {mode!r} with {workers} worker(s): "
            f"it needs at least {needed} (one per worker plus the test thread). "
            f"Raise MAX_CONNECTIONS to {needed} or more"
            + (", or lower WORKERS." if workers > 1 else ".")
        )


def pool_sizes(settings_dict: Mapping[str, Any]) -> tuple[int, int] | None:
    """(min_size, max_size) of a database's Django 5.1+ psycopg pool, if it pools."""
    pool = settings_dict.get("OPTIONS", {}).get("pool")
    if not pool:
        return None
    options = pool if isinstance(pool, Mapping) else {}
    # psycopg_pool's defaults: min_size 4, and max_size None meaning min_size.
    min_size = int(options.get("min_size", 4))
    max_size = options.get("max_size")
    return min_size, int(max_size if max_size is not None else min_size)


def pool_max_size(alias: str) -> int | None:
    """The ``max_size`` of Django 5.1+'s psycopg pool for `alias`, if it pools."""
    from django.db import connections

    sizes = pool_sizes(connections.settings[alias])
    return None if sizes is None else sizes[1]
