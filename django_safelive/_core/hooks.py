"""The one place django-safelive hooks into Django's database connections.

Django has no hook that runs *before* a database session opens (the
``connection_created`` signal fires after), so the first time a live server
starts, ``get_new_connection`` and ``_close`` of each configured backend's
``DatabaseWrapper`` class are wrapped, once, for the rest of the process:

- nothing is restored from a snapshot, so code that wraps the same methods
  before or after us keeps its wrapper;
- with no server running, the wrappers call through at the cost of one check;
- with servers running, each new session is routed to the account of the
  server it belongs to (``ServerAccount``): a server's workers to their
  server's, the test thread to the server whose test began last on it, any
  other thread (one a view started) to the server started last.

Checked on Django 4.2, 5.2, 6.0 and 6.1, whose backends all open sessions in
``get_new_connection`` and close them in ``_close`` (the nox matrix runs every
one of them).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_safelive._core import sessions
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.holders import (
    OTHER_THREAD,
    TEST_THREAD,
    Holder,
    SessionWindow,
    thread_info,
)
from django_safelive._core.sessions import postgresql_backend, wait_exit, watch_exit


class _Registry:
    """The running servers' accounts, and which account holds each session."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.accounts: list[ServerAccount] = []
        self._owners: dict[int, ServerAccount] = {}
        self._finalizers: dict[int, weakref.finalize[Any, Any]] = {}
        self._windows: list[SessionWindow] = []

    def route(self) -> tuple[ServerAccount, str] | None:
        """The account and role a session the calling thread opens counts in:
        a worker's server; for a thread that runs tests, the server whose test
        began last on it (a session-scoped server and a test case class's may
        both be active); for any other thread, the server activated last."""
        accounts = self.accounts
        if not accounts:
            return None
        bound = thread_info.account
        if bound is not None and bound in accounts:
            return bound, thread_info.role or OTHER_THREAD
        running = _running_tests(accounts, threading.get_ident())
        if running is not None:
            return running, TEST_THREAD
        return accounts[-1], OTHER_THREAD

    def opening(
        self, wrapper: BaseDatabaseWrapper
    ) -> tuple[ServerAccount, Holder] | None:
        """Count the session `wrapper` is about to open, or refuse it; the
        account it counts in and its holder (None when nothing counts it).

        While the budget is full only because closed sessions' backends are
        still exiting, wait for them (up to ``sessions.EXIT_WAIT``), holding
        no lock, so that other threads go on closing and counting."""
        deadline = time.monotonic() + sessions.EXIT_WAIT
        while True:
            with self._lock:
                routed = self.route()
                key = id(wrapper)
                if routed is None or key in self._owners:
                    return None
                account, role = routed
                holder = account.open(
                    key,
                    wrapper.alias,
                    role,
                    thread_info.request,
                    trace=True,
                    may_wait=time.monotonic() < deadline,
                )
                if holder is not None:
                    self._own(key, wrapper, account)
                    self._saw(holder)
                    return account, holder
            account.wait_for_room(wrapper.alias, deadline - time.monotonic())

    def owns(self, wrapper: BaseDatabaseWrapper) -> bool:
        """Whether `wrapper`'s session is counted by a running server."""
        return id(wrapper) in self._owners

    def _own(
        self, key: int, wrapper: BaseDatabaseWrapper, account: ServerAccount
    ) -> None:
        self._owners[key] = account
        # A wrapper collected while connected (its thread died) closes its
        # session; forget it then. One finalizer per wrapper, not per session.
        if key not in self._finalizers:
            self._finalizers[key] = weakref.finalize(wrapper, self._collected, key)

    def _saw(self, holder: Holder) -> None:
        for window in self._windows:
            if window.alias == holder.alias:
                window.saw(holder, self.holders(holder.alias))

    def defers_exit(self, wrapper: BaseDatabaseWrapper) -> bool:
        """Whether `wrapper`'s session, closing, may count on until its backend
        exits rather than be waited for (see ``ServerAccount.defers_exit``)."""
        with self._lock:
            account = self._owners.get(id(wrapper))
            return account is not None and account.defers_exit(id(wrapper))

    def closed(
        self,
        wrapper: BaseDatabaseWrapper,
        *,
        confirmed: bool,
        exiting: int | None = None,
    ) -> None:
        """`wrapper` closed its session (or failed to open it); `exiting`, a
        socket to watch for its backend's exit (see ``ServerAccount.close``)."""
        with self._lock:
            account = self._owners.pop(id(wrapper), None)
        if account is not None:
            account.close(id(wrapper), confirmed=confirmed, exiting=exiting)
        elif exiting is not None:
            sessions.forget([exiting])

    def _collected(self, key: int) -> None:
        with self._lock:
            self._finalizers.pop(key, None)
            account = self._owners.pop(key, None)
        if account is not None:
            # Closed by the driver as the wrapper went: nobody waited.
            account.close(key, confirmed=False)

    def holders(self, alias: str | None = None) -> list[Holder]:
        """Every running server's open sessions, oldest first."""
        found = [h for account in self.accounts for h in account.holders(alias)]
        return sorted(found, key=lambda holder: holder.opened_at)

    @contextmanager
    def activate(self, account: ServerAccount) -> Iterator[ServerAccount]:
        """Count sessions against `account` until the block exits; the calling
        thread is the one that runs the server's tests."""
        with self._lock:
            _install()
            account.test_thread = threading.get_ident()
            self.accounts.append(account)
            self._adopt_test_thread_sessions(account)
        try:
            yield account
        finally:
            with self._lock:
                self.accounts.remove(account)
                self._hand_back(account)
            account.settle_exits(0)  # stop watching: the server is done

    def _adopt_test_thread_sessions(self, account: ServerAccount) -> None:
        """Count the sessions the test thread has open in `account`: those
        opened before any server watched, and those another server counted
        (it gets them back when this one stops)."""
        for wrapper in connections.all(initialized_only=True):
            key = id(wrapper)
            if wrapper.connection is None:
                continue
            owner = self._owners.get(key)
            holder = owner.hand_over(key) if owner is not None else None
            if holder is None:
                # Opened before we watched: its stack is not known.
                holder = Holder(
                    alias=wrapper.alias,
                    thread_name=threading.current_thread().name,
                    thread_ident=threading.get_ident(),
                    role=TEST_THREAD,
                    request=None,
                )
                holder.backend, holder.pid = backend_id(
                    wrapper.vendor, wrapper.connection
                )
            account.adopt(key, holder)
            self._own(key, wrapper, account)

    def _hand_back(self, account: ServerAccount) -> None:
        """`account`'s server stopped: its test thread's open sessions go back
        to the server that runs tests on that thread still, if any."""
        heir = _running_tests(self.accounts, account.test_thread)
        for key in [k for k, owner in self._owners.items() if owner is account]:
            holder = account.hand_over(key)
            if heir is not None and holder is not None and holder.role == TEST_THREAD:
                heir.adopt(key, holder)
                self._owners[key] = heir
            else:
                del self._owners[key]

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


