"""Count sessions on whichever database the tests run against (SAFELIVE_TEST_DB).

PostgreSQL and MariaDB report their sessions themselves (``pg_stat_activity``,
the processlist). SQLite has no server to ask, and a psycopg pool keeps idle
sessions open by design: there the sessions *checked out* come from
django-safelive's own accounting.
"""

from __future__ import annotations

import os

from django.db import connection

from django_safelive._core.holders import SERVER_WORKER
from django_safelive._core.hooks import registry
from django_safelive._core.psycopg_pools import pool_max_size
from tests._waiting import wait_for

BACKEND = os.environ.get("SAFELIVE_TEST_DB", "postgres")

_OTHER_SESSIONS = {
    "postgresql": """
        SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend'
    """,
    "mysql": """
        SELECT COUNT(*) FROM information_schema.PROCESSLIST
        WHERE DB = DATABASE() AND ID <> CONNECTION_ID()
    """,
}
# A test thread's session that Django closed a moment ago (between Hypothesis
# examples, say) may linger while its backend exits: it is not the server's.
_NOT_A_TEST_THREAD = {"postgresql": "AND application_name NOT LIKE '%:test'"}


def _count_others(condition: str = "") -> int:
    with connection.cursor() as cursor:
        cursor.execute(_OTHER_SESSIONS[connection.vendor] + condition)
        (others,) = cursor.fetchone()
    return int(others)


def reported_by_server() -> bool:
    """Whether the database server itself can count the test database's sessions."""
    return connection.vendor in _OTHER_SESSIONS


def pooled() -> bool:
    """Whether the default alias uses Django's psycopg pool."""
    return pool_max_size("default") is not None


def shared_connection() -> bool:
    """Whether the live server shares the test thread's connection (in-memory SQLite),
    and so serves one request at a time."""
    return connection.vendor == "sqlite" and bool(
        connection.is_in_memory_db()  # type: ignore[attr-defined]
    )


def total_sessions() -> int:
    """Every session on the test database, the test thread's own included."""
    if reported_by_server():
        return _count_others() + 1
    return len(registry.holders("default"))


def server_sessions() -> int:
    """Sessions the live server's workers hold right now."""
    if reported_by_server() and not pooled():
        return _count_others(_NOT_A_TEST_THREAD.get(connection.vendor, ""))
    return sum(1 for h in registry.holders("default") if h.role == SERVER_WORKER)


def settled_server_sessions(grace: float = 2.0) -> int:
    """Server sessions once closed ones are gone from the database's own list.

    A closed session's backend (MariaDB's thread) ends a few milliseconds after
    the client closed it; django-safelive counts a worker's until then, but
    does not wait for it at a reset.
    """
    wait_for(lambda: server_sessions() == 0, grace)
    return server_sessions()


def test_thread_backend() -> str | None:
    """How the database server names the test thread's session, if it can."""
    connection.ensure_connection()
    raw = connection.connection
    if connection.vendor == "postgresql":
        return f"PostgreSQL pid {raw.info.backend_pid}"
    if connection.vendor == "mysql":
        return f"MySQL processlist id {raw.thread_id()}"
    return None
