"""Count every database session the test process opens and enforce the budget.

Django has no hook that runs *before* a database session is opened (the
``connection_created`` signal fires after), so while a django-safelive test is
active the ``get_new_connection`` and ``_close`` methods of each configured
backend's ``DatabaseWrapper`` class are wrapped. A session that would exceed the
budget is refused before the database ever sees it.

Each session is recorded as a ``Holder`` (alias, thread, role, the request being
served, the test, when it opened and closed, and with tracing on the stack that
opened it); the last closed ones are kept for reports.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import django
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_safelive._core.exceptions import SessionBudgetExceeded
from django_safelive._core.sessions import postgresql_backend, wait_exit, watch_exit
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
    os.path.dirname(__file__) + os.sep,
)


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
        backend = f", {self.backend}" if self.backend else ""
        line = f"{self.role} {self.thread_name!r}{serving}, {timing}{backend}"
        if self.stack:
            line += "\n    opened at:\n" + textwrap.indent(self.stack, "    ")
        return line.rstrip("\n")


class _ThreadInfo(threading.local):
    role: str | None = None
    request: str | None = None


_thread = _ThreadInfo()


def set_thread_role(role: str) -> None:
    """Mark the calling thread's role (a server worker, say) for accounting."""
    _thread.role = role


def set_current_request(request: str | None) -> None:
    """Record the request the calling thread is serving, or None when done."""
    _thread.request = request


def current_request() -> str | None:
    """The request the calling thread is serving, if any."""
    return _thread.request


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

    def _saw(self, holder: Holder, holders: list[Holder]) -> None:
        self.opened.append(holder)
        if len(holders) > self.peak:
            self.peak = len(holders)
            self.peak_at = time.monotonic()
            self.at_peak = holders


