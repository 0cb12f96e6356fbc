"""A live server whose requests run on the test thread's own database session,
inside the test's transaction: Django's ``TestCase`` semantics over real HTTP.

The test thread's connection is shared with the server's only worker, as Django
shares an in-memory SQLite connection with its live server. Each request runs
in a savepoint of its own: a failed request rolls back to it, a successful one
releases it, and the test's rollback removes everything at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.contrib.staticfiles.testing import (
    StaticLiveServerTestCase as DjangoStaticLiveServerTestCase,
)
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import LiveServerTestCase as DjangoLiveServerTestCase
from django.test import TestCase as DjangoTestCase
from django.test.testcases import _StaticFilesHandler
from django.test.utils import modify_settings

from django_safelive._core import lifecycle
from django_safelive._core.accounting import guard
from django_safelive._core.config import Config
from django_safelive._core.exceptions import (
    RequestStuck,
    SafeLiveError,
    SelfCallInSingleMode,
    SessionBudgetExceeded,
)
from django_safelive._core.rollback_config import resolve_rollback, rollback_config
from django_safelive._core.server import (
    BoundedWSGIServer,
    SafeLiveServerThread,
    SafeRequestHandler,
)
from django_safelive._core.testcases import SafeLiveServerMixin

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_StaticHandler = Any


class RollbackUnsupported(SafeLiveError):
    """A request needed what a rollback live server cannot give: a database
    session of its own, or a second request served while it waits."""

    def __init__(self, cause: SafeLiveError) -> None:
        self.cause = cause
        if isinstance(cause, SelfCallInSingleMode):
            what = (
                "a view called the live server itself; the server serves one "
                "request at a time on the test's session, so that call would "
                "wait for its caller forever"
            )
        else:
            what = (
                "code running during a request (a thread a view started, say) "
                "tried to open a database session of its own, which could not "
                "see the test's uncommitted data"
            )
        super().__init__(
            f"django-safelive's rollback live server runs every request on the "
            f"test's own database session, inside its transaction: {what}.\n"
            f"Use django_safelive.LiveServerTestCase (committed data, sessions of "
            f"the server's own) for this test.\n{cause}"
        )


def _explained(error: SafeLiveError) -> SafeLiveError:
    if isinstance(error, (SessionBudgetExceeded, SelfCallInSingleMode)):
        return RollbackUnsupported(error)
    return error


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


_SHARED = "_safelive_shared"
_FLAG = "_safelive_needs_rollback"
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
        """Open the request's savepoint on each shared connection."""
        self._failed = False
        for wrapper in self.wrappers:
            # One at a time: if a later one fails, end() still sees the others.
            self._open.append(self._savepoint(wrapper))

    def _savepoint(self, wrapper: BaseDatabaseWrapper) -> _Open:
        state = _State.of(wrapper)
        # Autocommit, or the test's transaction is already broken: the request
        # runs as it would in the test thread.
        if not wrapper.in_atomic_block or wrapper.needs_rollback:
            return _Open(wrapper, state, None)
        sid = wrapper.savepoint()
        if sid is not None:
            # On the stack, on_commit() callbacks the request registers are
            # discarded with its savepoint, as in a nested atomic().
            wrapper.savepoint_ids.append(sid)
        return _Open(wrapper, state, sid)

    def end(self, *, failed: bool = False) -> None:
        """Release the request's savepoints, or roll back to them if it failed
        (a 5xx, an exception, atomic() left open, its transaction broken)."""
        opened, self._open = self._open, []
        failed = failed or self._failed
        for wrapper, state, sid in reversed(opened):
            if sid is None:
                continue
            broken = (
                failed
                or wrapper.needs_rollback
                or wrapper.closed_in_transaction
                or not state.left_as_found(wrapper, sid)
            )
            state.restore(wrapper)
            if broken:
                wrapper.savepoint_rollback(sid)
            wrapper.savepoint_commit(sid)


class _Open(NamedTuple):
    wrapper: BaseDatabaseWrapper
    state: _State
    sid: str | None


