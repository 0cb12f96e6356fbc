"""The pytest plugin: the ``safe_live_server`` and ``rollback_live_server``
fixtures, and a switch that makes pytest-django's ``live_server`` the bounded
one."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from django_safelive._core import summary

if TYPE_CHECKING:
    from django_safelive._core.accounting import ServerAccount
    from django_safelive._core.rollback import RollbackLiveServer
    from django_safelive._pytest_server import SafeASGILiveServer, SafeLiveServer

_ORIGINAL_LIVE_SERVER = pytest.StashKey[Any]()
# The user property that carries a test's session record in its teardown report.
SESSIONS_PROPERTY = "safelive_sessions"
_SWITCH_HELP = (
    "Make pytest-django's live_server fixture the bounded django-safelive one."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("django-safelive")
    group.addoption(
        "--safelive-live-server",
        action="store_true",
        default=False,
        help=_SWITCH_HELP,
    )
    parser.addini(
        "safelive_live_server",
        type="bool",
        default=False,
        help=_SWITCH_HELP,
    )


def _replaces_live_server(config: pytest.Config) -> bool:
    return bool(
        config.getoption("safelive_live_server")
        or config.getini("safelive_live_server")
    )


class _SessionSummary:
    """Collect each test's session record from the reports, which pytest-xdist
    brings to the controller, and print the table at the end of the run."""

    def __init__(self) -> None:
        self.summary = summary.RunSummary()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == SESSIONS_PROPERTY and isinstance(value, dict):
                self.summary.record(summary.TestSessions.from_dict(value))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self.summary.lines()
        if lines:
            terminalreporter.write_sep("-", "django-safelive sessions")
            for line in lines:
                terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    # After the fixtures' teardown (whatever it raised), before the report is made.
    yield
    entries, summary.pending.tests = summary.pending.tests.values(), {}
    for entry in entries:
        data = {**entry.as_dict(), "test": item.nodeid}
        item.user_properties.append((SESSIONS_PROPERTY, data))


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any) -> Generator[None, None, None]:
    # With SERVER_BUDGET set, take this process's slots before pytest-django
    # creates the test databases, so that the creation is counted too.
    if fixturedef.argname == "django_db_setup" and "django.conf" in sys.modules:
        from django_safelive._core.server_budget import reserve_for_run

        reserve_for_run()
    yield


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_SessionSummary(), "django-safelive-sessions")
    summary.hand_over = True  # pytest_runtest_teardown takes the records
    if not _replaces_live_server(config):
        return
    try:
        from pytest_django import live_server_helper
    except ImportError:
        raise pytest.UsageError(
            "--safelive-live-server / safelive_live_server replaces pytest-django's "
            "live_server fixture, but pytest-django is not installed."
        ) from None

    from django_safelive._pytest_server import SafeLiveServer

    config.stash[_ORIGINAL_LIVE_SERVER] = live_server_helper.LiveServer
    # Still a class, a subclass of pytest-django's: isinstance() and subclassing
    # against live_server_helper.LiveServer keep working.
    blocker = _db_blocker(config)

    class Switched(SafeLiveServer):
        db_blocker = blocker

    Switched.__name__ = Switched.__qualname__ = SafeLiveServer.__name__
    live_server_helper.LiveServer = Switched  # type: ignore[misc]


def _db_blocker(config: pytest.Config) -> Any:
    from pytest_django import plugin

    key = getattr(plugin, "blocking_manager_key", None)
    if key is not None:
        return config.stash[key]
    return plugin._blocking_manager  # type: ignore[attr-defined]  # pytest-django < 4.9


def pytest_unconfigure(config: pytest.Config) -> None:
    if _ORIGINAL_LIVE_SERVER in config.stash:
        from pytest_django import live_server_helper

        live_server_helper.LiveServer = config.stash[_ORIGINAL_LIVE_SERVER]  # type: ignore[misc]


def _planned_processes(config: pytest.Config) -> int:
    """The pytest-xdist workers this run will start, on the controller (else 1)."""
    numprocesses = getattr(config.option, "numprocesses", None)
    return numprocesses if isinstance(numprocesses, int) and numprocesses > 0 else 1


def _total_budget_plan(config: pytest.Config) -> str | None:
    """Validate a total budget against the xdist workers; describe the split.

    Only where Django is loaded already (pytest-django loads it when settings
    are given) and settings load: in any other run the plugin does nothing.
    """
    if hasattr(config, "workerinput") or "django.conf" not in sys.modules:
        return None  # xdist workers: the controller checked and reported already
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from django_safelive._core.config import resolve, total_budget

    try:
        total = total_budget() if settings.configured else None
    except ImproperlyConfigured as error:
        raise pytest.UsageError(f"django-safelive: {error}") from None
    except Exception:  # settings that do not load: pytest-django reports them
        return None
    if total is None:
        return None
    processes = _planned_processes(config)
    try:
        share = resolve(processes=processes).max_sessions
    except ImproperlyConfigured as error:
        raise pytest.UsageError(f"django-safelive: {error}") from None
    return (
        f"django-safelive: total budget {total} sessions per alias across "
        f"{processes} process(es): {share} each"
    )


def _check_server_budget(config: pytest.Config) -> None:
    """On the controller: refuse xdist workers that together need more of
    SERVER_BUDGET than it has, before any worker starts."""
    processes = _planned_processes(config)
    if processes < 2 or "django.conf" not in sys.modules:
        return
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from django_safelive._core.config import resolve
    from django_safelive._core.server_budget import check_run

    try:
        if settings.configured:
            check_run(resolve(processes=processes).max_sessions, processes)
    except ImproperlyConfigured as error:
        raise pytest.UsageError(f"django-safelive: {error}") from None


def pytest_sessionstart(session: pytest.Session) -> None:
    # Before any test runs, so a budget too small for -n N fails at once.
    _total_budget_plan(session.config)
    if not hasattr(session.config, "workerinput"):
        _check_server_budget(session.config)


def pytest_report_header(config: pytest.Config) -> str | None:
    return _total_budget_plan(config)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    switched = _replaces_live_server(config)
    for item in items:
        fixtures = getattr(item, "fixturenames", None)
        if fixtures is None:
            continue
        if "safe_live_server" in fixtures or "asgi_live_server" in fixtures:
            # pytest-django creates test databases only for the tests it sees
            # need one, and it recognises its own live_server but not ours:
            # mark ours as it treats live_server, transactional.
            if not item.get_closest_marker("django_db"):
                item.add_marker(pytest.mark.django_db(transaction=True))
        elif not (switched and "live_server" in fixtures):
            continue
        # Only the tests that use a bounded server get the helper.
        fixtures.insert(_first_function_scoped(item, fixtures), _HELPER)


def _first_function_scoped(item: pytest.Item, fixtures: list[str]) -> int:
    """Where the helper goes in a test's fixtures: after those of wider scope,
    which pytest sets up first (a browser driver that skips the test, say, so
    the test never gets a database), and before the test's own, which may send
    requests. That is where pytest-django sets up its own live_server helper."""
    # pytest sorts a test's fixtures by scope, widest first, but says which
    # fixture has which scope only in this private mapping: without it, the
    # helper goes first.
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    wider = [
        index
        for index, name in enumerate(fixtures)
        if definitions.get(name) and definitions[name][-1].scope != "function"
    ]
    return wider[-1] + 1 if wider else 0


def _address(request: pytest.FixtureRequest) -> str:
    """Where the live server listens, as pytest-django's ``live_server`` reads
    it: ``--liveserver``, else DJANGO_LIVE_TEST_SERVER_ADDRESS, else localhost."""
    return str(
        request.config.getvalue("liveserver")
        or os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS")
        or "localhost"
    )


@pytest.fixture(scope="session")
def safe_live_server(
    request: pytest.FixtureRequest, django_db_setup: None, django_db_blocker: Any
) -> Iterator[SafeLiveServer]:
    """A bounded live server with pytest-django's ``live_server`` interface.

    It depends on ``django_db_setup`` so that it stops, and leaves no session
    behind, before the test databases are dropped.
    """
    from django_safelive._pytest_server import SafeLiveServer

    server = SafeLiveServer(_address(request), db_blocker=django_db_blocker)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def asgi_live_server(
    request: pytest.FixtureRequest, django_db_setup: None, django_db_blocker: Any
) -> Iterator[SafeASGILiveServer]:
    """``safe_live_server`` serving the project's ASGI application
    (``settings.ASGI_APPLICATION``, else Django's), HTTP and WebSockets:
    ``.url``, and ``.ws_url`` for WebSocket clients."""
    from django_safelive._pytest_server import SafeASGILiveServer

    server = SafeASGILiveServer(_address(request), db_blocker=django_db_blocker)
    yield server
    server.stop()


@pytest.fixture
def rollback_live_server(
    request: pytest.FixtureRequest, db: None
) -> Iterator[RollbackLiveServer]:
    """A live server serving inside the test's transaction (pytest-django's
    ``db``), on the test's own database session: the test sees what requests
    wrote, requests see the test's data, and everything is rolled back after
    the test. A server of its own for each test, stopped before the rollback.
    """
    from django_safelive._core.rollback import RollbackLiveServer

    server = RollbackLiveServer(_address(request), _databases(request))
    try:
        with _recorded(server.thread.account, request.node.nodeid):
            yield server
            server.reset()
    finally:
        server.stop()


@contextlib.contextmanager
def _recorded(account: ServerAccount, test: str) -> Iterator[None]:
    """Count the sessions of `account`'s server against `test` while the block
    runs, then add them to the run's summary."""
    account.begin_test(test)
    try:
        yield
    finally:
        summary.record(account.take_test_sessions())
        account.end_test()


