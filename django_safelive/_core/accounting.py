"""One live server's database sessions: who holds each, its budget, its peaks.

Each running server owns a ``ServerAccount``; ``_core.hooks`` routes every
session a thread opens to the account it belongs to. Nothing here is shared
between two servers.
"""

from __future__ import annotations

import os
import re
import textwrap
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import django

from django_safelive._core import sessions
from django_safelive._core.exceptions import SessionBudgetExceeded
from django_safelive._core.summary import TestSessions

TEST_THREAD = "test thread"
SERVER_WORKER = "server worker"
OTHER_THREAD = "other thread"

# PostgreSQL keeps at most NAMEDATALEN - 1 bytes of application_name.
_APPLICATION_NAME_MAX = 63
# Closed sessions kept for reports: enough to explain one test, bounded for a run.
HISTORY = 100
# Frames of an opening stack kept: the code that asked for the session and its callers.
TRACE_DEPTH = 8
# Frames inside these are how a session opens, not why: trimmed from the stack.
_MACHINERY = (
    os.path.dirname(django.__file__) + os.sep,
    os.path.dirname(os.path.dirname(__file__)) + os.sep,
)
_TAG = re.compile(r"safelive:(\d+)\.\d+:")
# A path segment that may be a secret (a password-reset or sign-in token, a
# UUID, a signed value): long, and mixing letters and digits.
_TOKEN_LIKE = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[^/]{16,}$")


@dataclass
class Holder:
    """One open database session and who opened it."""

    alias: str
    thread_name: str
    thread_ident: int
    role: str
    request: str | None
    opened_at: float = field(default_factory=time.monotonic)
    test: str | None = None
    stack: str | None = None
    """Where the session was opened, innermost last; only with TRACE on."""
    closed_at: float | None = None
    backend: str | None = None
    """How the database server knows the session: ``PostgreSQL pid 4242`` (see
    pg_stat_activity), ``MySQL processlist id 17``; None on SQLite."""
    pid: int | None = None
    """The PostgreSQL backend's pid, when the session is PostgreSQL's."""
    exiting: bool = False
    """Closed, and its backend not yet seen gone: PostgreSQL still counts it."""

    def describe(self, now: float | None = None) -> str:
        """A human-readable description of this holder, as of `now`: one line,
        followed by the opening stack when tracing recorded it."""
        now = time.monotonic() if now is None else now
        serving = f", opened while serving {self.request}" if self.request else ""
        if self.closed_at is None or self.closed_at > now:
            timing = f"open for {now - self.opened_at:.1f}s"
        else:
            timing = (
                f"opened {now - self.opened_at:.1f}s ago, closed after "
                f"{self.closed_at - self.opened_at:.1f}s"
            )
        if self.exiting:
            timing += ", its backend still exiting"
        backend = f", {self.backend}" if self.backend else ""
        line = f"{self.role} {self.thread_name!r}{serving}, {timing}{backend}"
        if self.stack:
            line += "\n    opened at:\n" + textwrap.indent(self.stack, "    ")
        return line.rstrip("\n")


class _ThreadInfo(threading.local):
    account: ServerAccount | None = None
    """The server whose sessions the thread opens (its workers')."""
    role: str | None = None
    request: str | None = None


thread_info = _ThreadInfo()


def bind_thread(account: ServerAccount, role: str) -> None:
    """Count the calling thread's sessions (a server worker's, say) against
    `account`, in `role`."""
    thread_info.account = account
    thread_info.role = role


def set_current_request(request: str | None) -> None:
    """Record the request the calling thread is serving, or None when done."""
    thread_info.request = request


def describe_request(method: str, path: str) -> str:
    """How reports name a request: its method and path, without the query
    string, and with path segments that may be tokens replaced."""
    segments = [
        "<redacted>" if _TOKEN_LIKE.match(segment) else segment
        for segment in path.split("/")
    ]
    return f"{method} {'/'.join(segments)}"


