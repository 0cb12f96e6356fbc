"""pytest-django's ``LiveServer``, serving from django-safelive's bounded thread."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any, Protocol

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.db import connections
from django.test.testcases import LiveServerThread
from pytest_django.live_server_helper import LiveServer

from django_safelive._core import lifecycle, psycopg_pools, server_budget
from django_safelive._core.asgi_server import SafeASGILiveServerThread
from django_safelive._core.asgi_testcases import ASGILiveServerMixin
from django_safelive._core.checks import check_databases
from django_safelive._core.config import Config, resolve
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
        config = self._resolve()
        db_blocker = db_blocker or self.db_blocker
        # Checks and stopping query the server outside any test's database access.
        self._db_access = db_blocker.unblock if db_blocker else nullcontext
        with self._db_access():
            check_databases(config, list(connections))
        super().__init__(addr, start=False)
        self.thread = self._bounded_thread(self.thread, config)
        self.thread.daemon = True
        self._activation = ExitStack()
        if start:
            self.start()

    def _resolve(self) -> Config:
        return resolve()

    def _bounded_thread(self, django_thread: LiveServerThread, config: Config) -> Any:
        """Our server thread, where pytest-django made `django_thread`."""
        return SafeLiveServerThread(
            django_thread.host,
            django_thread.static_handler,
            connections_override=django_thread.connections_override,
            port=django_thread.port,
            config=config,
        )

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


class SafeASGILiveServer(SafeLiveServer):
    """The object the ``asgi_live_server`` fixture returns: ``SafeLiveServer``
    serving the project's ASGI application (HTTP and WebSockets), with
    ``.ws_url`` for WebSocket clients."""

    thread: SafeASGILiveServerThread  # type: ignore[assignment]

    def _resolve(self) -> Config:
        return resolve(websockets=True)

    def _bounded_thread(
        self, django_thread: LiveServerThread, config: Config
    ) -> SafeASGILiveServerThread:
        application = ASGILiveServerMixin.get_application()
        return SafeASGILiveServerThread(
            django_thread.host,
            ASGIStaticFilesHandler(application),  # type: ignore[arg-type]
            connections_override=django_thread.connections_override,
            port=django_thread.port,
            config=config,
        )

    @property
    def ws_url(self) -> str:
        """The server's address for WebSocket clients: ``ws://host:port``."""
        return f"ws://{self.thread.host}:{self.thread.port}"
