"""Find, wait for and end one live server's sessions in PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any, cast

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
    :func:`watch_exit`), then close `fd`; True if it did within `timeout`.

    A backend closes its socket last as it exits, after it has left
    ``pg_stat_activity`` and given back its ``max_connections`` slot. A client
    closing its side does not wait for that, so without this wait a session
    just closed still counts on the server while its replacement opens.
    """
    left = wait_exits([fd], timeout)
    forget(left)
    return not left


def wait_exits(fds: Collection[int], timeout: float) -> set[int]:
    """Wait up to `timeout` until PostgreSQL has closed every socket of `fds`;
    close the exited ones, and return those whose backends have not exited
    yet, still open."""
    left = {fd for fd in fds if not _exited(fd)}
    if not left or timeout <= 0:
        return left
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for fd in left:
            selector.register(fd, selectors.EVENT_READ)
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                fd = cast(int, key.fileobj)
                selector.unregister(fd)  # before _exited() may close it
                if _exited(fd):
                    left.discard(fd)
                else:
                    selector.register(fd, selectors.EVENT_READ)
    return left


def wait_readable(fds: Collection[int], timeout: float) -> None:
    """Wait up to `timeout` until one of `fds` has something to read (a
    backend's socket: its end), reading nothing."""
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        selector.select(timeout)


def _exited(fd: int) -> bool:
    """Whether the backend behind `fd` has closed its socket, read without
    waiting; `fd` is closed if it has."""
    sock = socket.socket(fileno=fd)
    try:
        while sock.recv(4096, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        sock.detach()  # still there: keep `fd` open for the next look
        return False
    except OSError:  # reset by the server: gone as well
        pass
    sock.close()
    return True


def forget(fds: Iterable[int]) -> None:
    """Stop watching `fds` (close them) without waiting."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


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
