"""The test thread's connections, lent to a rollback server's worker one
request at a time: the lock both take, the savepoint each request runs in, and
the guarded ``needs_rollback`` of the shared connections."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import BaseDatabaseWrapper

from django_safelive._core.exceptions import RequestStuck, SafeLiveError

if TYPE_CHECKING:
    from django_safelive._core.server import BoundedWSGIServer

_SHARED = "_safelive_shared"
_FLAG = "_safelive_needs_rollback"


class _LockedList(list[Any]):
    """A connection's savepoint or atomic-block stack whose pushes and pops wait
    for the request being served, so that the test thread entering or leaving
    ``atomic()`` never interleaves with a request's own savepoint."""

    def __init__(self, items: Iterable[Any], shared: SharedTransaction) -> None:
        super().__init__(items)
        self.shared = shared

    def append(self, item: Any) -> None:
        with self.shared.held():
            super().append(item)

    def pop(self, index: Any = -1) -> Any:
        with self.shared.held():
            return super().pop(index)


class _GuardedFlag:
    """A shared connection's ``needs_rollback``, which the test thread reads
    and writes only while no request runs.

    Django sets the flag after a failed query, once the query (and its hold on
    the lock) has ended: in that gap a request may start, and it restores the
    flag it found when it ends. Waiting for the lock here keeps the test
    thread's write from being overwritten, and its reads from seeing a
    request's own, passing, state.
    """

    def __get__(self, wrapper: Any, owner: type | None = None) -> Any:
        if wrapper is None:
            return self
        shared: SharedTransaction = vars(wrapper)[_SHARED]
        if threading.get_ident() != shared._owner:
            return vars(wrapper)[_FLAG]
        with shared.held():
            return vars(wrapper)[_FLAG]

    def __set__(self, wrapper: Any, value: bool) -> None:
        shared: SharedTransaction = vars(wrapper)[_SHARED]
        if threading.get_ident() != shared._owner:
            vars(wrapper)[_FLAG] = value
            return
        with shared.held():
            vars(wrapper)[_FLAG] = value


_GUARDED_CLASSES: dict[type, type] = {}


def _guarded_class(cls: type) -> type:
    """`cls` with ``needs_rollback`` guarded (one subclass per backend class)."""
    if cls not in _GUARDED_CLASSES:
        _GUARDED_CLASSES[cls] = type(
            f"Shared{cls.__name__}",
            (cls,),
            {"__module__": cls.__module__, "needs_rollback": _GuardedFlag()},
        )
    return _GUARDED_CLASSES[cls]


@dataclasses.dataclass
class _State:
    """A connection's transaction bookkeeping when a request starts."""

    in_atomic_block: bool
    savepoint_ids: list[Any]
    atomic_blocks: list[Any]
    needs_rollback: bool
    commit_on_exit: bool
    closed_in_transaction: bool

    @classmethod
    def of(cls, wrapper: BaseDatabaseWrapper) -> _State:
        return cls(
            in_atomic_block=wrapper.in_atomic_block,
            savepoint_ids=list(wrapper.savepoint_ids),
            atomic_blocks=list(wrapper.atomic_blocks),
            needs_rollback=wrapper.needs_rollback,
            commit_on_exit=wrapper.commit_on_exit,
            closed_in_transaction=wrapper.closed_in_transaction,
        )

    def left_as_found(self, wrapper: BaseDatabaseWrapper, sid: str) -> bool:
        """Whether the request closed every atomic block it opened."""
        return (
            wrapper.in_atomic_block == self.in_atomic_block
            and list(wrapper.savepoint_ids) == [*self.savepoint_ids, sid]
            and list(wrapper.atomic_blocks) == self.atomic_blocks
        )

    def restore(self, wrapper: BaseDatabaseWrapper) -> None:
        # In place: the stacks stay the locked lists.
        wrapper.in_atomic_block = self.in_atomic_block
        wrapper.savepoint_ids[:] = self.savepoint_ids
        wrapper.atomic_blocks[:] = self.atomic_blocks
        wrapper.needs_rollback = self.needs_rollback
        wrapper.commit_on_exit = self.commit_on_exit
        wrapper.closed_in_transaction = self.closed_in_transaction


