"""Settings: precedence of environment, class attributes and SAFELIVE, and bad input."""

from __future__ import annotations

import os
from typing import Any, ClassVar
from unittest import mock

from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import SimpleTestCase, override_settings

from django_safelive import LiveServerTestCase
from django_safelive._core.checks import check_databases
from django_safelive._core.config import Config, resolve
from tests.test_faults import record


def owner(**attributes: Any) -> type:
    """A stand-in test case class carrying the given class attributes."""
    return type("Owner", (), attributes)


class PrecedenceTests(SimpleTestCase):
    def test_defaults(self) -> None:
        """With nothing set: pool of four workers, a budget of eight."""
        with mock.patch.dict(os.environ, clear=False) as environ:
            for name in list(environ):
                if name.startswith("SAFELIVE_") and name != "SAFELIVE_TEST_DB_NAME":
                    del environ[name]
            self.assertEqual(
                resolve(None),
                Config(max_sessions=8, mode="pool", workers=4, drain_timeout=10.0),
            )

    @override_settings(SAFELIVE={"MAX_SESSIONS": 5, "MODE": "single"})
    def test_settings(self) -> None:
        """SAFELIVE in settings is read."""
        config = resolve(None)
        self.assertEqual(
            (config.max_sessions, config.mode, config.workers), (5, "single", 1)
        )

    @override_settings(SAFELIVE={"MAX_SESSIONS": 5, "MODE": "single"})
    def test_class_attributes_win_over_settings(self) -> None:
        """Class attributes override SAFELIVE."""
        config = resolve(owner(max_sessions=12, server_mode="pool", server_workers=6))
        self.assertEqual(
            (config.max_sessions, config.mode, config.workers), (12, "pool", 6)
        )

    @override_settings(SAFELIVE={"MAX_SESSIONS": 5})
    def test_environment_wins_over_everything(self) -> None:
        """SAFELIVE_* environment variables override class attributes and settings."""
        environ = {
            "SAFELIVE_MAX_SESSIONS": " 20 ",
            "SAFELIVE_MODE": "POOL",
            "SAFELIVE_WORKERS": "10",
            "SAFELIVE_DRAIN_TIMEOUT": "2.5",
        }
        with mock.patch.dict(os.environ, environ):
            config = resolve(owner(max_sessions=12, server_mode="single"))
        self.assertEqual(config, Config(20, "pool", 10, 2.5))

    def test_default_workers_fit_a_small_budget(self) -> None:
        """Without WORKERS, the pool shrinks to fit the budget."""
        self.assertEqual(resolve(owner(max_sessions=3)).workers, 2)

    def test_single_mode_has_one_worker(self) -> None:
        """Single mode serves with exactly one worker, whatever WORKERS says."""
        self.assertEqual(
            resolve(owner(server_mode="single", server_workers=5)).workers, 1
        )


class RenamedSettingsTests(SimpleTestCase):
    """The names of 0.1 (MAX_CONNECTIONS, max_connections...) still work, with a
    DeprecationWarning naming the new one."""

    def test_old_environment_variable(self) -> None:
        """SAFELIVE_MAX_CONNECTIONS sets the budget and says to use the new name."""
        with (
            mock.patch.dict(os.environ, {"SAFELIVE_MAX_CONNECTIONS": "5"}),
            self.assertWarnsRegex(
                DeprecationWarning, "use the environment variable SAFELIVE_MAX_SESSIONS"
            ),
        ):
            self.assertEqual(resolve().max_sessions, 5)

    def test_old_class_attribute(self) -> None:
        """A class attribute max_connections sets the budget, with a warning."""
        with self.assertWarnsRegex(
            DeprecationWarning, "use the class attribute max_sessions"
        ):
            self.assertEqual(resolve(owner(max_connections=3)).max_sessions, 3)

    @override_settings(SAFELIVE={"TOTAL_MAX_CONNECTIONS": 12})
    def test_old_settings_key(self) -> None:
        """SAFELIVE["TOTAL_MAX_CONNECTIONS"] is split as before, with a warning."""
        with (
            mock.patch.dict(os.environ, {"PYTEST_XDIST_WORKER_COUNT": "3"}),
            self.assertWarnsRegex(
                DeprecationWarning, r"use SAFELIVE\['TOTAL_MAX_SESSIONS'\]"
            ),
        ):
            self.assertEqual(resolve().max_sessions, 4)

    @override_settings(SAFELIVE={"MAX_SESSIONS": 4, "MAX_CONNECTIONS": 6})
    def test_old_and_new_name_at_once_are_refused(self) -> None:
        """Both spellings set in one place is an error naming both."""
        with self.assertRaisesMessage(
            ImproperlyConfigured,
            "SAFELIVE['MAX_SESSIONS'] and SAFELIVE['MAX_CONNECTIONS'] are both set",
        ):
            resolve()

    def test_bad_value_under_the_old_name_names_it(self) -> None:
        """An invalid value is reported under the name it was given by."""
        with (
            mock.patch.dict(os.environ, {"SAFELIVE_MAX_CONNECTIONS": "eight"}),
            self.assertWarns(DeprecationWarning),
            self.assertRaisesMessage(
                ImproperlyConfigured, "environment variable SAFELIVE_MAX_CONNECTIONS"
            ),
        ):
            resolve()


