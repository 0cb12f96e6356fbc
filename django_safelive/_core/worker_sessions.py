"""What a server worker does with its database sessions between requests."""

from __future__ import annotations

import threading
from collections.abc import Container

from django.db import close_old_connections, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created


class _WorkerState(threading.local):
    # Whether the current thread is a worker that keeps its sessions until the
    # reset, whatever CONN_MAX_AGE says.
    keeps_sessions: bool = False


_worker_state = _WorkerState()


def _keep_worker_sessions(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: object
) -> None:
    """``connection_created``: a worker's session lives until the reset.

    With ``CONN_MAX_AGE = 0`` (Django's default) every request would otherwise
    fork a PostgreSQL backend and end it; Django still closes a session that
    is broken or whose autocommit a view left changed, at the end of each
    request.
    """
    if _worker_state.keeps_sessions:
        connection.close_at = None


# Connected once, for the process: it only reads the calling thread's state.
connection_created.connect(
    _keep_worker_sessions, weak=False, dispatch_uid="django_safelive.keep_sessions"
)


def keep_sessions(keep: bool) -> None:
    """Whether the current thread, a worker, keeps its sessions until the reset."""
    _worker_state.keeps_sessions = keep


def after_request(*, session_per_request: bool, shared: Container[str]) -> None:
    """Close what the request leaves that the next one must not inherit: every
    session with `session_per_request`, else only a broken or changed one.
    The `shared` aliases are the test thread's connections, never closed here."""
    _discard_open_atomic_blocks(shared)
    if session_per_request:
        connections.close_all()
    else:
        close_old_connections()


def _discard_open_atomic_blocks(shared: Container[str]) -> None:
    """Replace the worker's connections that a view left inside ``atomic()``.

    Django closes such a connection when the request finishes, but the
    wrapper stays marked as inside a transaction, so every later request
    on this worker would fail with "the connection is closed". A fresh
    wrapper replaces it; its session was closed, so the write rolled back.
    """
    for wrapper in connections.all(initialized_only=True):
        if wrapper.in_atomic_block and wrapper.alias not in shared:
            wrapper.close()
            del connections[wrapper.alias]
