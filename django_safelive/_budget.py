"""Count every database session the test process opens and enforce the budget.

Django has no hook that runs *before* a database session is opened (the
``connection_created`` signal fires after), so while a django-safelive test is
active the ``get_new_connection`` and ``_close`` methods of each configured
backend's ``DatabaseWrapper`` class are wrapped. A session that would exceed the
budget is refused before the database ever sees it.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_safelive._exceptions import SessionBudgetExceeded

TEST_THREAD = "test thread"
SERVER_WORKER = "server worker"
OTHER_THREAD = "other thread"

# PostgreSQL keeps at most NAMEDATALEN - 1 bytes of application_name.
_APPLICATION_NAME_MAX = 63


@dataclass
class Holder:
    """One open database session and who opened it."""

    alias: str
    thread_name: str
    thread_ident: int
    role: str
    request: str | None
    opened_at: float = field(default_factory=time.monotonic)

    def describe(self, now: float | None = None) -> str:
        """A one-line, human-readable description of this holder."""
        age = (time.monotonic() if now is None else now) - self.opened_at
        serving = f", opened while serving {self.request}" if self.request else ""
        return f"{self.role} {self.thread_name!r}{serving}, open for {age:.1f}s"


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
        self.peaks: dict[str, int] = {}

    # -- activation -------------------------------------------------------
    @property
    def active(self) -> _Activation | None:
        """The innermost activation, or None when no django-safelive test runs."""
        return self._activations[-1] if self._activations else None

    @contextmanager
    def activate(self, budget: int, tag: str) -> Iterator[_Activation]:
        """Enforce `budget` sessions per alias until the block exits."""
        activation = _Activation(budget, tag, threading.get_ident())
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
                self._add(wrapper, TEST_THREAD)

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

    def _add(self, wrapper: BaseDatabaseWrapper, role: str) -> Holder:
        thread = threading.current_thread()
        holder = Holder(
            alias=wrapper.alias,
            thread_name=thread.name,
            thread_ident=thread.ident or 0,
            role=role,
            request=_thread.request,
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
        return holder

    def _forget(self, key: int) -> None:
        with self._lock:
            self._holders.pop(key, None)
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
                raise error
            self._add(wrapper, role)

    def release(self, wrapper: BaseDatabaseWrapper) -> None:
        """Forget the session `wrapper` just closed."""
        with self._lock:
            self._holders.pop(id(wrapper), None)

    def application_name(
        self, wrapper: BaseDatabaseWrapper, current: str | None
    ) -> str:
        """The application_name that tells this session apart in pg_stat_activity."""
        active = self.active
        assert active is not None
        holder = self._holders.get(id(wrapper))
        role = holder.role if holder else self.role_of_current_thread()
        label = {TEST_THREAD: "test", SERVER_WORKER: "worker"}.get(role, "other")
        ours = f"{active.tag}:{label}"
        name = f"{current} {ours}" if current else ours
        return name[-_APPLICATION_NAME_MAX:]


@dataclass
class _Activation:
    budget: int
    tag: str
    test_thread: int


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
            return original(self, conn_params)
        except BaseException:
            guard.release(self)
            raise

    get_new_connection.__wrapped__ = original  # type: ignore[attr-defined]
    return get_new_connection


def _wrap_close(
    guard: SessionGuard, original: Callable[[Any], None]
) -> Callable[[Any], None]:
    def _close(self: BaseDatabaseWrapper) -> None:
        try:
            original(self)
        finally:
            guard.release(self)

    _close.__wrapped__ = original  # type: ignore[attr-defined]
    return _close


_WRAPPERS: dict[str, Callable[[SessionGuard, Any], Any]] = {
    "get_new_connection": _wrap_connect,
    "_close": _wrap_close,
}

guard = SessionGuard()
