"""The errors django-safelive raises."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_safelive._core.holders import Holder


# Python 3.11+ prints an exception's notes after its message.
_PRINTS_NOTES = hasattr(BaseException, "add_note")


class SafeLiveError(Exception):
    """Base class of every django-safelive error."""

    def also(self, other: BaseException) -> None:
        """Mention `other`, raised at the same time, so that it is not lost:
        as a note where Python prints notes, else in the message."""
        note = f"Also: {other}"
        if _PRINTS_NOTES:
            self.add_note(note)
        else:
            self.__notes__ = [*getattr(self, "__notes__", []), note]

    def __str__(self) -> str:
        message = super().__str__()
        if _PRINTS_NOTES:
            return message
        return "\n".join([message, *getattr(self, "__notes__", [])])


def _listing(holders: Sequence[Holder], *, aliases: bool = False) -> str:
    if not holders:
        return "  (none)"
    return "\n".join(
        f"  - {f'{holder.alias!r}: ' if aliases else ''}{holder.describe()}"
        for holder in holders
    )


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
            "SAFELIVE['MAX_SESSIONS'], the class attribute max_sessions or "
            "the environment variable SAFELIVE_MAX_SESSIONS."
        )


class RequestStuck(SafeLiveError):
    """Requests were still running when the live server had to be idle."""

    def __init__(
        self,
        *,
        timeout: float,
        requests: Sequence[str],
        when: str,
        holders: Sequence[Holder] = (),
    ) -> None:
        self.timeout = timeout
        self.requests = list(requests)
        self.when = when
        self.holders = list(holders)
        listing = "\n".join(f"  - {request}" for request in requests)
        sessions = (
            f"Database sessions open at that moment:\n"
            f"{_listing(holders, aliases=True)}\n"
            if holders
            else ""
        )
        super().__init__(
            f"The live server was still serving {len(requests)} request(s) "
            f"{timeout:g}s after {when}:\n{listing}\n{sessions}"
            "A view is hung or very slow. Fix the view, or raise the wait with "
            "SAFELIVE['DRAIN_TIMEOUT'], the class attribute drain_timeout or the "
            "environment variable SAFELIVE_DRAIN_TIMEOUT."
        )


class WorkersDidNotExit(RequestStuck):
    """Live-server workers were still alive when the server had stopped: a
    ``RequestStuck`` whose ``requests`` say what each worker was doing."""

    def __init__(self, *, timeout: float, workers: Sequence[str], when: str) -> None:
        self.timeout = timeout
        self.requests = list(workers)
        self.when = when
        self.holders = []
        listing = "\n".join(f"  - {worker}" for worker in workers)
        SafeLiveError.__init__(
            self,
            f"{len(workers)} live-server worker(s) had not exited {timeout:g}s "
            f"after {when}:\n{listing}\nA view is still running, or waits on "
            "something other than the database (a lock, a queue, a socket).",
        )


class SessionsLeftBehind(SafeLiveError):
    """Server sessions were still open in the database at a reset between
    tests (or examples) or after the server stopped."""

    def __init__(
        self,
        *,
        alias: str,
        sessions: Sequence[str],
        terminated: bool,
        holders: Sequence[Holder] = (),
    ) -> None:
        self.alias = alias
        self.sessions = list(sessions)
        self.holders = list(holders)
        listing = "\n".join(f"  - {session}" for session in sessions)
        action = (
            "They were terminated so that the test database can still be flushed "
            "and dropped."
            if terminated
            else "They could not be terminated."
        )
        counted = (
            f"\nSessions django-safelive still counted on {alias!r}:\n"
            f"{_listing(holders)}"
            if holders
            else ""
        )
        super().__init__(
            f"The live server left {len(sessions)} database session(s) open on "
            f"alias {alias!r}, when it should have had none:\n{listing}\n"
            f"{action}{counted}"
        )


class ServerBudgetExhausted(SafeLiveError):
    """A process waited longer than allowed for its slots of SERVER_BUDGET."""

    def __init__(
        self,
        *,
        server: str,
        budget: int,
        wanted: int,
        timeout: float,
        holders: Sequence[str],
    ) -> None:
        self.server = server
        self.budget = budget
        self.wanted = wanted
        self.holders = list(holders)
        listing = "\n".join(f"  - {holder}" for holder in holders) or "  (none)"
        super().__init__(
            f"django-safelive waited {timeout:g}s for {wanted} of the {budget} "
            f"session slots of SERVER_BUDGET on {server}, and they did not come "
            f"free. The processes holding slots, as the server knows them:\n"
            f"{listing}\nWait for them or stop them, raise SERVER_BUDGET (and the "
            "server's max_connections), lower MAX_SESSIONS or "
            "TOTAL_MAX_SESSIONS, or wait longer with SERVER_BUDGET_TIMEOUT "
            "(SAFELIVE['SERVER_BUDGET_TIMEOUT'] or the environment variable "
            "SAFELIVE_SERVER_BUDGET_TIMEOUT)."
        )


class SelfCallInSingleMode(SafeLiveError, ConnectionRefusedError):
    """A single-mode server's only worker tried to connect to the server itself.

    A ``ConnectionRefusedError``, so that HTTP clients close the socket they
    were connecting and report the refusal as they would any other.
    """

    def __init__(self, *, address: str, request: str | None) -> None:
        serving = f"while serving {request}" if request else "during a request"
        super().__init__(
            errno.ECONNREFUSED,
            f"django-safelive refused a connection from the live server's only "
            f"worker, {serving}, to the live server itself ({address}): with one "
            "worker that request would wait for the busy worker forever. Run the "
            "test in mode 'pool' with at least two workers (SAFELIVE['MODE'], the "
            "class attribute server_mode or the environment variable "
            "SAFELIVE_MODE; WORKERS and MAX_SESSIONS likewise), whose other "
            "workers can answer it, or call the code directly instead of over HTTP.",
        )


class ThreadDidNotStart(SafeLiveError):
    """A live-server thread died before it ran, every time it was started."""

    def __init__(self, *, name: str, attempts: int) -> None:
        self.name = name
        self.attempts = attempts
        again = f", {attempts} times in a row" if attempts > 1 else ""
        super().__init__(
            f"django-safelive's thread {name!r} died before it ran{again}; its "
            "error was reported as an exception in a thread. On Python 3.10 "
            "and 3.11 under a tracer (coverage, a debugger) that error is "
            '"Cannot install a trace function while another trace function is '
            'being installed" (CPython gh-98257): run on Python 3.12 or later, '
            "or without the tracer."
        )
