"""Drop-in live server test cases bounded by django-safelive."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib.staticfiles.testing import (
    StaticLiveServerTestCase as DjangoStaticLiveServerTestCase,
)
from django.db import connections
from django.test import LiveServerTestCase as DjangoLiveServerTestCase
from django.test.testcases import LiveServerThread

from django_safelive import _sessions
from django_safelive._budget import guard, new_tag
from django_safelive._compat import enter_class_context
from django_safelive._config import Config, resolve
from django_safelive._exceptions import RequestStuck, SafeLiveError, SessionsLeftBehind
from django_safelive._server import SafeLiveServerThread

if TYPE_CHECKING:
    _Base = DjangoLiveServerTestCase
else:
    _Base = object

# How long a closed session may linger in pg_stat_activity while its backend exits.
_EXIT_GRACE = 5.0


class SafeLiveServerMixin(_Base):
    """Bound a ``LiveServerTestCase`` subclass's server and its database sessions."""

    max_connections: ClassVar[int | None] = None
    server_mode: ClassVar[str | None] = None
    server_workers: ClassVar[int | None] = None
    drain_timeout: ClassVar[float | None] = None
    server_thread_class: type[LiveServerThread] = SafeLiveServerThread

    safelive_config: ClassVar[Config]
    safelive_tag: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        # Validate before anything starts, so bad settings fail fast and clearly.
        cls.safelive_config = resolve(cls)
        cls.safelive_tag = new_tag()
        super().setUpClass()

    @classmethod
    def _start_server_thread(cls) -> None:
        # Entered first, so its exit runs after the server thread's termination.
        enter_class_context(
            cls, guard.activate(cls.safelive_config.max_connections, cls.safelive_tag)
        )
        super()._start_server_thread()  # type: ignore[misc]

    @classmethod
    def _create_server_thread(cls, connections_override: Any) -> Any:
        if issubclass(cls.server_thread_class, SafeLiveServerThread):
            return cls.server_thread_class(
                cls.host,
                cls.static_handler,
                connections_override=connections_override,
                port=cls.port,
                config=cls.safelive_config,
            )
        return super()._create_server_thread(connections_override)  # type: ignore[misc]

    @classmethod
    def _terminate_thread(cls) -> None:
        thread = cls.server_thread
        super()._terminate_thread()  # type: ignore[misc]
        stuck = thread.stuck if isinstance(thread, SafeLiveServerThread) else None
        left_behind = cls._end_server_sessions(terminate_now=stuck is not None)
        if stuck is not None and isinstance(thread, SafeLiveServerThread):
            # Their sessions are gone, so the stuck views fail and the workers exit.
            thread.httpd.join_workers(_EXIT_GRACE)
        _raise_first(stuck, *left_behind, *_take_violations())

    @classmethod
    def _end_server_sessions(cls, terminate_now: bool) -> list[SessionsLeftBehind]:
        """Make sure no session of this server is left, ending any that are."""
        errors = []
        for alias in cls._databases_names(include_mirrors=False):  # type: ignore[attr-defined]
            if connections[alias].vendor != "postgresql":
                continue
            left = _sessions.server_sessions(alias, cls.safelive_tag)
            if left and not terminate_now:
                left = _sessions.wait_gone(alias, cls.safelive_tag, _EXIT_GRACE)
            if left:
                _sessions.terminate(alias, [pid for pid, _ in left])
                _sessions.wait_gone(alias, cls.safelive_tag, _EXIT_GRACE)
                errors.append(
                    SessionsLeftBehind(
                        alias=alias,
                        sessions=[description for _, description in left],
                        terminated=True,
                    )
                )
        return errors

    def reset_live_server(self) -> None:
        """Drain in-flight requests and close the server's database connections.

        Runs between tests and between Hypothesis examples; call it yourself
        between examples of a Hypothesis test that runs inside the test method
        (a nested ``@given``, as Schemathesis tests often are).
        """
        thread = self.server_thread
        left_behind: list[SessionsLeftBehind] = []
        if isinstance(thread, SafeLiveServerThread):
            try:
                thread.reset()
            except RequestStuck:
                # Flushing would wait on the stuck request's locks: end it first.
                type(self)._end_server_sessions(terminate_now=True)
                raise
            left_behind = type(self)._end_server_sessions(terminate_now=False)
        _raise_first(*left_behind, *_take_violations())

    def _post_teardown(self) -> None:
        try:
            self.reset_live_server()
        finally:
            super()._post_teardown()  # type: ignore[misc]


def _take_violations() -> list[SafeLiveError]:
    violations: list[SafeLiveError] = list(guard.violations)
    guard.violations.clear()
    return violations


def _raise_first(*errors: SafeLiveError | None) -> None:
    """Raise the first error, mentioning the others so that none is lost."""
    found = [error for error in errors if error is not None]
    if not found:
        return
    first, *others = found
    if hasattr(first, "add_note"):
        for other in others:
            first.add_note(f"Also: {other}")
    raise first


class LiveServerTestCase(SafeLiveServerMixin, DjangoLiveServerTestCase):
    """Django's ``LiveServerTestCase`` with a bounded server and session budget."""


class StaticLiveServerTestCase(SafeLiveServerMixin, DjangoStaticLiveServerTestCase):
    """Django's ``StaticLiveServerTestCase`` with a bounded server and budget."""
