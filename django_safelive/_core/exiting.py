"""The closed sessions of one server whose backends PostgreSQL may still count.

A worker closing its session between tests or examples does not wait for its
backend to exit (see ``ServerAccount.close``): the session goes on counting
against the budget, watched on a socket of its own, until that socket shows
the backend gone. ``ExitingSessions`` keeps those sockets and their holders;
its owner's lock guards every call but ``wait_for_room``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from django_safelive._core import sessions

if TYPE_CHECKING:
    from django_safelive._core.holders import Holder


class ExitingSessions:
    """Closed sessions, each with the socket its backend's exit is watched on
    (from ``sessions.watch_exit``), until that exit is seen."""

    def __init__(self) -> None:
        self._watched: dict[int, Holder] = {}

    def __bool__(self) -> bool:
        return bool(self._watched)

    def __iter__(self) -> Iterator[Holder]:
        return iter(list(self._watched.values()))

    def add(self, fd: int, holder: Holder) -> None:
        """Count `holder`'s closed session until the backend behind `fd` exits."""
        holder.exiting = True
        self._watched[fd] = holder

    def on(self, alias: str) -> list[int]:
        """The watched sockets of the sessions on `alias`."""
        return [fd for fd, holder in self._watched.items() if holder.alias == alias]

    def reap(self, timeout: float = 0) -> None:
        """Forget the sessions whose backends are gone, waiting up to `timeout`
        for all of them."""
        if not self._watched:
            return
        left = sessions.wait_exits(self._watched, timeout)
        for fd in [fd for fd in self._watched if fd not in left]:
            self._watched.pop(fd).exiting = False

    def holders(self, alias: str | None = None) -> list[Holder]:
        """The sessions still exiting (seen without waiting), oldest first."""
        self.reap()
        found = [h for h in self._watched.values() if alias in (None, h.alias)]
        return sorted(found, key=lambda holder: holder.opened_at)

    def give_up(self) -> int:
        """Stop watching every session, exited or not; how many were left."""
        left = len(self._watched)
        sessions.forget(self._watched)
        for holder in self._watched.values():
            holder.exiting = False
        self._watched.clear()
        return left

    def copies_on(self, alias: str) -> list[int]:
        """Duplicates of the watched sockets on `alias`, for a caller that
        waits on them without the lock (another thread may close the
        originals meanwhile); ``sessions.forget`` them after."""
        return [os.dup(fd) for fd in self.on(alias)]
