"""Who holds the slots of ``SERVER_BUDGET``, for the error and the progress
line of a process that waits for them (see ``server_budget``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django_safelive._core.holders import split_tag

# The first half of the two-int advisory lock key: "SAFE" in ASCII, as an int4.
KEY = 0x53414645

_HOLDERS = f"""
    SELECT a.pid, coalesce(a.client_hostname, host(a.client_addr), 'local socket'),
           a.application_name, count(*)
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {KEY}
      AND l.objsubid = 2 AND l.database = (
          SELECT oid FROM pg_database WHERE datname = current_database())
    GROUP BY a.pid, a.client_hostname, a.client_addr, a.application_name
    ORDER BY min(a.backend_start)
"""
# The tests the holders' sessions are running, from their application_name tags.
_TAGGED = """
    SELECT application_name FROM pg_stat_activity
    WHERE application_name LIKE '%safelive:%'
"""


def slot_holders(query: Callable[[str], list[tuple[Any, ...]]]) -> list[str]:
    """Who holds slots, as the server knows them (through `query`, on a
    coordinator's session): host, backend pid, the coordinator's
    application_name, slots, and the tests it runs."""
    tagged = [split_tag(str(name)) for (name,) in query(_TAGGED)]
    described = []
    for pid, host, name, slots in query(_HOLDERS):
        client = str(name).split(":", 1)[-1].split("@", 1)[0]
        tests = sorted(
            {test for test, tagger in filter(None, tagged) if str(tagger) == client}
            - {""}
        )
        running = f", running {', '.join(tests)}" if tests else ""
        described.append(
            f"host {host}, backend pid {pid}, {name!r}, {slots} slot(s){running}"
        )
    return described