class SessionGuard:
    """Process-wide accounting of database sessions, with a per-alias budget."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._holders: dict[int, Holder] = {}
        self._finalizers: dict[int, weakref.finalize[Any, Any]] = {}
        # class -> the attributes we replaced, as found in the class's own __dict__
        self._originals: dict[type[BaseDatabaseWrapper], dict[str, Any]] = {}
        self._activations: list[_Activation] = []
        self.violations: list[SessionBudgetExceeded] = []
        self.history: deque[Holder] = deque(maxlen=HISTORY)
        """The last HISTORY sessions closed, oldest first."""
        self.peaks: dict[str, int] = {}
        """The most sessions open at once per alias, since the test began."""
        self.test: str | None = None
        self._overruns: list[str] = []
        self._windows: list[SessionWindow] = []

    # -- activation -------------------------------------------------------
    @property
    def active(self) -> _Activation | None:
        """The innermost activation, or None when no django-safelive test runs."""
        return self._activations[-1] if self._activations else None

    @contextmanager
    def activate(
        self, budget: int, tag: str, *, trace: bool = False
    ) -> Iterator[_Activation]:
        """Enforce `budget` sessions per alias until the block exits; with
        `trace`, record the stack that opens each session."""
        activation = _Activation(budget, tag, threading.get_ident(), trace)
        with self._lock:
            if not self._activations:
                self._install()
            self._activations.append(activation)
            self.peaks = {}
            self._adopt_test_thread_sessions()
        try:
            yield activation
        finally:
            with self._lock:
                self._activations.remove(activation)
                if not self._activations:
                    self._uninstall()
                    self._holders.clear()
                    self.violations.clear()
                    self.history.clear()
                    self.test = None

    def _install(self) -> None:
        for alias in connections:
            cls = type(connections[alias])
            if cls in self._originals:
                continue
            self._originals[cls] = {
                name: cls.__dict__[name] for name in _WRAPPERS if name in cls.__dict__
            }
            for name, wrap in _WRAPPERS.items():
                setattr(cls, name, wrap(self, getattr(cls, name)))

    def _uninstall(self) -> None:
        for cls, originals in self._originals.items():
            for name in _WRAPPERS:
                if name in originals:
                    setattr(cls, name, originals[name])
                else:
                    delattr(cls, name)
        self._originals.clear()

    def _adopt_test_thread_sessions(self) -> None:
        """Count the sessions the test thread opened before we were watching."""
        for wrapper in connections.all(initialized_only=True):
            if wrapper.connection is not None and id(wrapper) not in self._holders:
                # Opened before we watched: its stack is not known.
                holder = self._add(wrapper, TEST_THREAD, trace=False)
                holder.backend = backend_id(wrapper.vendor, wrapper.connection)

    # -- accounting ---------------------------------------------------------
    def role_of_current_thread(self) -> str:
        active = self.active
        if active is not None and threading.get_ident() == active.test_thread:
            return TEST_THREAD
        return _thread.role or OTHER_THREAD

    def holders(self, alias: str | None = None) -> list[Holder]:
        """The open sessions, oldest first, optionally for one alias."""
        with self._lock:
            found = [
                holder
                for holder in self._holders.values()
                if alias is None or holder.alias == alias
            ]
        return sorted(found, key=lambda holder: holder.opened_at)

    def count(self, alias: str) -> int:
        """How many sessions are open on `alias`."""
        return len(self.holders(alias))

    # -- per test -------------------------------------------------------------
    def begin_test(self, test: str) -> None:
        """Name the running test, and count its peak from the sessions open now."""
        with self._lock:
            self.test = test
            self._restart_count()

    def take_test_sessions(self) -> TestSessions:
        """What the test used since it began (or since the last call: one
        Hypothesis example), then count afresh."""
        with self._lock:
            active = self.active
            entry = TestSessions(
                test=self.test or "(unknown test)",
                budget=active.budget if active else 0,
                peaks=dict(self.peaks),
                overruns=list(self._overruns),
            )
            self._restart_count()
        return entry

    def may_have_left_sessions(self, tag: str) -> bool:
        """Whether the server tagged `tag` may have sessions PostgreSQL still
        lists: one of another thread than the test's still open, or one closed
        since the last call without its backend's exit being confirmed (a
        collected connection, a wait that timed out). Otherwise every tagged
        session went through this accounting and is gone."""
        with self._lock:
            for activation in self._activations:
                if activation.tag == tag:
                    unconfirmed, activation.unconfirmed = activation.unconfirmed, 0
                    break
            else:
                return False
            return bool(unconfirmed) or any(
                holder.role != TEST_THREAD for holder in self._holders.values()
            )

    def end_test(self) -> None:
        """No test runs any more; sessions opened now belong to none."""
        with self._lock:
            self.test = None

    def _restart_count(self) -> None:
        self._overruns = []
        self.peaks = {}
        for holder in self._holders.values():
            self.peaks[holder.alias] = self.peaks.get(holder.alias, 0) + 1

    @contextmanager
    def window(self, alias: str) -> Iterator[SessionWindow]:
        """Watch the sessions open at once on `alias` until the block exits."""
        with self._lock:
            window = SessionWindow(alias, self.holders(alias))
            self._windows.append(window)
        try:
            yield window
        finally:
            with self._lock:
                self._windows.remove(window)

    def _add(
        self, wrapper: BaseDatabaseWrapper, role: str, *, trace: bool = True
    ) -> Holder:
        thread = threading.current_thread()
        active = self.active
        trace = trace and active is not None and active.trace
        holder = Holder(
            alias=wrapper.alias,
            thread_name=thread.name,
            thread_ident=thread.ident or 0,
            role=role,
            request=_thread.request,
            test=self.test,
            stack=opening_stack() if trace else None,
        )
        key = id(wrapper)
        self._holders[key] = holder
        # A wrapper collected while connected (its thread died) closes its
        # session; forget it then. One finalizer per wrapper, not per session.
        if key not in self._finalizers:
            self._finalizers[key] = weakref.finalize(wrapper, self._forget, key)
        count = sum(
            1 for other in self._holders.values() if other.alias == holder.alias
        )
        self.peaks[holder.alias] = max(self.peaks.get(holder.alias, 0), count)
        for window in self._windows:
            if window.alias == holder.alias:
                window._saw(holder, self.holders(holder.alias))
        return holder

    def _closed(self, key: int, *, confirmed: bool) -> None:
        holder = self._holders.pop(key, None)
        if holder is not None:
            holder.closed_at = time.monotonic()
            self.history.append(holder)
            active = self.active
            if not confirmed and active is not None and holder.role != TEST_THREAD:
                active.unconfirmed += 1

    def _forget(self, key: int) -> None:
        with self._lock:
            # Closed by the driver as the wrapper was collected: nobody waited.
            self._closed(key, confirmed=False)
            self._finalizers.pop(key, None)

    def acquire(self, wrapper: BaseDatabaseWrapper) -> None:
        """Count a session `wrapper` is about to open, or refuse it."""
        with self._lock:
            active = self.active
            if active is None or id(wrapper) in self._holders:
                return
            role = self.role_of_current_thread()
            holders = [h for h in self._holders.values() if h.alias == wrapper.alias]
            if len(holders) >= active.budget:
                error = SessionBudgetExceeded(
                    alias=wrapper.alias,
                    budget=active.budget,
                    holders=sorted(holders, key=lambda holder: holder.opened_at),
                    requester=(
                        f"{role} {threading.current_thread().name!r}"
                        + (f" serving {_thread.request}" if _thread.request else "")
                    ),
                )
                self.violations.append(error)
                self._overruns.append(
                    f"{error.requester} refused on {error.alias!r} "
                    f"(budget {error.budget})"
                )
                raise error
            self._add(wrapper, role)

    def identify(self, wrapper: BaseDatabaseWrapper, backend: str | None) -> None:
        """Record how the database server names the session `wrapper` opened."""
        with self._lock:
            holder = self._holders.get(id(wrapper))
            if holder is not None:
                holder.backend = backend

    def release(self, wrapper: BaseDatabaseWrapper, *, confirmed: bool = True) -> None:
        """Record that `wrapper` just closed its session; `confirmed` when its
        backend's exit was seen (or there is no backend to wait for)."""
        with self._lock:
            self._closed(id(wrapper), confirmed=confirmed)

    def application_name(
        self, wrapper: BaseDatabaseWrapper, current: str | None
    ) -> str:
        """The application_name that tells this session apart in pg_stat_activity."""
        active = self.active
        assert active is not None
        holder = self._holders.get(id(wrapper))
        role = holder.role if holder else self.role_of_current_thread()
        label = {TEST_THREAD: "test", SERVER_WORKER: "worker"}.get(role, "other")
        # The tag and role stay last, where the server and `watch` look for them;
        # whatever does not fit is cut from the start.
        parts = [current, short_test_id(self.test) if self.test else None]
        parts.append(f"{active.tag}:{label}")
        name = " ".join(part for part in parts if part)
        # Printable ASCII only, so PostgreSQL neither escapes nor lengthens it.
        name = "".join(char if " " <= char <= "~" else "?" for char in name)
        return name[-_APPLICATION_NAME_MAX:]


