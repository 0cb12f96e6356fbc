"""Run Django's own ``tests/runtests.py`` with our classes swapped in, or the stock
ones, writing every test's outcome to a JSON-lines file as it happens.

Usage (from Django's ``tests`` directory)::

    python django_runner.py path/to/runtests.py [runtests arguments...]

Environment:

- ``SAFELIVE_PEERS_CLASSES``: ``safelive`` (the default) assigns
  ``django.test.LiveServerTestCase``, ``django.test.testcases.LiveServerTestCase``
  and ``django.contrib.staticfiles.testing.StaticLiveServerTestCase`` to
  django-safelive's before any test module imports them, and rebases
  ``django.test.selenium.SeleniumTestCase`` on ours; ``stock`` changes nothing.
- ``SAFELIVE_PEERS_OUTCOMES``: the file that gets one JSON object a line:
  ``{"event": "start", "id": ...}`` when a test starts (so that a run killed
  on a hang names the test it hung in), ``{"event": "outcome", "id": ...,
  "outcome": "passed"|"failed"|"error"|"skipped"|"xfailed"|"xpassed",
  "detail": ...}`` when it ends.
- ``SAFELIVE_PEERS_EXCLUDE``: test ids (one a line) to leave out of the run,
  such as a test an earlier run hung in.
- ``SAFELIVE_PEERS_CHROMIUM``: for ``--selenium=chrome``, the Chromium binary
  (ChromeDriver comes from ``SE_CHROMEDRIVER``, which Selenium reads itself).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import unittest
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

ExcInfo = (
    tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
)

# Chromium as root in a container: the same switches as tests/test_browser.py.
CHROMIUM_ARGUMENTS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

_write_lock = threading.Lock()


def _writer(path: str) -> Callable[[dict[str, str]], None]:
    def write(record: dict[str, str]) -> None:
        with _write_lock, open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")

    return write


def _detail(err: ExcInfo) -> str:
    kind, value = err[0], err[1]
    if kind is None:
        return ""
    lines = str(value).strip().splitlines()
    return f"{kind.__name__}: {lines[0] if lines else ''}"[:300]


def _record_outcomes(path: str) -> None:
    """Make every unittest result (Django's runner's included) log to `path`."""
    write = _writer(path)
    base = unittest.TestResult
    start_test = base.startTest
    add_success = base.addSuccess
    add_failure = base.addFailure
    add_error = base.addError
    add_skip = base.addSkip
    add_expected_failure = base.addExpectedFailure
    add_unexpected_success = base.addUnexpectedSuccess
    add_sub_test = base.addSubTest

    def outcome(test: unittest.TestCase, name: str, detail: str = "") -> None:
        write({"event": "outcome", "id": test.id(), "outcome": name, "detail": detail})

    def startTest(self: unittest.TestResult, test: unittest.TestCase) -> None:
        write({"event": "start", "id": test.id()})
        start_test(self, test)

    def addSuccess(self: unittest.TestResult, test: unittest.TestCase) -> None:
        outcome(test, "passed")
        add_success(self, test)

    def addFailure(
        self: unittest.TestResult, test: unittest.TestCase, err: ExcInfo
    ) -> None:
        outcome(test, "failed", _detail(err))
        add_failure(self, test, err)

    def addError(
        self: unittest.TestResult, test: unittest.TestCase, err: ExcInfo
    ) -> None:
        # A setUpClass failure arrives here too, as "setUpClass (module.Class)".
        outcome(test, "error", _detail(err))
        add_error(self, test, err)

    def addSkip(
        self: unittest.TestResult, test: unittest.TestCase, reason: str
    ) -> None:
        outcome(test, "skipped", reason)
        add_skip(self, test, reason)

    def addExpectedFailure(
        self: unittest.TestResult, test: unittest.TestCase, err: ExcInfo
    ) -> None:
        outcome(test, "xfailed", _detail(err))
        add_expected_failure(self, test, err)

    def addUnexpectedSuccess(
        self: unittest.TestResult, test: unittest.TestCase
    ) -> None:
        outcome(test, "xpassed")
        add_unexpected_success(self, test)

    def addSubTest(
        self: unittest.TestResult,
        test: unittest.TestCase,
        subtest: unittest.TestCase,
        err: ExcInfo | None,
    ) -> None:
        if err is not None and err[0] is not None:
            failed = issubclass(err[0], test.failureException)
            outcome(test, "failed" if failed else "error", _detail(err))
        add_sub_test(self, test, subtest, err)

    patches: dict[str, Any] = {
        "startTest": startTest,
        "addSuccess": addSuccess,
        "addFailure": addFailure,
        "addError": addError,
        "addSkip": addSkip,
        "addExpectedFailure": addExpectedFailure,
        "addUnexpectedSuccess": addUnexpectedSuccess,
        "addSubTest": addSubTest,
    }
    for name, method in patches.items():
        setattr(base, name, method)


def _swap_classes() -> None:
    """Our classes wherever Django's test modules (and Selenium's base) get theirs."""
    import django.test
    import django.test.testcases
    from django.contrib.staticfiles import testing
    from django.test import selenium

    import django_safelive

    swaps: list[tuple[Any, str, Any]] = [
        (django.test, "LiveServerTestCase", django_safelive.LiveServerTestCase),
        (
            django.test.testcases,
            "LiveServerTestCase",
            django_safelive.LiveServerTestCase,
        ),
        (testing, "StaticLiveServerTestCase", django_safelive.StaticLiveServerTestCase),
        # Defined against the stock class when django.test.selenium was imported.
        (
            selenium.SeleniumTestCase,
            "__bases__",
            (django_safelive.LiveServerTestCase,),
        ),
    ]
    for owner, name, value in swaps:
        setattr(owner, name, value)


def _tests_in(suite: Iterable[Any]) -> Iterator[unittest.TestCase]:
    for test in suite:
        if isinstance(test, unittest.TestCase):
            yield test
        else:
            yield from _tests_in(test)


def _exclude(ids: set[str]) -> None:
    """Leave the tests `ids` out of the suite Django's runner builds."""
    from django.test.runner import DiscoverRunner

    build_suite = DiscoverRunner.build_suite

    def build_without(self: DiscoverRunner, *args: Any, **kwargs: Any) -> Any:
        suite = build_suite(self, *args, **kwargs)
        kept = [test for test in _tests_in(suite) if test.id() not in ids]
        return self.test_suite(kept)

    DiscoverRunner.build_suite = build_without  # type: ignore[method-assign]