def current_request() -> str | None:
    """The request the calling thread is serving, if any."""
    return thread_info.request


def opening_stack() -> str:
    """The calling code's stack, without the Django and django-safelive frames
    that merely open the session."""
    frames = traceback.extract_stack()
    end = len(frames)
    while end > 0 and frames[end - 1].filename.startswith(_MACHINERY):
        end -= 1
    if end == 0:  # opened by Django itself (a flush, say): show its frames
        end = len(frames)
    return "".join(traceback.format_list(frames[max(0, end - TRACE_DEPTH) : end]))


def short_test_id(test_id: str) -> str:
    """``ShopTests.test_items`` for a unittest id, the node id without its file
    for pytest: what fits in application_name and still says which test."""
    if "::" in test_id:
        return test_id.split("::", 1)[1]
    return ".".join(test_id.rsplit(".", 2)[-2:])


_counter = iter(range(1, 1 << 62))
_tests_begun = iter(range(1, 1 << 62))


def new_tag() -> str:
    """A tag unique to one live server in this process, for application_name."""
    return f"safelive:{os.getpid()}.{next(_counter)}"


def split_tag(application_name: str) -> tuple[str, int] | None:
    """What precedes the tag in a tagged `application_name` (the application's
    own name and the test), and the pid of the process whose server tagged it;
    None for a session no django-safelive server opened."""
    found = _TAG.search(application_name)
    if found is None:
        return None
    return application_name[: found.start()].strip(), int(found.group(1))


class SessionWindow:
    """The sessions open at once on one alias while a block of code runs."""

    def __init__(self, alias: str, holders: list[Holder]) -> None:
        self.alias = alias
        self.peak = len(holders)
        self.peak_at = time.monotonic()
        self.at_peak = holders
        """The sessions open when the most were, oldest first."""
        self.opened: deque[Holder] = deque(maxlen=HISTORY)
        """Sessions opened during the block (the last HISTORY), open or closed."""

    def saw(self, holder: Holder, holders: list[Holder]) -> None:
        """`holder` just opened; `holders` are the sessions open now."""
        self.opened.append(holder)
        if len(holders) > self.peak:
            self.peak = len(holders)
            self.peak_at = time.monotonic()
            self.at_peak = holders


