"""Find, wait for and end one live server's sessions in PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Collection, Iterator
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_safelive._core.psycopg_pools import pool_sizes

# How long a closed session's backend may take to exit before we stop waiting
# (it takes a few milliseconds).
EXIT_WAIT = 5.0


def postgresql_backend(pid: int) -> str:
    """How the accounting names the PostgreSQL session with backend `pid`."""
    return f"PostgreSQL pid {pid}"


def watch_exit(wrapper: BaseDatabaseWrapper) -> int | None:
    """Before `wrapper` closes its PostgreSQL session: a duplicate of its socket,
    for :func:`wait_exit`; None where there is nothing to wait for (another
    database, no session, or Django's pool, which keeps the session open)."""
    if (
        wrapper.vendor != "postgresql"
        or wrapper.connection is None
        or pool_sizes(wrapper.settings_dict) is not None
    ):
        return None
    try:
        return os.dup(wrapper.connection.fileno())
    except Exception:  # already closed or broken: its backend is gone or going
        return None


def wait_exit(fd: int, timeout: float = EXIT_WAIT) -> bool:
    """Wait until PostgreSQL closes the session's socket (`fd`, from
    :func:`watch_exit`); True if it did within `timeout`.

    A backend closes its socket last as it exits, after it has left
    ``pg_stat_activity`` and given back its ``max_connections`` slot. A client
    closing its side does not wait for that, so without this wait a session
    just closed still counts on the server while its replacement opens.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(fileno=fd) as sock:
        try:
            sock.settimeout(timeout)
            while sock.recv(4096):
                sock.settimeout(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        except OSError:  # reset by the server: gone as well
            pass
    return True


_SERVER_SESSIONS = """
    SELECT pid, application_name, state, EXTRACT(EPOCH FROM now() - backend_start)
    FROM pg_stat_activity
    WHERE application_name LIKE %s
      AND application_name NOT LIKE %s
      AND pid <> pg_backend_pid()
    ORDER BY backend_start
"""


def _patterns(tag: str) -> tuple[str, str]:
    # LIKE treats _ and % specially; tags are "safelive:<pid>.<n>", free of both.
    return f"%{tag}:%", f"%{tag}:test"


@contextlib.contextmanager
def _server_cursor(alias: str) -> Iterator[Any]:
    """A cursor for questions about the whole server: on the test thread's
    session when it has one open, else on a short-lived one on the maintenance
    database, as Django uses to create and drop the test database (which may
    already be gone; the configured database may not exist)."""
    connection = connections[alias]
    if connection.connection is not None:
        with connection.cursor() as cursor:
            yield cursor
    else:
        with connection._nodb_cursor() as cursor:
            yield cursor


def server_sessions(alias: str, tag: str) -> list[tuple[int, str]]:
    """The (pid, description) of sessions tagged with `tag`, but the test thread's."""
    with _server_cursor(alias) as cursor:
        cursor.execute(_SERVER_SESSIONS, _patterns(tag))
        rows = cursor.fetchall()
    return [
        (pid, f"pid {pid} {name!r}, {state or 'unknown state'}, open for {age:.1f}s")
        for pid, name, state, age in rows
    ]


def terminate(alias: str, pids: list[int]) -> None:
    """End the given backends (only ever this server's own)."""
    with _server_cursor(alias) as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", [pids]
        )


def wait_gone(
    alias: str, tag: str, timeout: float, keep: Collection[int] = ()
) -> list[tuple[int, str]]:
    """Wait until no session tagged `tag` remains but those whose backend pid
    is in `keep` (known to be held open); return those still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = server_sessions(alias, tag)
        if all(pid in keep for pid, _ in left) or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)
