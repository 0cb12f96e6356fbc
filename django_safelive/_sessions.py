"""Find, wait for and end one live server's sessions in PostgreSQL."""

from __future__ import annotations

import time

from django.db import connections

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


def server_sessions(alias: str, tag: str) -> list[tuple[int, str]]:
    """The (pid, description) of sessions tagged with `tag`, but the test thread's."""
    with connections[alias].cursor() as cursor:
        cursor.execute(_SERVER_SESSIONS, _patterns(tag))
        rows = cursor.fetchall()
    return [
        (pid, f"pid {pid} {name!r}, {state or 'unknown state'}, open for {age:.1f}s")
        for pid, name, state, age in rows
    ]


def terminate(alias: str, pids: list[int]) -> None:
    """End the given backends (only ever this server's own)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", [pids]
        )


def wait_gone(alias: str, tag: str, timeout: float) -> list[tuple[int, str]]:
    """Wait until no session tagged `tag` remains; return those still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = server_sessions(alias, tag)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)
