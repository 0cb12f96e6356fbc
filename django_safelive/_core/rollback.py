"""A live server whose requests run on the test thread's own database session,
inside the test's transaction: Django's ``TestCase`` semantics over real HTTP.

The test thread's connection is shared with the server's only worker, as Django
shares an in-memory SQLite connection with its live server. Each request runs
in a savepoint of its own: a failed request rolls back to it, a successful one
releases it, and the test's rollback removes everything at the end.

This module holds what users meet: the test case classes and the
``rollback_live_server`` fixture's server. The sharing is in
``shared_transaction``, the server in ``rollback_server``, its settings in
``rollback_config``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

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
from django_safelive._core.config import Config
from django_safelive._core.exceptions import (
    SafeLiveError,
    SelfCallInSingleMode,
    SessionBudgetExceeded,
)
from django_safelive._core.hooks import registry
from django_safelive._core.rollback_config import resolve_rollback
from django_safelive._core.rollback_server import RollbackServerThread
from django_safelive._core.testcases import SafeLiveServerMixin

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
            self._stack.enter_context(registry.activate(self.thread.account))
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
            lifecycle.reset(self.thread, self.aliases, self.thread.account)
        except (SessionBudgetExceeded, SelfCallInSingleMode) as error:
            raise _explained(error) from error

    def stop(self) -> None:
        """Stop the server and give the test its connections back."""
        try:
            self.thread.terminate()
            stuck = self.thread.stuck
            left: list[SafeLiveError] = []
            account = self.thread.account
            if stuck is not None or account.may_have_left_sessions():
                left.extend(
                    lifecycle.end_server_sessions(
                        self.aliases, account, terminate_now=stuck is not None
                    )
                )
            errors = [stuck, *left, *account.take_violations()]
            lifecycle.raise_first(*(_explained(e) for e in errors if e is not None))
        finally:
            self._stack.close()
