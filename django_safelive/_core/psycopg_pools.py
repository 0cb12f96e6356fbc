"""Django's psycopg connection pools (Django 5.1+): their sizes, and keeping
them within a live server's budget while it runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connections


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
    sizes = pool_sizes(connections.settings[alias])
    return None if sizes is None else sizes[1]


def fit_pools(aliases: Iterable[str], budget: int) -> None:
    """Shrink Django's psycopg pools (5.1+) to the budget while the server runs.

    A pool keeps up to ``max_size`` sessions open, idle or not; above the budget
    those would be sessions the budget never sees. The pool is closed when the
    server stops, and Django builds the next one from the settings again.
    """
    for alias in aliases:
        connection = connections[alias]
        max_size = pool_max_size(alias)
        if max_size is None or max_size <= budget:
            continue
        pool = connection.pool  # type: ignore[attr-defined]
        pool.resize(min(pool.min_size, budget), budget)


def close_pools(aliases: Iterable[str]) -> None:
    """Close Django's psycopg connection pools (5.1+), whose idle sessions would
    otherwise keep the test database from being dropped."""
    for alias in aliases:
        connection = connections[alias]
        if pool_max_size(alias) is not None:
            # Return the test thread's session first: closing it later would
            # make Django build a new pool just to put it back into.
            connection.close()
            connection.close_pool()  # type: ignore[attr-defined]
