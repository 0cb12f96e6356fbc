"""Count a database's sessions in pg_stat_activity from an independent session."""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Any, TypeVar

try:
    import psycopg

    def _connect(host: str, port: int) -> Any:
        return psycopg.connect(
            host=host, port=port, user="postgres", dbname="postgres", autocommit=True
        )

except ImportError:  # pragma: no cover - the psycopg2-only environments
    import psycopg2

    def _connect(host: str, port: int) -> Any:
        conn = psycopg2.connect(
            host=host, port=port, user="postgres", dbname="postgres"
        )
        conn.autocommit = True
        return conn


# Where the tests' PostgreSQL is: tests/settings.py reads the same variables.
PGHOST = os.environ.get("PGHOST", "127.0.0.1")
PGPORT = int(os.environ.get("PGPORT", "5432"))


def connect(host: str = PGHOST, port: int = PGPORT) -> Any:
    """A raw driver connection to the server's postgres database, autocommit."""
    return _connect(host, port)


def count_sessions(conn: Any, datname: str, prefix: bool = False) -> int:
    """The sessions on `datname` (or every database it prefixes) right now."""
    condition = "starts_with(datname, %s)" if prefix else "datname = %s"
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE backend_type = 'client backend' AND {condition}",
            [datname],
        )
        row = cursor.fetchone()
    return int(row[0])


_S = TypeVar("_S", bound="Sampler")


class Sampler:
    """Poll pg_stat_activity every few milliseconds in a thread; keep the peak.

    Its own session is on the ``postgres`` database, so it never counts itself.
    """

    def __init__(
        self,
        datname: str,
        host: str = PGHOST,
        port: int = PGPORT,
        prefix: bool = False,
    ) -> None:
        self.datname = datname
        self.prefix = prefix
        self.peak = 0
        self.samples = 0
        self._conn = connect(host, port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample(self._conn)
            self.samples += 1
            time.sleep(0.005)

    def sample(self, conn: Any) -> None:
        """Take one sample on `conn` (a subclass may count something else)."""
        self.peak = max(self.peak, count_sessions(conn, self.datname, self.prefix))

    def __enter__(self: _S) -> _S:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()