class _Answer:
    """A WSGI response body that ends the request's savepoints before its last
    chunk is sent: once the client has the whole answer, the request's writes
    are released or rolled back, and its ``on_commit()`` callbacks settled."""

    def __init__(self, body: Iterable[bytes], end: Callable[[], None]) -> None:
        self._body = body
        self._end = end

    def __iter__(self) -> Iterator[bytes]:
        held: list[bytes] = []
        for chunk in self._body:
            if held:
                yield held.pop()
            held.append(chunk)
        self._end()
        yield from held

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class RollbackWSGIServer(BoundedWSGIServer):
    """A one-worker ``BoundedWSGIServer`` serving each request on the test
    thread's connections, in a savepoint of its own."""

    def __init__(
        self, *args: Any, transaction: SharedTransaction, **kwargs: Any
    ) -> None:
        self.transaction = transaction
        transaction.server = self
        super().__init__(*args, workers=1, **kwargs)

    def set_app(self, application: WSGIApplication | None) -> None:
        assert application is not None
        transaction = self.transaction

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
            def start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
                if status.startswith("5"):
                    transaction.failed()
                return start_response(status, headers, *args)

            transaction.begin()
            try:
                body = application(environ, start)
            except BaseException:
                transaction.end(failed=True)
                raise
            return _Answer(body, transaction.end)

        super().set_app(app)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.transaction.serving():
            super().finish_request(request, client_address)


class RollbackServerThread(SafeLiveServerThread):
    """``SafeLiveServerThread`` serving from a ``RollbackWSGIServer`` that
    shares ``connections_override``, the test thread's connections."""

    server_class = RollbackWSGIServer  # type: ignore[assignment]
    httpd: RollbackWSGIServer

    def __init__(
        self,
        host: str,
        static_handler: Any,
        connections_override: dict[str, Any] | None = None,
        port: int = 0,
        *,
        config: Config | None = None,
    ) -> None:
        super().__init__(
            host,
            static_handler,
            connections_override,
            port,
            config=resolve_rollback() if config is None else rollback_config(config),
        )
        self.transaction = SharedTransaction(
            (connections_override or {}).values(), self.config.drain_timeout
        )
        self._terminated = False

    def start(self) -> None:
        """Share the connections, then serve. Started once the session budget's
        guard is in place: it wraps the methods of each connection's class, and
        sharing gives the shared connections a subclass of it."""
        self.transaction.install()
        super().start()

    def _create_server(
        self, connections_override: dict[str, Any] | None = None
    ) -> RollbackWSGIServer:
        return RollbackWSGIServer(
            (self.host, self.port),
            SafeRequestHandler,
            allow_reuse_address=False,
            connections_override=connections_override,
            transaction=self.transaction,
        )

    def reset(self) -> None:
        """Wait for the request in flight; one still running after the drain
        timeout has its query cancelled (it holds the test's own session)."""
        try:
            super().reset()
        except RequestStuck:
            self._cancel_stuck()
            raise

    def terminate(self) -> None:
        """Drain and stop the server (once), then give the connections back."""
        try:
            if not self._terminated and self.ident is not None:
                self._terminated = True
                super().terminate()
                if self.stuck is not None:
                    self._cancel_stuck()
        finally:
            self.transaction.uninstall()

    def _cancel_stuck(self) -> None:
        self.transaction.cancel()
        with contextlib.suppress(RequestStuck):
            self.httpd.wait_idle(self.config.drain_timeout, "its query was cancelled")


if TYPE_CHECKING:
    _Base = DjangoTestCase
else:
    _Base = object


class RollbackLiveServerMixin(SafeLiveServerMixin, _Base):
    """Serve a ``LiveServerTestCase``'s requests inside a ``TestCase``'s
    transaction, on the test thread's own session."""

    server_thread_class = RollbackServerThread

    @classmethod
    def setUpClass(cls) -> None:
        # The pool and server slot checks do not apply to the one session the
        # class uses.
        cls.safelive_config = resolve_rollback(cls)
        super(SafeLiveServerMixin, cls).setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        # Stop serving before the class's transaction rolls back and Django
        # closes the connection the server shares.
        thread = cls.__dict__.get("server_thread")
        if isinstance(thread, RollbackServerThread):
            thread.terminate()
        super().tearDownClass()

    @classmethod
    def _config(cls) -> Config:
        if "safelive_config" not in cls.__dict__:
            cls.safelive_config = resolve_rollback(cls)
        return cls.safelive_config

    @classmethod
    def _make_connections_override(cls) -> dict[str, BaseDatabaseWrapper]:
        return {alias: connections[alias] for alias in cls._safelive_aliases()}

    def reset_live_server(self) -> None:
        """Wait for the request in flight, if any; raise what a request needed
        and could not have (see ``RollbackUnsupported``)."""
        try:
            super().reset_live_server()
        except (SessionBudgetExceeded, SelfCallInSingleMode) as error:
            raise _explained(error) from error


