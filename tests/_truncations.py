"""The TRUNCATE statements a flush runs, as the test thread's connection sees
them (tests/test_flush.py and its pytest scenario)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection


@contextmanager
def truncations() -> Iterator[list[str]]:
    """The TRUNCATE statements the calling thread's connection runs while the
    block does."""
    found: list[str] = []

    def record(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("TRUNCATE"):
            found.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(record):
        yield found
