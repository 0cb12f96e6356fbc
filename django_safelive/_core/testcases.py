"""Drop-in live server test cases bounded by django-safelive."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib.staticfiles.testing import (
    StaticLiveServerTestCase as DjangoStaticLiveServerTestCase,
)
from django.test import LiveServerTestCase as DjangoLiveServerTestCase
from django.test.testcases import LiveServerThread

from django_safelive._core import (
    flush,
    lifecycle,
    psycopg_pools,
    server_budget,
    summary,
)
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.assertions import max_sessions
from django_safelive._core.checks import check_databases
from django_safelive._core.compat import enter_class_context
from django_safelive._core.config import Config, resolve
from django_safelive._core.holders import SessionWindow
from django_safelive._core.hooks import registry
from django_safelive._core.server import SafeLiveServerThread

if TYPE_CHECKING:
    _Base = DjangoLiveServerTestCase
else:
    _Base = object


class SafeLiveServerMixin(_Base):
    """Bound a ``LiveServerTestCase`` subclass's server and its database sessions."""

    max_sessions: ClassVar[int | None] = None
    server_mode: ClassVar[str | None] = None
    server_workers: ClassVar[int | None] = None
    drain_timeout: ClassVar[float | None] = None
    trace: ClassVar[bool | None] = None
    session_per_request: ClassVar[bool | None] = None
    server_thread_class: type[LiveServerThread] = SafeLiveServerThread

    safelive_config: ClassVar[Config]
    safelive_account: ClassVar[ServerAccount]
    """The running server's sessions and budget (see ``ServerAccount``)."""
    _safelive_slots: ClassVar[server_budget.Taken] = []
    session_peak: dict[str, int]
    """After each test: the most sessions open at once, per alias."""

    @classmethod
    def setUpClass(cls) -> None:
        # Validate before anything starts, so bad settings fail fast and clearly.
        cls.safelive_config = cls._resolve_config()
        check_databases(cls.safelive_config, cls._safelive_aliases())
        super().setUpClass()

    @classmethod
    def _resolve_config(cls) -> Config:
        return resolve(cls)

    @classmethod
    def _config(cls) -> Config:
        """The configuration setUpClass resolved, or, for a test that calls
        Django's private ``_start_server_thread()`` itself, resolved now."""
        if "safelive_config" not in cls.__dict__:
            cls.safelive_config = cls._resolve_config()
        return cls.safelive_config

    @classmethod
    def _create_server_thread(cls, connections_override: Any) -> Any:
        config = cls._config()
        cls._safelive_slots = server_budget.reserve(
            cls._safelive_aliases(), config.max_sessions
        )
        thread = cls._safelive_thread(connections_override, config)
        if thread is not None:
            account = thread.account
        else:
            thread = super()._create_server_thread(connections_override)  # type: ignore[misc]
            account = ServerAccount(config.max_sessions, trace=config.trace)
        cls.safelive_account = account
        # Entered before the thread starts, and left after it terminates.
        enter_class_context(cls, registry.activate(account))
        psycopg_pools.fit_pools(cls._safelive_aliases(), config.max_sessions)
        return thread

    @classmethod
    def _safelive_thread(cls, connections_override: Any, config: Config) -> Any:
        """The bounded server thread to run, or None for a ``server_thread_class``
        of the test's own (whose sessions are then only counted)."""
        if not issubclass(cls.server_thread_class, SafeLiveServerThread):
            return None
        return cls.server_thread_class(
            cls.host,
            cls.static_handler,
            connections_override=connections_override,
            port=cls.port,
            config=config,
        )

    @classmethod
    def _safelive_aliases(cls) -> list[str]:
        return list(cls._databases_names(include_mirrors=False))  # type: ignore[attr-defined]

    @classmethod
    def _terminate_thread(cls) -> None:
        thread = cls.server_thread
        super()._terminate_thread()  # type: ignore[misc]
        try:
            lifecycle.finish(thread, cls._safelive_aliases(), cls.safelive_account)
        finally:
            server_budget.give_back(cls._safelive_aliases(), cls._safelive_slots)

    def reset_live_server(self) -> None:
        """Drain in-flight requests and close the server's database connections.

        Runs between tests and between Hypothesis examples; call it yourself
        between examples of a Hypothesis test that runs inside the test method
        (a nested ``@given``, as Schemathesis tests often are).
        """
        thread = getattr(self, "server_thread", None)
        if thread is None:  # never started: setUpClass failed or was not run
            return
        lifecycle.reset(thread, self._safelive_aliases(), self.safelive_account)

    def assertMaxSessions(
        self, n: int, alias: str = "default"
    ) -> AbstractContextManager[SessionWindow]:
        """Fail if more than `n` database sessions are open at once on `alias`
        while the ``with`` block runs, listing the sessions open at the peak."""
        return max_sessions(n, alias, failure=self.failureException)

    def __call__(self, result: Any = None) -> Any:
        # Not _pre_setup: Django runs the first test's in setUpClass, and Hypothesis
        # runs it per example; every path to the test goes through here.
        account = getattr(self, "safelive_account", None)
        if account is None:  # setUpClass failed before the server: Django reports it
            return super().__call__(result)
        account.begin_test(self.id())
        try:
            return super().__call__(result)
        finally:
            account.end_test()

    def _post_teardown(self) -> None:
        drained = False
        try:
            self.reset_live_server()
            drained = True
        finally:
            # Drained, with every session of the server closed, the test thread
            # sees every row: the flush may leave the empty tables alone. After
            # a failed reset, Django's flush truncates them all, as it would.
            narrowed = (
                flush.only_tables_with_rows(self._safelive_aliases())
                if drained
                else nullcontext()
            )
            try:
                with narrowed:
                    super()._post_teardown()  # type: ignore[misc]
            finally:
                self._record_sessions()

    def _record_sessions(self) -> None:
        entry = self.safelive_account.take_test_sessions()
        # Hypothesis runs _pre_setup/_post_teardown once per example.
        peaks = dict(getattr(self, "session_peak", {}))
        for alias, peak in entry.peaks.items():
            peaks[alias] = max(peaks.get(alias, 0), peak)
        self.session_peak = peaks
        summary.record(entry)


class LiveServerTestCase(SafeLiveServerMixin, DjangoLiveServerTestCase):
    """Django's ``LiveServerTestCase`` with a bounded server and session budget."""


class StaticLiveServerTestCase(SafeLiveServerMixin, DjangoStaticLiveServerTestCase):
    """Django's ``StaticLiveServerTestCase`` with a bounded server and budget."""