class RollbackLiveServerTestCase(
    RollbackLiveServerMixin, DjangoLiveServerTestCase, DjangoTestCase
):
    """A live server inside Django's ``TestCase`` transaction.

    Requests run on the test thread's own database session, one at a time, each
    in a savepoint: they see ``setUpTestData`` and the test's data, the test sees
    what they wrote, and everything is rolled back after the test. A request
    that fails (5xx, an exception, a view leaving ``atomic()`` open or its
    transaction broken) is rolled back alone.
    """


class StaticRollbackLiveServerTestCase(
    RollbackLiveServerMixin, DjangoStaticLiveServerTestCase, DjangoTestCase
):
    """``RollbackLiveServerTestCase`` serving static files as Django's
    ``StaticLiveServerTestCase`` does (from the finders)."""


def _host_and_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if host and port.isdigit():
        return host, int(port)
    return addr, 0


class RollbackLiveServer:
    """What the ``rollback_live_server`` fixture returns: pytest-django's
    ``live_server`` interface (``.url``, ``str()``, ``+``), serving inside the
    test's transaction (pytest-django's ``db``)."""

    def __init__(self, addr: str, aliases: Iterable[str]) -> None:
        self.aliases = list(aliases)
        host, port = _host_and_port(addr)
        static_handler: _StaticHandler = _StaticFilesHandler
        if "django.contrib.staticfiles" in settings.INSTALLED_APPS:
            from django.contrib.staticfiles.handlers import StaticFilesHandler

            static_handler = StaticFilesHandler
        shared = {alias: connections[alias] for alias in self.aliases}
        self.thread = RollbackServerThread(
            host, static_handler, connections_override=shared, port=port
        )
        self.thread.daemon = True
        self._stack = contextlib.ExitStack()
        try:
            config = self.thread.config
            self._stack.enter_context(
                guard.activate(
                    config.max_connections, self.thread.tag, trace=config.trace
                )
            )
            self._stack.enter_context(modify_settings(ALLOWED_HOSTS={"append": host}))
            for wrapper in shared.values():
                wrapper.inc_thread_sharing()
                self._stack.callback(wrapper.dec_thread_sharing)
            self._stack.callback(self.thread.terminate)
            self.thread.start()
            self.thread.is_ready.wait()
            if self.thread.error:
                raise self.thread.error
        except BaseException:
            self._stack.close()
            raise

    @property
    def url(self) -> str:
        """The server's root URL, without a trailing slash."""
        return f"http://{self.thread.host}:{self.thread.port}"

    def __str__(self) -> str:
        return self.url

    def __add__(self, other: str) -> str:
        return f"{self}{other}"

    def __repr__(self) -> str:
        return f"<RollbackLiveServer listening at {self.url}>"

    def reset(self) -> None:
        """Wait for the request in flight, if any; raise what a request needed
        and could not have (see ``RollbackUnsupported``)."""
        try:
            lifecycle.reset(self.thread, self.aliases, self.thread.tag)
        except (SessionBudgetExceeded, SelfCallInSingleMode) as error:
            raise _explained(error) from error

    def stop(self) -> None:
        """Stop the server and give the test its connections back."""
        try:
            self.thread.terminate()
            stuck = self.thread.stuck
            left: list[SafeLiveError] = []
            if stuck is not None or guard.may_have_left_sessions(self.thread.tag):
                left.extend(
                    lifecycle.end_server_sessions(
                        self.aliases, self.thread.tag, terminate_now=stuck is not None
                    )
                )
            errors = [stuck, *left, *lifecycle.take_violations()]
            lifecycle.raise_first(*(_explained(e) for e in errors if e is not None))
        finally:
            self._stack.close()