registry = _Registry()


def _running_tests(
    accounts: list[ServerAccount], thread: int | None
) -> ServerAccount | None:
    """Of `accounts`, the server whose test began last on `thread` (on a tie,
    no test began: the one activated last); None if none runs tests there."""
    mine = [account for account in accounts if account.test_thread == thread]
    if not mine:
        return None
    return max(reversed(mine), key=lambda account: account.test_order)


def backend_id(vendor: str, connection: Any) -> tuple[str | None, int | None]:
    """How the database server names a new driver connection, where it can,
    and its PostgreSQL backend pid."""
    try:
        if vendor == "postgresql":
            info = getattr(connection, "info", None)  # psycopg 3
            pid = getattr(info, "backend_pid", None) or connection.get_backend_pid()
            return postgresql_backend(pid), pid
        if vendor == "mysql":
            return f"MySQL processlist id {connection.thread_id()}", None
    except Exception:  # a driver without the call: no name, no harm
        pass
    return None, None


def _wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_new_connection(
        self: BaseDatabaseWrapper, conn_params: dict[str, Any]
    ) -> Any:
        if not registry.accounts:
            return original(self, conn_params)
        opened = registry.opening(self)
        if opened is None:
            return original(self, conn_params)
        account, holder = opened
        try:
            if self.vendor == "postgresql":
                name = account.application_name(
                    holder, conn_params.get("application_name")
                )
                conn_params = {**conn_params, "application_name": name}
            connection = original(self, conn_params)
        except BaseException:
            registry.closed(self, confirmed=True)
            raise
        holder.backend, holder.pid = backend_id(self.vendor, connection)
        return connection

    get_new_connection.__wrapped__ = original  # type: ignore[attr-defined]
    get_new_connection._safelive_hook = True  # type: ignore[attr-defined]
    return get_new_connection


def _wrap_close(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def _close(self: BaseDatabaseWrapper) -> None:
        if not registry.owns(self):  # not counted: nothing to wait for
            return original(self)
        # The session counts until PostgreSQL itself no longer does.
        exiting = watch_exit(self)
        try:
            original(self)
        except BaseException:
            if exiting is not None:
                sessions.forget([exiting])  # the driver may still hold it open
            registry.closed(self, confirmed=False)
            raise
        if exiting is not None and registry.defers_exit(self):
            # A worker's: it counts on until its backend is seen gone, but
            # nothing waits for that here (see ServerAccount.close).
            registry.closed(self, confirmed=False, exiting=exiting)
        else:
            registry.closed(self, confirmed=exiting is None or wait_exit(exiting))

    _close.__wrapped__ = original  # type: ignore[attr-defined]
    _close._safelive_hook = True  # type: ignore[attr-defined]
    return _close


_WRAPPERS = {"get_new_connection": _wrap_connect, "_close": _wrap_close}


def _install() -> None:
    """Wrap the methods of every configured backend's class, once: a class
    whose method (its own or inherited) is already ours is left alone."""
    for alias in connections:
        cls = type(connections[alias])
        for name, wrap in _WRAPPERS.items():
            current = getattr(cls, name)
            if not getattr(current, "_safelive_hook", False):
                setattr(cls, name, wrap(current))
