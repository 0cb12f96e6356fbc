"""Checks that need the database server, run as a live server starts.

Configuration (``config``) never touches the database; these do, through a
short-lived session on the maintenance database, as Django does to create the
test database (the configured NAME may not exist yet, and a check must not
open a session on a real database).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from django_safelive._core.config import (
    Config,
    process_count,
    split_across,
)
from django_safelive._core.psycopg_pools import pool_max_size

# PostgreSQL keeps superuser_reserved_connections (and, from 16,
# reserved_connections) of its max_connections for privileged roles.
SERVER_SLOTS = """
    SELECT current_setting('max_connections')::int,
           current_setting('superuser_reserved_connections')::int
           + coalesce(current_setting('reserved_connections', true)::int, 0)
"""


@dataclass(frozen=True)
class ServerSlots:
    """How many sessions a PostgreSQL server accepts from an ordinary role."""

    max_connections: int
    reserved: int
    """Slots kept for superusers (and, from 16, reserved_connections)."""

    @property
    def available(self) -> int:
        """The sessions an ordinary role may open."""
        return self.max_connections - self.reserved

    @classmethod
    def read(cls, cursor: Any) -> ServerSlots:
        """The server's slots, read through `cursor` (any DB-API cursor)."""
        cursor.execute(SERVER_SLOTS)
        max_connections, reserved = cursor.fetchone()
        return cls(max_connections, reserved)


def check_databases(config: Config, aliases: list[str]) -> None:
    """Refuse database settings that cannot work within `config`, at start-up.

    A psycopg pool smaller than the workers plus the test thread would make
    workers wait on the pool instead of the budget refusing them. (One larger
    than the budget is shrunk while the server runs: see ``fit_pools``.) A
    budget PostgreSQL cannot give would fail mid-run with "too many clients
    already" instead of the budget's own error.
    """
    needed = config.workers + 1
    for alias in aliases:
        max_size = pool_max_size(alias)
        if max_size is not None and max_size < needed:
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}]['OPTIONS']['pool'] allows up to {max_size} "
                f"sessions (max_size), fewer than the {needed} the live server "
                f"needs ({config.workers} worker(s) plus the test thread). Set "
                f"max_size to at least {needed}, or lower WORKERS."
            )
        _check_server_slots(config, alias)


def _check_server_slots(config: Config, alias: str) -> None:
    """Refuse a budget larger than the sessions the PostgreSQL server allows."""
    if connections[alias].vendor != "postgresql":
        return
    with connections[alias]._nodb_cursor() as cursor:
        slots = ServerSlots.read(cursor)
    available = slots.available
    processes = process_count()
    wanted = config.max_sessions * processes
    if wanted <= available:
        return
    if processes > 1:
        across, fewer = split_across(processes, plural="s")
        asked = (
            f"{config.max_sessions} database session(s) per alias in each of "
            f"{across}, {wanted} in all,"
        )
        change = (
            f"Lower TOTAL_MAX_SESSIONS (or MAX_SESSIONS) so that the run needs "
            f"at most {available}, {fewer}"
        )
    else:
        asked = f"{config.max_sessions} database session(s) per alias"
        change = f"Lower MAX_SESSIONS to {available} or less"
    raise ImproperlyConfigured(
        f"The django-safelive budget of {asked} is more than the PostgreSQL server "
        f"of DATABASES[{alias!r}] accepts: max_connections = {slots.max_connections}, "
        f"minus {slots.reserved} slot(s) reserved for superusers "
        f"(superuser_reserved_connections, reserved_connections), leaves "
        f"{available}. {change}, or raise max_connections in postgresql.conf."
    )
