"""Assert how many database sessions a block of test code may hold at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

from django_safelive._core.exceptions import SafeLiveError
from django_safelive._core.holders import SessionWindow
from django_safelive._core.hooks import registry


@contextmanager
def max_sessions(
    n: int, alias: str = "default", *, failure: type[BaseException] = AssertionError
) -> Iterator[SessionWindow]:
    """Fail if more than `n` sessions are open at once on `alias` in the block.

    Every session of the test process counts: the test thread's, the server
    workers' and those of threads the code starts, including sessions opened
    before the block and still open in it. On failure the error lists the
    sessions open at the peak. Works while a django-safelive test case or the
    ``safe_live_server`` fixture is active.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"max_sessions() needs a whole number >= 0, got {n!r}.")
    if alias not in connections:
        raise ValueError(
            f"max_sessions() was given the alias {alias!r}, which is not in "
            f"DATABASES: {', '.join(map(repr, connections))}."
        )
    if not registry.accounts:
        raise SafeLiveError(
            "max_sessions() counts sessions only while a django-safelive test "
            "case or the safe_live_server fixture is active."
        )
    with registry.window(alias) as window:
        yield window
    if window.peak > n:
        listing = "\n".join(
            f"  - {holder.describe(window.peak_at)}" for holder in window.at_peak
        )
        raise failure(
            f"{window.peak} database sessions were open at once on alias "
            f"{alias!r}, more than the {n} expected. At the peak:\n{listing}"
        )
