"""Django's flush, truncating only the tables that have rows.

``TransactionTestCase`` ends every test (and Hypothesis every example) with
Django's ``flush`` command: one ``TRUNCATE`` of every table of every installed
app. PostgreSQL truncates table by table (each gets new files and catalog
entries), so on a project with forty tables the flush takes a few hundred
milliseconds even when the test wrote to two of them.

By the time the flush runs the live server is drained and its sessions are
closed, so the test thread sees every row there is: a table with none needs no
``TRUNCATE``. Django's flush runs as it is; only the list of tables it hands to
``connection.ops.sql_flush`` is narrowed to those with rows, those with row
security (whose rows the test thread may not see), and every table with a
foreign key to one of them (PostgreSQL refuses to truncate a table without the
tables that refer to it). If anything about the catalog cannot be read, the
whole list is kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

# Every foreign key between tables on the search path, every such table with
# row security, and every such table (a name Django gives that is not among
# them is kept: a schema-qualified db_table, say).
_CATALOG = """
    SELECT 'fk', r.relname, f.relname
    FROM pg_constraint c
    JOIN pg_class r ON r.oid = c.conrelid
    JOIN pg_class f ON f.oid = c.confrelid
    WHERE c.contype = 'f'
      AND pg_table_is_visible(r.oid) AND pg_table_is_visible(f.oid)
    UNION ALL
    SELECT CASE WHEN relrowsecurity THEN 'rls' ELSE 'table' END, relname, NULL
    FROM pg_class
    WHERE relkind IN ('r', 'p') AND pg_table_is_visible(oid)
"""


@contextmanager
def only_tables_with_rows(aliases: Iterable[str]) -> Iterator[None]:
    """While the block runs, a flush of a PostgreSQL alias of `aliases` (on
    the calling thread's connections) truncates only the tables it must."""
    patched = []
    for alias in aliases:
        connection = connections[alias]
        if connection.vendor != "postgresql" or "sql_flush" in vars(connection.ops):
            continue
        vars(connection.ops)["sql_flush"] = _narrowed(connection)
        patched.append(connection.ops)
    try:
        yield
    finally:
        for ops in patched:
            vars(ops).pop("sql_flush", None)


def _narrowed(connection: BaseDatabaseWrapper) -> Any:
    original = type(connection.ops).sql_flush

    def sql_flush(
        style: Any,
        tables: Sequence[str],
        *,
        reset_sequences: bool = False,
        allow_cascade: bool = False,
    ) -> list[str]:
        # Resetting sequences: an empty table's may have moved, keep them all.
        if tables and not reset_sequences:
            tables = tables_to_truncate(connection, tables)
        return original(
            connection.ops,
            style,
            tables,
            reset_sequences=reset_sequences,
            allow_cascade=allow_cascade,
        )

    return sql_flush


def tables_to_truncate(
    connection: BaseDatabaseWrapper, tables: Sequence[str]
) -> list[str]:
    """Of `tables`, in their order: those with rows or row security, and every
    one with a foreign key to a table kept (all of them if the catalog cannot
    be read)."""
    quote = connection.ops.quote_name
    rows = " UNION ALL ".join(
        f"SELECT 'rows', %s, NULL WHERE EXISTS (SELECT 1 FROM {quote(table)})"
        for table in tables
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"{_CATALOG} UNION ALL {rows}", list(tables))
            found = cursor.fetchall()
    except DatabaseError:
        return list(tables)
    known: set[str] = set()
    keep: set[str] = set()
    referring: defaultdict[str, set[str]] = defaultdict(set)
    for kind, name, referenced in found:
        if kind == "fk":
            referring[referenced].add(name)
        else:
            known.add(name)
            if kind in ("rows", "rls"):
                keep.add(name)
    wanted = set(tables)
    keep = (keep & wanted) | (wanted - known)
    todo = list(keep)
    while todo:
        for name in referring[todo.pop()] & wanted:
            if name not in keep:
                keep.add(name)
                todo.append(name)
    return [table for table in tables if table in keep]