class SharedTransaction:
    """The test thread's connections, lent to the server's worker one request
    at a time, each request in a savepoint of its own.

    One re-entrant lock is held by the worker for a whole request and taken by
    the test thread for each query and each push or pop of its savepoint stack:
    the two never use the connection at once. The worker cannot close the
    shared connections (Django's per-request ``close_old_connections()`` would:
    inside a transaction autocommit is off, which it takes for a changed
    setting, and a close inside ``atomic()`` marks it for rollback).
    """

    def __init__(self, wrappers: Iterable[BaseDatabaseWrapper], timeout: float) -> None:
        self.wrappers = list(wrappers)
        self.timeout = timeout
        self.server: BoundedWSGIServer | None = None
        self.lock = threading.RLock()
        self._owner = threading.get_ident()
        self._failed = False
        self._open: list[_Open] = []
        # The request's savepoints not opened in the database yet, by alias,
        # and the thread serving it: each is opened as that thread's first
        # cursor on the connection is (_cursor_opening_savepoint).
        self._pending: dict[str, _Open] = {}
        self._serving = 0
        self._savepoints = 0
        self._classes: dict[str, type[BaseDatabaseWrapper]] = {}
        self._installed = False

    def install(self) -> None:
        """Put the lock and the guards on the shared connections."""
        for wrapper in self.wrappers:
            if isinstance(wrapper.savepoint_ids, _LockedList):
                raise SafeLiveError(
                    f"The test thread's connection to {wrapper.alias!r} is shared "
                    "with a rollback live server already: start one at a time."
                )
        for wrapper in self.wrappers:
            wrapper.execute_wrappers.append(self._exclusive)
            wrapper.savepoint_ids = _LockedList(wrapper.savepoint_ids, self)
            wrapper.atomic_blocks = _LockedList(wrapper.atomic_blocks, self)
            for name in ("close", "close_if_unusable_or_obsolete"):
                vars(wrapper)[name] = self._owner_only(getattr(wrapper, name))
            vars(wrapper)["_cursor"] = self._cursor_opening_savepoint(wrapper)
            self._classes[wrapper.alias] = type(wrapper)
            vars(wrapper)[_FLAG] = vars(wrapper).pop("needs_rollback", False)
            vars(wrapper)[_SHARED] = self
            wrapper.__class__ = _guarded_class(type(wrapper))
        self._installed = True

    def uninstall(self) -> None:
        """Give the connections back to the test thread alone, as they were."""
        if not self._installed:
            return
        self._installed = False
        for wrapper in self.wrappers:
            with contextlib.suppress(ValueError):
                wrapper.execute_wrappers.remove(self._exclusive)
            wrapper.savepoint_ids = list(wrapper.savepoint_ids)
            wrapper.atomic_blocks = list(wrapper.atomic_blocks)
            vars(wrapper).pop("close", None)
            vars(wrapper).pop("close_if_unusable_or_obsolete", None)
            vars(wrapper).pop("_cursor", None)
            if _FLAG in vars(wrapper):
                wrapper.__class__ = self._classes[wrapper.alias]
                vars(wrapper).pop(_SHARED, None)
                wrapper.needs_rollback = vars(wrapper).pop(_FLAG)

    def _exclusive(
        self, execute: Any, sql: Any, params: Any, many: bool, context: Any
    ) -> Any:
        with self.held():
            return execute(sql, params, many, context)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the shared connections; for the test thread, wait at most the
        drain timeout for the request in flight, then cancel its query and
        raise ``RequestStuck`` rather than wait forever."""
        if not self.lock.acquire(timeout=self.timeout):
            self.cancel()
            raise RequestStuck(
                timeout=self.timeout,
                requests=self.server.in_flight() if self.server else [],
                when="the test thread waited for the session it shares with them",
            )
        try:
            yield
        finally:
            self.lock.release()

    def cancel(self) -> None:
        """Cancel the query running on the shared connections, if any: a request
        stuck in the database fails, and its savepoint is rolled back."""
        for wrapper in self.wrappers:
            raw = wrapper.connection
            if raw is None:
                continue
            # psycopg 3.2+ (libpq 17) cancels over an encrypted connection.
            cancel = getattr(raw, "cancel_safe", None) or raw.cancel
            with contextlib.suppress(Exception):
                cancel()

    def _owner_only(self, method: Any) -> Any:
        def guarded() -> None:
            if threading.get_ident() == self._owner:
                method()

        return guarded

    def _cursor_opening_savepoint(self, wrapper: BaseDatabaseWrapper) -> Any:
        """`wrapper`'s ``_cursor()`` (which ``cursor()`` and ``chunked_cursor()``
        call), opening the request's savepoint first in the thread serving it:
        a request that never touches the database (a static file, a page
        without queries, a request the view refuses) costs no round trip."""
        method = wrapper._cursor  # type: ignore[attr-defined]

        def _cursor(*args: Any, **kwargs: Any) -> Any:
            if self._pending and threading.get_ident() == self._serving:
                opened = self._pending.pop(wrapper.alias, None)
                if opened is not None and opened.sid is not None:
                    # As Django opens one, so execute wrappers see it; its
                    # cursor comes back here with nothing left pending.
                    with wrapper.cursor() as cursor:
                        cursor.execute(wrapper.ops.savepoint_create_sql(opened.sid))
                    opened.created = True
            return method(*args, **kwargs)

        return _cursor

    def failed(self) -> None:
        """Mark the request being served as failed (a 5xx response)."""
        self._failed = True

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Hold the shared connections while a client's request is read, served
        and answered; roll back a savepoint its answer left open (the client
        went away mid-response, say)."""
        with self.lock:
            try:
                yield
            finally:
                self.end(failed=True)

    def begin(self) -> None:
        """Give the request a savepoint on each shared connection, opened in
        the database before its first query there."""
        self._failed = False
        self._serving = threading.get_ident()
        for wrapper in self.wrappers:
            self._open.append(opened := self._savepoint(wrapper))
            if opened.sid is not None:
                self._pending[wrapper.alias] = opened

    def _savepoint(self, wrapper: BaseDatabaseWrapper) -> _Open:
        state = _State.of(wrapper)
        # Autocommit, or the test's transaction is already broken: the request
        # runs as it would in the test thread.
        if (
            not wrapper.in_atomic_block
            or wrapper.needs_rollback
            or not wrapper.features.uses_savepoints
        ):
            return _Open(wrapper, state, None)
        self._savepoints += 1
        sid = f"safelive_r{self._savepoints}"
        # On the stack, on_commit() callbacks the request registers are
        # discarded with its savepoint, as in a nested atomic().
        wrapper.savepoint_ids.append(sid)
        return _Open(wrapper, state, sid)

    def end(self, *, failed: bool = False) -> None:
        """Release the request's savepoints, or roll back to them if it failed
        (a 5xx, an exception, atomic() left open, its transaction broken)."""
        opened, self._open = self._open, []
        self._pending.clear()
        failed = failed or self._failed
        for each in reversed(opened):
            wrapper, state, sid = each.wrapper, each.state, each.sid
            if sid is None:
                continue
            broken = (
                failed
                or wrapper.needs_rollback
                or wrapper.closed_in_transaction
                or not state.left_as_found(wrapper, sid)
            )
            state.restore(wrapper)
            if not each.created:
                # No query: only on_commit() callbacks to discard, as
                # savepoint_rollback() does.
                if broken:
                    wrapper.run_on_commit = [
                        callback
                        for callback in wrapper.run_on_commit
                        if sid not in callback[0]
                    ]
                continue
            if broken:
                wrapper.savepoint_rollback(sid)
            wrapper.savepoint_commit(sid)


@dataclasses.dataclass
class _Open:
    """A request's savepoint on one connection: `sid` None if it needs none
    (autocommit, a broken transaction), `created` once it is in the database."""

    wrapper: BaseDatabaseWrapper
    state: _State
    sid: str | None
    created: bool = False