@dataclass
class _Activation:
    budget: int
    tag: str
    test_thread: int
    trace: bool = False
    # Sessions of other threads than the test's closed since the last reset
    # without their backend's exit seen.
    unconfirmed: int = 0


_counter = iter(range(1, 1 << 62))


def new_tag() -> str:
    """A tag unique to one live server in this process, for application_name."""
    return f"safelive:{os.getpid()}.{next(_counter)}"


def _wrap_connect(
    guard: SessionGuard, original: Callable[[Any, dict[str, Any]], Any]
) -> Callable[[Any, dict[str, Any]], Any]:
    def get_new_connection(
        self: BaseDatabaseWrapper, conn_params: dict[str, Any]
    ) -> Any:
        guard.acquire(self)
        try:
            if self.vendor == "postgresql" and guard.active is not None:
                conn_params = {
                    **conn_params,
                    "application_name": guard.application_name(
                        self, conn_params.get("application_name")
                    ),
                }
            connection = original(self, conn_params)
        except BaseException:
            guard.release(self)
            raise
        guard.identify(self, backend_id(self.vendor, connection))
        return connection

    get_new_connection.__wrapped__ = original  # type: ignore[attr-defined]
    return get_new_connection


def backend_id(vendor: str, connection: Any) -> str | None:
    """How the database server names a new driver connection, where it can."""
    try:
        if vendor == "postgresql":
            info = getattr(connection, "info", None)  # psycopg 3
            pid = getattr(info, "backend_pid", None) or connection.get_backend_pid()
            return postgresql_backend(pid)
        if vendor == "mysql":
            return f"MySQL processlist id {connection.thread_id()}"
    except Exception:  # a driver without the call: no name, no harm
        return None
    return None


def _wrap_close(
    guard: SessionGuard, original: Callable[[Any], None]
) -> Callable[[Any], None]:
    def _close(self: BaseDatabaseWrapper) -> None:
        # The session counts until PostgreSQL itself no longer does.
        exiting = watch_exit(self)
        confirmed = False
        try:
            original(self)
        except BaseException:
            if exiting is not None:
                os.close(exiting)  # the driver may still hold it open
            raise
        else:
            confirmed = exiting is None or wait_exit(exiting)
        finally:
            guard.release(self, confirmed=confirmed)

    _close.__wrapped__ = original  # type: ignore[attr-defined]
    return _close


_WRAPPERS: dict[str, Callable[[SessionGuard, Any], Any]] = {
    "get_new_connection": _wrap_connect,
    "_close": _wrap_close,
}

guard = SessionGuard()
