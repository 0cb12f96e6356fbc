"""The errors django-safelive raises."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_safelive._budget import Holder


class SafeLiveError(Exception):
    """Base class of every django-safelive error."""


def _listing(holders: Sequence[Holder]) -> str:
    if not holders:
        return "  (none)"
    return "\n".join(f"  - {holder.describe()}" for holder in holders)


class SessionBudgetExceeded(SafeLiveError):
    """A thread tried to open a database session beyond the configured budget."""

    def __init__(
        self, *, alias: str, budget: int, holders: Sequence[Holder], requester: str
    ) -> None:
        self.alias = alias
        self.budget = budget
        self.holders = list(holders)
        self.requester = requester
        super().__init__(
            f"django-safelive refused a new database session on alias {alias!r}: "
            f"the {requester} would be session {len(holders) + 1} of a budget of "
            f"{budget}.\nSessions open on {alias!r}:\n{_listing(holders)}\n"
            "Close connections the code opens outside the request/response cycle "
            "(threads the view starts, say), or raise the budget with "
            "SAFELIVE['MAX_CONNECTIONS'], the class attribute max_connections or "
            "the environment variable SAFELIVE_MAX_CONNECTIONS."
        )


class RequestStuck(SafeLiveError):
    """Requests were still running when the live server had to be idle."""

    def __init__(self, *, timeout: float, requests: Sequence[str], when: str) -> None:
        self.timeout = timeout
        self.requests = list(requests)
        listing = "\n".join(f"  - {request}" for request in requests)
        super().__init__(
            f"The live server was still serving {len(requests)} request(s) "
            f"{timeout:g}s after {when}:\n{listing}\n"
            "A view is hung or very slow. Fix the view, or raise the wait with "
            "SAFELIVE['DRAIN_TIMEOUT'], the class attribute drain_timeout or the "
            "environment variable SAFELIVE_DRAIN_TIMEOUT."
        )


class SessionsLeftBehind(SafeLiveError):
    """Server sessions were still open in the database after the server stopped."""

    def __init__(
        self, *, alias: str, sessions: Sequence[str], terminated: bool
    ) -> None:
        self.alias = alias
        self.sessions = list(sessions)
        listing = "\n".join(f"  - {session}" for session in sessions)
        action = (
            "They were terminated so that the test database can still be flushed "
            "and dropped."
            if terminated
            else "They could not be terminated."
        )
        super().__init__(
            f"The live server left {len(sessions)} database session(s) open on "
            f"alias {alias!r} after it stopped:\n{listing}\n{action}"
        )