class BadInputTests(SimpleTestCase):
    refused: ClassVar[int] = 0

    @classmethod
    def tearDownClass(cls) -> None:
        record("Bad settings", refused=cls.refused)
        super().tearDownClass()

    def assert_refused(self, message: str, **attributes: Any) -> None:
        with self.assertRaisesMessage(ImproperlyConfigured, message):
            resolve(owner(**attributes))
        type(self).refused += 1

    def test_bad_class_attributes(self) -> None:
        """Wrong types and values in class attributes say which attribute and why."""
        cases: list[tuple[dict[str, Any], str]] = [
            (
                {"max_sessions": "8"},
                "class attribute max_sessions must be an int, got str '8'",
            ),
            ({"max_sessions": 2.5}, "must be an int, got float 2.5"),
            ({"max_sessions": True}, "must be an int, got bool True"),
            ({"max_sessions": 0}, "must be at least 1, got 0"),
            ({"max_sessions": -3}, "must be at least 1, got -3"),
            (
                {"server_mode": "threaded"},
                "server_mode must be 'single' or 'pool', got 'threaded'",
            ),
            ({"server_mode": 1}, "must be 'single' or 'pool', got 1"),
            ({"server_workers": 0}, "server_workers must be at least 1, got 0"),
            ({"drain_timeout": 0}, "drain_timeout must be a positive, finite number"),
            ({"drain_timeout": float("inf")}, "positive, finite"),
            (
                {"drain_timeout": "5"},
                "drain_timeout must be a number of seconds, got str '5'",
            ),
        ]
        for attributes, message in cases:
            with self.subTest(attributes=attributes):
                self.assert_refused(message, **attributes)

    def test_budget_too_small(self) -> None:
        """A budget too small for the workers and the test thread says what to raise."""
        self.assert_refused(
            "budget of 4 database session(s) per alias is too small for mode 'pool' "
            "with 4 worker(s): it needs at least 5 (one per worker plus the test "
            "thread). Raise MAX_SESSIONS to 5 or more, or lower WORKERS.",
            max_sessions=4,
            server_workers=4,
        )
        self.assert_refused("it needs at least 2", max_sessions=1, server_mode="single")

    def test_garbage_in_environment(self) -> None:
        """Unparseable environment variables name the variable and the value."""
        cases = {
            "SAFELIVE_MAX_SESSIONS": (
                "lots",
                "SAFELIVE_MAX_SESSIONS must be a whole number, got 'lots'",
            ),
            "SAFELIVE_WORKERS": ("", "SAFELIVE_WORKERS must be a whole number, got ''"),
            "SAFELIVE_MODE": (
                "fast",
                "SAFELIVE_MODE must be 'single' or 'pool', got 'fast'",
            ),
            "SAFELIVE_DRAIN_TIMEOUT": (
                "soon",
                "SAFELIVE_DRAIN_TIMEOUT must be a number of seconds, got 'soon'",
            ),
        }
        for variable, (value, message) in cases.items():
            with (
                self.subTest(variable=variable),
                mock.patch.dict(os.environ, {variable: value}),
            ):
                self.assert_refused(message)

    def test_out_of_range_in_environment(self) -> None:
        """Zero, negative, fractional and non-finite values in the environment."""
        cases = [
            (
                "SAFELIVE_MAX_SESSIONS",
                "0",
                "SAFELIVE_MAX_SESSIONS must be at least 1, got 0",
            ),
            ("SAFELIVE_MAX_SESSIONS", "-2", "must be at least 1, got -2"),
            ("SAFELIVE_MAX_SESSIONS", "2.5", "must be a whole number, got '2.5'"),
            ("SAFELIVE_WORKERS", "-1", "SAFELIVE_WORKERS must be at least 1, got -1"),
            (
                "SAFELIVE_TOTAL_MAX_SESSIONS",
                "many",
                "SAFELIVE_TOTAL_MAX_SESSIONS must be a whole number, got 'many'",
            ),
            (
                "SAFELIVE_DRAIN_TIMEOUT",
                "nan",
                "SAFELIVE_DRAIN_TIMEOUT must be a positive, finite number of seconds, "
                "got nan",
            ),
            (
                "SAFELIVE_DRAIN_TIMEOUT",
                "-1",
                "positive, finite number of seconds, got -1.0",
            ),
        ]
        for variable, value, message in cases:
            with (
                self.subTest(variable=variable, value=value),
                mock.patch.dict(os.environ, {variable: value}),
            ):
                self.assert_refused(message)

    def test_garbage_in_environment_refused_at_start_up(self) -> None:
        """A bad environment variable stops setUpClass before any thread starts."""

        class Broken(LiveServerTestCase):
            def test_nothing(self) -> None:
                """Never runs."""

        with (
            mock.patch.dict(os.environ, {"SAFELIVE_MODE": "threads"}),
            self.assertRaisesMessage(
                ImproperlyConfigured,
                "the environment variable SAFELIVE_MODE must be 'single' or 'pool', "
                "got 'threads'.",
            ),
        ):
            Broken.setUpClass()
        self.assertFalse(hasattr(Broken, "server_thread"))

    @override_settings(SAFELIVE=["MAX_SESSIONS", 4])
    def test_settings_not_a_dict(self) -> None:
        """SAFELIVE must be a dict."""
        self.assert_refused("settings.SAFELIVE must be a dict, got list.")

    @override_settings(SAFELIVE={"MAX_CONNECTION": 4})
    def test_unknown_settings_key(self) -> None:
        """A misspelt key is refused rather than ignored."""
        self.assert_refused("Unknown key(s) in settings.SAFELIVE: 'MAX_CONNECTION'.")

    @override_settings(SAFELIVE={"MAX_SESSIONS": "eight"})
    def test_bad_settings_value(self) -> None:
        """Bad values in SAFELIVE name the key."""
        self.assert_refused("SAFELIVE['MAX_SESSIONS'] must be an int, got str 'eight'.")

    def test_refused_before_the_server_starts(self) -> None:
        """A bad setting fails in setUpClass, before any thread starts."""

        class Broken(LiveServerTestCase):
            max_sessions = 0

            def test_nothing(self) -> None:
                """Never runs."""

        with self.assertRaisesMessage(
            ImproperlyConfigured, "max_sessions must be at least 1"
        ):
            Broken.setUpClass()
        self.assertFalse(hasattr(Broken, "server_thread"))


