"""Sampling pg_stat_activity from one session, in a thread, into a Timeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django_safelive._tools.messages import one_line
from django_safelive._tools.watch.target import APPLICATION_NAME

# Every watch's own session is left out, not only this one's: another watch
# running, or one that just closed its session, is tooling, not the command.
_SAMPLE = """
    SELECT coalesce(datname, ''), coalesce(application_name, ''),
           coalesce(state, ''), count(*)
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
      AND application_name IS DISTINCT FROM %s
    GROUP BY 1, 2, 3
"""


class Row(NamedTuple):
    """Sessions sharing a database, an application_name and a state."""

    datname: str
    application_name: str
    state: str
    sessions: int


@dataclass(frozen=True)
class Sample:
    """What pg_stat_activity showed `at` seconds after the command started."""

    at: float
    rows: tuple[Row, ...]

    @property
    def total(self) -> int:
        """Client sessions at that moment, ours excluded."""
        return sum(row.sessions for row in self.rows)


@dataclass
class Timeline:
    """Every sample of one run, and what the run was measured against."""

    max_connections: int
    interval: float
    samples: list[Sample] = field(default_factory=list)
    duration: float = 0.0
    # Why sampling stopped before the command ended (the server went away), if it did.
    error: str | None = None

    def peak(self) -> Sample | None:
        """The first sample with the most sessions."""
        return max(self.samples, key=lambda sample: sample.total, default=None)


class Sampler:
    """Sample pg_stat_activity from one session in a thread, into a Timeline."""

    def __init__(self, connection: Any, interval: float) -> None:
        self._connection = connection
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="django-safelive watch", daemon=True
        )
        self._started = 0.0
        with connection.cursor() as cursor:
            cursor.execute("SHOW max_connections")
            (max_connections,) = cursor.fetchone()
        self.timeline = Timeline(int(max_connections), interval)

    def _query(self) -> tuple[Row, ...]:
        with self._connection.cursor() as cursor:
            cursor.execute(_SAMPLE, [APPLICATION_NAME])
            return tuple(Row(*row) for row in cursor.fetchall())

    def _run(self) -> None:
        while True:
            try:
                rows = self._query()
            except Exception as error:
                self.timeline.error = one_line(error)
                return
            at = time.monotonic() - self._started
            self.timeline.samples.append(Sample(at, rows))
            if self._stop.wait(self.timeline.interval):
                return

    @contextmanager
    def running(self) -> Iterator[Timeline]:
        """Sample until the block exits, however it exits; then close the session."""
        self._started = time.monotonic()
        try:
            self._thread.start()
            yield self.timeline
        finally:
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
            self.timeline.duration = time.monotonic() - self._started
            self._connection.close()
