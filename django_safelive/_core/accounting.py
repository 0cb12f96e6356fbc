"""One live server's database sessions: who holds each, its budget, its peaks.

Each running server owns a ``ServerAccount``; ``_core.hooks`` routes every
session a thread opens to the account it belongs to. Nothing here is shared
between two servers.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from django_safelive._core import sessions
from django_safelive._core.exceptions import SessionBudgetExceeded
from django_safelive._core.exiting import ExitingSessions
from django_safelive._core.holders import (
    HISTORY,
    SERVER_WORKER,
    TEST_THREAD,
    Holder,
    new_tag,
    opening_stack,
    short_test_id,
)
from django_safelive._core.summary import TestSessions

# PostgreSQL keeps at most NAMEDATALEN - 1 bytes of application_name.
_APPLICATION_NAME_MAX = 63
_tests_begun = iter(range(1, 1 << 62))


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
        # they count against the budget until seen gone.
        self._exiting = ExitingSessions()

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
                if may_wait and self._exiting.on(alias):
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
        self._exiting.reap()
        return self._count(alias)

    def wait_for_room(self, alias: str, timeout: float) -> None:
        """Wait up to `timeout` until one of the sessions on `alias` whose
        backends are exiting has gone, if any is (see ``open``). Holds no lock
        while it waits: other threads go on closing and counting."""
        with self._lock:
            watched = self._exiting.copies_on(alias)
        try:
            if watched and timeout > 0:
                sessions.wait_readable(watched, timeout)
        finally:
            sessions.forget(watched)

    def _count(self, alias: str) -> int:
        return sum(1 for h in self._holders.values() if h.alias == alias) + len(
            self._exiting.on(alias)
        )

    def exiting(self, alias: str | None = None) -> list[Holder]:
        """Closed sessions whose backends may still be exiting, oldest first."""
        with self._lock:
            return self._exiting.holders(alias)

    def settle_exits(self, timeout: float = sessions.EXIT_WAIT) -> None:
        """Wait up to `timeout` for every exiting session's backend to be gone;
        those still there then are counted as unconfirmed (see
        ``may_have_left_sessions``) and no longer watched."""
        with self._lock:
            if not self._exiting:
                return
            self._exiting.reap(timeout)
            self._unconfirmed += self._exiting.give_up()

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
                self._exiting.add(exiting, holder)
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
        for holder in [*self._holders.values(), *self._exiting]:
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
