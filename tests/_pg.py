"""Read sessions from pg_stat_activity, the ground truth these tests assert on."""

from __future__ import annotations

from django.db import connection


def sessions(application_name_like: str = "%") -> list[tuple[int, str, str]]:
    """(pid, application_name, state) of the other sessions on the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT pid, application_name, coalesce(state, '')
            FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND backend_type = 'client backend' AND application_name LIKE %s
            """,
            [application_name_like],
        )
        return list(cursor.fetchall())


def server_sessions() -> list[tuple[int, str, str]]:
    """Every other session on the test database but a test thread's.

    A test thread's session that Django closed a moment ago (between Hypothesis
    examples, say) may linger while its backend exits; it is not the server's.
    """
    return [row for row in sessions() if not row[1].endswith(":test")]


def worker_sessions() -> list[tuple[int, str, str]]:
    """The live server workers' sessions on the test database."""
    return sessions("%safelive:%:worker")


def worker_pids() -> set[int]:
    """The backend pids of the live server workers' sessions."""
    return {pid for pid, _, _ in worker_sessions()}