def _use_chromium(binary: str) -> None:
    """Start Django's Selenium tests' Chrome from `binary`, as root can."""
    from django.test.selenium import SeleniumTestCaseBase

    create_options = SeleniumTestCaseBase.create_options

    def create_chromium_options(self: Any) -> Any:
        options = create_options(self)
        if self.browser == "chrome":
            options.binary_location = binary
            for argument in CHROMIUM_ARGUMENTS:
                options.add_argument(argument)
        return options

    SeleniumTestCaseBase.create_options = create_chromium_options  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    runtests, *arguments = sys.argv[1:]
    runtests = os.path.abspath(runtests)
    outcomes = os.environ.get("SAFELIVE_PEERS_OUTCOMES")
    if outcomes:
        _record_outcomes(outcomes)
    if os.environ.get("SAFELIVE_PEERS_CLASSES", "safelive") == "safelive":
        _swap_classes()
    exclude = set(
        filter(None, os.environ.get("SAFELIVE_PEERS_EXCLUDE", "").splitlines())
    )
    if exclude:
        _exclude(exclude)
    chromium = os.environ.get("SAFELIVE_PEERS_CHROMIUM")
    if chromium:
        _use_chromium(chromium)
    # As if runtests.py had been run itself: its directory first on the path.
    sys.path.insert(0, os.path.dirname(runtests))
    sys.argv = [runtests, *arguments]
    runpy.run_path(runtests, run_name="__main__")


if __name__ == "__main__":
    main()
