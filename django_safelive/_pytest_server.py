"""pytest-django's ``LiveServer``, serving from django-safelive's bounded thread."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any, Protocol

from django.db import connections
from pytest_django.live_server_helper import LiveServer

from django_safelive._core import lifecycle, psycopg_pools, server_budget
from django_safelive._core.checks import check_databases
from django_safelive._core.config import resolve
from django_safelive._core.hooks import registry
from django_safelive._core.server import SafeLiveServerThread


class DbBlocker(Protocol):
    """pytest-django's database blocker, as far as we use it."""

    def unblock(self) -> AbstractContextManager[Any]: ...


class SafeLiveServer(LiveServer):
    """The object the ``safe_live_server`` fixture returns: pytest-django's
    ``LiveServer`` interface (``.url``, ``str()``, ``+``), bounded."""

    thread: SafeLiveServerThread
    db_blocker: DbBlocker | None = None
    """pytest-django's database blocker; the ``--safelive-live-server`` switch
    sets it on the subclass that replaces pytest-django's ``LiveServer``."""
    _slots: server_budget.Taken = []
    """The SERVER_BUDGET slots this server's start took, given back at stop."""

    def __init__(
        self, addr: str, *, start: bool = True, db_blocker: DbBlocker | None = None
    ) -> None:
        config = resolve()
        db_blocker = db_blocker or self.db_blocker
        # Checks and stopping query the server outside any test's database access.
        self._db_access = db_blocker.unblock if db_blocker else nullcontext
        with self._db_access():
            check_databases(config, list(connections))
        super().__init__(addr, start=False)
        django_thread = self.thread
        self.thread = SafeLiveServerThread(
            django_thread.host,
            django_thread.static_handler,
            connections_override=django_thread.connections_override,
            port=django_thread.port,
            config=config,
        )
        self.thread.daemon = True
        self._activation = ExitStack()
        if start:
            self.start()

    def start(self) -> None:
        """Start enforcing the session budget, then start the server."""
        config = self.thread.config
        with self._db_access():
            self._slots = server_budget.reserve(list(connections), config.max_sessions)
        self._activation.enter_context(registry.activate(self.thread.account))
        try:
            psycopg_pools.fit_pools(list(connections), self.thread.config.max_sessions)
            super().start()
        except BaseException:
            self._activation.close()
            raise

    def stop(self) -> None:
        """Stop the server, leave no session behind, stop enforcing the budget."""
        try:
            super().stop()
            with self._db_access():
                lifecycle.finish(self.thread, list(connections), self.thread.account)
        finally:
            self._activation.close()
            with self._db_access():
                server_budget.give_back(list(connections), self._slots)

    def reset(self, aliases: list[str] | None = None) -> None:
        """Drain in-flight requests and close the server's database connections.

        Runs after every test that uses the server; call it yourself between
        examples of a Hypothesis test inside a test function.
        """
        lifecycle.reset(self.thread, aliases or ["default"], self.thread.account)