class ServerAccount:
    """One live server's sessions on every alias, and the budget it enforces.

    Counts the server's workers' sessions, the sessions of the test thread that
    runs its tests, and those of threads its views start.
    """

    def __init__(self, budget: int, tag: str | None = None, *, trace: bool = False):
        self.budget = budget
        self.tag = tag or new_tag()
        self.trace = trace
        self.test_thread: int | None = None
        """The thread that runs the server's tests, set when it is activated."""
        self._lock = threading.RLock()
        self._holders: dict[int, Holder] = {}
        self.violations: list[SessionBudgetExceeded] = []
        """Refusals not yet reported (raised in a worker, say)."""
        self.history: deque[Holder] = deque(maxlen=HISTORY)
        """The last HISTORY sessions closed, oldest first."""
        self.peaks: dict[str, int] = {}
        """The most sessions open at once per alias, since the test began."""
        self.test: str | None = None
        self.test_order = 0
        """Which test began last on two accounts: the higher began later."""
        self._overruns: list[str] = []
        # Sessions of other threads than the test's closed since the last
        # reset without their backend's exit seen.
        self._unconfirmed = 0
        # Workers' sessions closed whose backends PostgreSQL may still count:
        # the socket each is watched on (from sessions.watch_exit), and who
        # held it. They count against the budget until seen gone.
        self._exiting: dict[int, Holder] = {}

    def __repr__(self) -> str:
        return f"<ServerAccount {self.tag} budget={self.budget}>"

    def holders(self, alias: str | None = None) -> list[Holder]:
        """The open sessions, oldest first, optionally for one alias."""
        with self._lock:
            found = [h for h in self._holders.values() if alias in (None, h.alias)]
        return sorted(found, key=lambda holder: holder.opened_at)

    def holds(self, key: int) -> bool:
        """Whether the connection with id `key` has a session counted here."""
        return key in self._holders

    # -- opening and closing ------------------------------------------------
    def open(
        self,
        key: int,
        alias: str,
        role: str,
        request: str | None,
        *,
        trace: bool,
        may_wait: bool = False,
    ) -> Holder | None:
        """Count a session about to open on `alias`, or refuse it. With
        `may_wait`, None instead of a refusal when sessions whose backends are
        exiting fill the budget: the caller waits for them (``wait_for_room``)
        and asks again."""
        thread = threading.current_thread()
        with self._lock:
            count = self._counted(alias)
            if count >= self.budget:
                if may_wait and self._exiting_on(alias):
                    return None
                self._refuse(alias, role, thread.name, request)
            holder = Holder(
                alias=alias,
                thread_name=thread.name,
                thread_ident=thread.ident or 0,
                role=role,
                request=request,
                test=self.test,
                stack=opening_stack() if trace and self.trace else None,
            )
            self._holders[key] = holder
            self.peaks[alias] = max(self.peaks.get(alias, 0), count + 1)
        return holder

    def _counted(self, alias: str) -> int:
        """The sessions on `alias` PostgreSQL may count: the open ones, and the
        closed ones whose backends have not been seen to exit."""
        if self._exiting:
            self._reap(0)
        return self._count(alias)

    def wait_for_room(self, alias: str, timeout: float) -> None:
        """Wait up to `timeout` until one of the sessions on `alias` whose
        backends are exiting has gone, if any is (see ``open``). Holds no lock
        while it waits: other threads go on closing and counting."""
        with self._lock:
            # Copies: another thread may stop watching the originals.
            watched = [os.dup(fd) for fd in self._exiting_on(alias)]
        try:
            if watched and timeout > 0:
                sessions.wait_readable(watched, timeout)
        finally:
            sessions.forget(watched)

    def _count(self, alias: str) -> int:
        return sum(1 for h in self._holders.values() if h.alias == alias) + len(
            self._exiting_on(alias)
        )

    def _exiting_on(self, alias: str) -> list[int]:
        return [fd for fd, h in self._exiting.items() if h.alias == alias]

    def _reap(self, timeout: float) -> None:
        """Forget the exiting sessions whose backends are gone, waiting up to
        `timeout` for all of them."""
        left = sessions.wait_exits(self._exiting, timeout)
        for fd in [fd for fd in self._exiting if fd not in left]:
            self._exiting.pop(fd).exiting = False

    def exiting(self, alias: str | None = None) -> list[Holder]:
        """Closed sessions whose backends may still be exiting, oldest first."""
        with self._lock:
            if self._exiting:
                self._reap(0)
            found = [h for h in self._exiting.values() if alias in (None, h.alias)]
        return sorted(found, key=lambda holder: holder.opened_at)

    def settle_exits(self, timeout: float = sessions.EXIT_WAIT) -> None:
        """Wait up to `timeout` for every exiting session's backend to be gone;
        those still there then are counted as unconfirmed (see
        ``may_have_left_sessions``) and no longer watched."""
        with self._lock:
            if not self._exiting:
                return
            self._reap(timeout)
            self._unconfirmed += len(self._exiting)
            sessions.forget(self._exiting)
            for holder in self._exiting.values():
                holder.exiting = False
            self._exiting.clear()

    def _refuse(
        self, alias: str, role: str, thread_name: str, request: str | None
    ) -> None:
        error = SessionBudgetExceeded(
            alias=alias,
            budget=self.budget,
            holders=self.holders(alias) + self.exiting(alias),
            requester=f"{role} {thread_name!r}"
            + (f" serving {request}" if request else ""),
        )
        self.violations.append(error)
        self._overruns.append(
            f"{error.requester} refused on {alias!r} (budget {self.budget})"
        )
        raise error

    def adopt(self, key: int, holder: Holder) -> None:
        """Count an open session another account (or none) counted until now:
        the test thread's, when this server starts or another one stops."""
        with self._lock:
            self._holders[key] = holder
            count = self._count(holder.alias)
            self.peaks[holder.alias] = max(self.peaks.get(holder.alias, 0), count)

    def hand_over(self, key: int) -> Holder | None:
        """Stop counting the still open session of connection `key`."""
        with self._lock:
            return self._holders.pop(key, None)

    def defers_exit(self, key: int) -> bool:
        """Whether the session of connection `key`, closing, may count on
        until its backend exits rather than be waited for: a worker's, whose
        close between tests or examples need not wait. Any other is waited
        for, so that nothing the test thread does next (dropping the test
        database, say) meets a backend still exiting."""
        holder = self._holders.get(key)
        return holder is not None and holder.role == SERVER_WORKER

    def close(self, key: int, *, confirmed: bool, exiting: int | None = None) -> None:
        """The session of connection `key` closed; `confirmed` when its
        backend's exit was seen (or there is none to wait for). `exiting`: a
        socket to watch for that exit (see ``sessions.watch_exit``); the
        session counts until then."""
        with self._lock:
            holder = self._holders.pop(key, None)
            if holder is None:
                if exiting is not None:
                    sessions.forget([exiting])
                return
            holder.closed_at = time.monotonic()
            self.history.append(holder)
            if exiting is not None:
                holder.exiting = True
                self._exiting[exiting] = holder
            elif not confirmed and holder.role != TEST_THREAD:
                self._unconfirmed += 1

    # -- per test ------------------------------------------------------------
    def begin_test(self, test: str) -> None:
        """Name the running test, and count its peak from the sessions open now."""
        with self._lock:
            self.test = test
            self.test_order = next(_tests_begun)
            self._restart_count()

    def take_test_sessions(self) -> TestSessions:
        """What the test used since it began (or since the last call: one
        Hypothesis example), then count afresh."""
        with self._lock:
            entry = TestSessions(
                test=self.test or "(unknown test)",
                budget=self.budget,
                peaks=dict(self.peaks),
                overruns=list(self._overruns),
            )
            self._restart_count()
        return entry

    def end_test(self) -> None:
        """No test runs any more; sessions opened now belong to none."""
        with self._lock:
            self.test = None

    def _restart_count(self) -> None:
        self._overruns = []
        self.peaks = {}
        for holder in [*self._holders.values(), *self._exiting.values()]:
            self.peaks[holder.alias] = self.peaks.get(holder.alias, 0) + 1

    def may_have_left_sessions(self) -> bool:
        """Whether PostgreSQL may still list sessions of this server: one of
        another thread than the test's still open, or one closed since the last
        call without its backend's exit confirmed (a collected connection, a
        wait that timed out). Otherwise every session went through this
        account and is gone."""
        with self._lock:
            unconfirmed, self._unconfirmed = self._unconfirmed, 0
            return bool(unconfirmed) or any(
                holder.role != TEST_THREAD for holder in self._holders.values()
            )

    def take_violations(self) -> list[SessionBudgetExceeded]:
        """Refusals recorded since the last call."""
        with self._lock:
            violations, self.violations = self.violations, []
        return violations

    def application_name(self, holder: Holder, current: str | None) -> str:
        """The application_name that tells `holder`'s session apart in
        pg_stat_activity: whatever the settings give, the test, then the tag
        and role, where the server and `watch` look for them."""
        label = {TEST_THREAD: "test", SERVER_WORKER: "worker"}.get(holder.role, "other")
        parts = [current, short_test_id(self.test) if self.test else None]
        parts.append(f"{self.tag}:{label}")
        name = " ".join(part for part in parts if part)
        # Printable ASCII only, so PostgreSQL neither escapes nor lengthens it;
        # whatever does not fit is cut from the start.
        name = "".join(char if " " <= char <= "~" else "?" for char in name)
        return name[-_APPLICATION_NAME_MAX:]