def _databases(request: pytest.FixtureRequest) -> list[str]:
    from django.db import connections

    marker = request.node.get_closest_marker("django_db")
    databases = marker.kwargs.get("databases") if marker else None
    if databases is None:
        return ["default"]
    if databases == "__all__":
        return list(connections)
    return list(databases)


_HELPER = "_safe_live_server_helper"
_NARROWED_FLUSH = "_safelive_narrowed_flush"


@pytest.fixture(name=_NARROWED_FLUSH)
def _narrowed_flush() -> Iterator[contextlib.ExitStack]:
    """What narrows pytest-django's flush to the tables with rows: entered by
    the helper once its servers are reset, undone here, after the flush (set
    up before ``transactional_db``, this is torn down after it)."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(name=_HELPER)
def _safe_live_server_helper(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give tests that use the bounded server a transactional database, and
    reset the server after each test, before the database is flushed
    (pytest_collection_modifyitems adds it to those tests only)."""
    ours: list[str] = [
        name
        for name in ("safe_live_server", "asgi_live_server")
        if name in request.fixturenames
    ]
    narrowed_flush: contextlib.ExitStack = request.getfixturevalue(_NARROWED_FLUSH)
    # Set up first, so the flush it does at teardown comes after our reset.
    request.getfixturevalue("transactional_db")
    servers: list[SafeLiveServer] = [
        request.getfixturevalue(name) for name in ours or ["live_server"]
    ]
    with contextlib.ExitStack() as stack:
        for server in servers:
            if ours:
                server._live_server_modified_settings.enable()
                stack.callback(server._live_server_modified_settings.disable)
            stack.enter_context(_recorded(server.thread.account, request.node.nodeid))
        yield
        for server in servers:
            server.reset(_databases(request))
        # Drained: the flush may leave the empty tables alone (see flush.py).
        from django_safelive._core import flush

        narrowed_flush.enter_context(flush.only_tables_with_rows(_databases(request)))