def server_slots() -> int:
    """The sessions an ordinary role may open on the test server."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true)::int, 0)"
        )
        return int(cursor.fetchone()[0])


class ServerLimitTests(SimpleTestCase):
    databases = {"default"}

    def setUp(self) -> None:
        # One test process, even when this suite runs under pytest-xdist.
        patcher = mock.patch.dict(os.environ, {"PYTEST_XDIST_WORKER_COUNT": "1"})
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_budget_larger_than_the_server_allows(self) -> None:
        """A budget past PostgreSQL's max_connections is refused before the server."""
        slots = server_slots()

        class Greedy(LiveServerTestCase):
            max_sessions = slots + 1

            def test_nothing(self) -> None:
                """Never runs."""

        with self.assertRaisesMessage(
            ImproperlyConfigured,
            f"budget of {slots + 1} database session(s) per alias is more than the "
            "PostgreSQL server of DATABASES['default'] accepts",
        ) as caught:
            Greedy.setUpClass()
        self.assertIn(
            f"leaves {slots}. Lower MAX_SESSIONS to {slots} or less",
            str(caught.exception),
        )
        self.assertFalse(hasattr(Greedy, "server_thread"))

    def test_budget_the_server_allows(self) -> None:
        """A budget equal to the server's free slots is accepted."""
        config = resolve(owner(max_sessions=server_slots()))
        check_databases(config, ["default"])

    def test_xdist_workers_count_together(self) -> None:
        """Under pytest-xdist the budgets of all workers must fit the server at once."""
        slots = server_slots()
        workers = slots // 8 + 1
        environ = {"PYTEST_XDIST_WORKER_COUNT": str(workers)}
        with (
            mock.patch.dict(os.environ, environ),
            self.assertRaisesMessage(
                ImproperlyConfigured,
                f"8 database session(s) per alias in each of {workers} pytest-xdist "
                f"workers, {8 * workers} in all,",
            ) as caught,
        ):
            check_databases(resolve(owner(max_sessions=8)), ["default"])
        self.assertIn("run fewer xdist workers (-n)", str(caught.exception))
