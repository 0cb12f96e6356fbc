"""Other projects' own live-server tests, on the stock classes and on ours.

``nox -s peers`` runs ``python -m tests.peers.run`` in an environment with the
newest Django this project tests, pytest-django and django-safelive. It:

1. downloads the sdists of the installed Django and pytest-django (``pip
   download --no-deps --no-binary :all:``) and unpacks them under WORK
   (``.nox/peers-work``, never committed; the session's venv is ``.nox/peers``);
2. runs Django's ``tests/runtests.py servers staticfiles_tests.test_liveserver``
   on SQLite (runtests' default, in-memory, settings) and on PostgreSQL
   (django_settings_postgres.py), once with the stock classes and once per
   server mode (``SAFELIVE_MODE=pool`` and ``single``) with ours swapped in
   (django_runner.py);
3. runs pytest-django's ``TestLiveServer`` tests and
   ``test_django_not_loaded_without_settings`` on its PostgreSQL settings:
   stock in a virtualenv without django-safelive (WORK/stock-venv, the same
   versions), and with our plugin installed, ``--safelive-live-server`` off
   and on (2 and 3 run side by side, on databases of their own);
4. with ``--selenium``, also Django's Selenium admin tests in headless
   Chromium, stock and with ours;
5. compares each run's per-test outcomes with the stock run of its suite and
   backend and with expected.toml, prints a summary table, and exits 1 on any
   difference expected.toml does not list (or when a stock run is broken).

Each run has a deadline: a test that makes no progress for ``--test-timeout``
seconds is recorded as hung, the run is killed and run again without it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the peers session runs on the newest Python
    raise SystemExit("tests/peers/run.py needs Python 3.11+ (tomllib)")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXPECTED = HERE / "expected.toml"

DJANGO_LABELS = ("servers", "staticfiles_tests.test_liveserver")
SELENIUM_LABELS = ("admin_views.tests", "admin_widgets")
PYTEST_DJANGO_TESTS = (
    "tests/test_fixtures.py::TestLiveServer",
    "tests/test_django_settings_module.py::test_django_not_loaded_without_settings",
)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Worse outcomes win when a test reports more than one (a pass, then an error
# in its teardown).
SEVERITY = {
    "passed": 0,
    "skipped": 1,
    "xfailed": 1,
    "xpassed": 2,
    "failed": 3,
    "error": 4,
    "not run": 5,
    "hung": 6,
}
NOT_RUN = "not run"
HUNG = "hung"
# A run whose process died or timed out outside any test.
RUN_ID = "<run>"


@dataclass(frozen=True)
class Run:
    """One run of one suite: ``mode`` is ``stock`` for the comparison run."""

    suite: str
    backend: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.suite}-{self.backend}-{self.mode}"


@dataclass
class Result:
    run: Run
    outcomes: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    hung: list[str] = field(default_factory=list)
    returncode: int | None = None
    seconds: float = 0.0
    logs: list[Path] = field(default_factory=list)

    def count(self, *outcomes: str) -> int:
        return sum(1 for value in self.outcomes.values() if value in outcomes)


@dataclass(frozen=True)
class Difference:
    run: Run
    test: str
    stock: str
    ours: str
    detail: str


@dataclass(frozen=True)
class Expected:
    suite: str
    test: str
    backends: tuple[str, ...]
    modes: tuple[str, ...]
    outcome: str
    status: str
    why: str

    def matches(self, difference: Difference) -> bool:
        run = difference.run
        return (
            self.suite == run.suite
            and self.test == difference.test
            and run.backend in self.backends
            and run.mode in self.modes
            and self.outcome == difference.ours
        )


def load_expected(path: Path = EXPECTED) -> list[Expected]:
    with path.open("rb") as file:
        data = tomllib.load(file)
    entries = []
    for item in data.get("difference", []):
        entries.append(
            Expected(
                suite=item["suite"],
                test=item["test"],
                backends=tuple(item["backends"]),
                modes=tuple(item["modes"]),
                outcome=item["outcome"],
                status=item["status"],
                why=" ".join(item["why"].split()),
            )
        )
    return entries


# -- sources ------------------------------------------------------------------
def _version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def fetch_sources(work: Path) -> dict[str, Path]:
    """Download and unpack the installed Django's and pytest-django's sdists."""
    wanted = {"django": _version("django"), "pytest-django": _version("pytest-django")}
    sdists = work / "sdists"
    sources: dict[str, Path] = {}
    for name, version in wanted.items():
        stem = f"{name.replace('-', '_')}-{version}"
        target = work / "src" / stem
        sources[name] = target
        if (target / ".unpacked").exists():
            continue
        archives = [
            path
            for path in sdists.glob("*.tar.gz")
            if path.name.lower() == f"{stem}.tar.gz".lower()
        ]
        if not archives:
            print(f"peers > downloading the sdist of {name}=={version}", flush=True)
            subprocess.run(
                [
                    sys.executable, "-m", "pip", "download", "--quiet",
                    "--no-deps", "--no-binary", ":all:",
                    f"{name}=={version}", "--dest", str(sdists),
                ],
                check=True,
            )  # fmt: skip
            archives = [
                path
                for path in sdists.glob("*.tar.gz")
                if path.name.lower() == f"{stem}.tar.gz".lower()
            ]
        if not archives:
            raise SystemExit(f"peers: pip download left no {stem}.tar.gz in {sdists}")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            top = archive.getnames()[0].split("/")[0]
            archive.extractall(target.parent, filter="data")
        if (target.parent / top) != target:
            (target.parent / top).rename(target)
        (target / ".unpacked").touch()
    return sources


def stock_python(work: Path) -> Path:
    """A virtualenv with this one's Django, pytest, pytest-django and psycopg,
    and no django-safelive, whose plugin would load in every pytest run."""
    venv = work / "stock-venv"
    python = venv / "bin" / "python"
    pins = [
        f"django=={_version('django')}",
        f"pytest=={_version('pytest')}",
        f"pytest-django=={_version('pytest-django')}",
        f"psycopg[binary]=={_version('psycopg')}",
    ]
    marker = venv / ".pins"
    if python.exists() and marker.exists() and marker.read_text() == "\n".join(pins):
        return python
    print(f"peers > creating {venv} (stock: {', '.join(pins)})", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + pins,
        check=True,
    )
    marker.write_text("\n".join(pins))
    return python


# -- running --------------------------------------------------------------------
def _read_events(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    events = []
    with path.open(encoding="utf-8") as file:
        for line in file:
            if line.endswith("\n"):  # a line being written is read next time
                events.append(json.loads(line))
    return events


def _kill(process: subprocess.Popen[bytes]) -> None:
    """End the run's process group (started with a session of its own)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _attempt(
    command: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    outcomes: Path,
    log: Path,
    test_timeout: float,
    run_timeout: float,
) -> tuple[int | None, str | None]:
    """Run `command` once; (its exit code or None if killed, the test it hung
    in or RUN_ID when it hung outside a test)."""
    outcomes.unlink(missing_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env={**env, "SAFELIVE_PEERS_OUTCOMES": str(outcomes)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = last_progress = time.monotonic()
        seen = 0
        while process.poll() is None:
            time.sleep(0.5)
            events = _read_events(outcomes)
            now = time.monotonic()
            if len(events) != seen:
                seen, last_progress = len(events), now
            if now - last_progress > test_timeout or now - started > run_timeout:
                _kill(process)
                return None, _running_test(events)
        return process.returncode, None


def _running_test(events: Iterable[dict[str, str]]) -> str:
    """The test that started last and has not ended, else RUN_ID."""
    running: str | None = None
    for event in events:
        if event["event"] == "start":
            running = event["id"]
        elif event["id"] == running:
            running = None
    return running or RUN_ID


def execute(
    run: Run,
    command: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    logs: Path,
    test_timeout: float,
    run_timeout: float,
    exclusion_env: str | None,
    max_hangs: int = 3,
) -> Result:
    """Run, and again without each test it hung in (when the runner can leave
    tests out), until it finishes."""
    result = Result(run)
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        log = logs / f"{run.name}.{attempt}.log"
        result.logs.append(log)
        run_env = dict(env)
        if exclusion_env and result.hung:
            run_env[exclusion_env] = "\n".join(result.hung)
        outcomes = logs / f"{run.name}.{attempt}.jsonl"
        returncode, hung = _attempt(
            command, cwd, run_env, outcomes, log, test_timeout, run_timeout
        )
        events = _read_events(outcomes)
        result.outcomes, result.details = {}, {}
        for event in events:
            if event["event"] != "outcome":
                continue
            test, outcome = event["id"], event["outcome"]
            old = result.outcomes.get(test)
            detail = event.get("detail", "")
            if old is None or SEVERITY[outcome] > SEVERITY[old]:
                result.outcomes[test] = outcome
                result.details[test] = detail
            elif outcome == old and detail not in result.details[test]:
                # A test's error, then its teardown's: keep both.
                result.details[test] = f"{result.details[test]} | {detail}"
        result.returncode = returncode
        if hung is None:
            break
        result.hung.append(hung)
        print(f"peers > {run.name}: no progress in {hung}; killed", flush=True)
        if hung == RUN_ID or not exclusion_env or len(result.hung) >= max_hangs:
            break
        print(f"peers > {run.name}: running again without it", flush=True)
    for test in result.hung:
        result.outcomes[test] = HUNG
        result.details[test] = f"no progress for {test_timeout:g} s; killed"
    result.seconds = time.monotonic() - start
    return result


# -- comparing ------------------------------------------------------------------
def differences(result: Result, stock: Result) -> list[Difference]:
    found = []
    for test in sorted(set(stock.outcomes) | set(result.outcomes)):
        if test == RUN_ID and test not in result.outcomes:
            continue
        theirs = stock.outcomes.get(test, NOT_RUN)
        ours = result.outcomes.get(test, NOT_RUN)
        if theirs != ours:
            detail = result.details.get(test, "") or stock.details.get(test, "")
            found.append(Difference(result.run, test, theirs, ours, detail))
    return found


def _short(test: str) -> str:
    return test if len(test) <= 90 else "..." + test[-87:]


def report(
    results: list[Result], stocks: dict[tuple[str, str], Result]
) -> tuple[list[Difference], list[Difference], list[str]]:
    """Print the table and the differences; (expected, unexpected, problems)."""
    expected_entries = load_expected()
    expected: list[Difference] = []
    unexpected: list[Difference] = []
    problems: list[str] = []
    used: set[Expected] = set()
    rows = []
    for result in results:
        run = result.run
        stock = stocks[(run.suite, run.backend)]
        found = [] if result is stock else differences(result, stock)
        surprises = 0
        for difference in found:
            entry = next((e for e in expected_entries if e.matches(difference)), None)
            if entry is None:
                unexpected.append(difference)
                surprises += 1
            else:
                expected.append(difference)
                used.add(entry)
        if result is stock and not result.count("passed"):
            problems.append(f"stock run {run.name} passed no test: see {result.logs}")
        if result is stock and result.hung:
            problems.append(f"stock run {run.name} hung in {result.hung}")
        rows.append(
            (
                run.suite,
                run.backend,
                run.mode,
                str(result.count("passed")),
                str(result.count("failed")),
                str(result.count("error")),
                str(result.count("skipped", "xfailed")),
                str(result.count(HUNG, NOT_RUN)),
                "-" if result is stock else str(len(found)),
                "-" if result is stock else str(surprises),
                f"{result.seconds:.0f}s",
            )
        )
    header = (
        "suite", "backend", "mode", "passed", "failed", "errors", "skipped",
        "hung/not run", "vs stock", "unexpected", "time",
    )  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    print("peers > summary (vs stock: tests whose outcome differs from the stock run)")
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  " + "  ".join(cells).rstrip())

    def show(title: str, items: list[Difference]) -> None:
        if not items:
            return
        print(f"\npeers > {title}")
        for item in items:
            run = item.run
            print(
                f"  [{run.suite} {run.backend} {run.mode}] {_short(item.test)}: "
                f"stock {item.stock}, ours {item.ours}"
            )
            if item.detail:
                print(f"      {item.detail[:200]}")

    show("expected differences (expected.toml)", expected)
    show("UNEXPECTED differences (not in expected.toml)", unexpected)
    ran = {
        (result.run.suite, result.run.backend, result.run.mode) for result in results
    }
    stale = [
        entry
        for entry in expected_entries
        if entry not in used
        and any(
            (entry.suite, backend, mode) in ran
            for backend in entry.backends
            for mode in entry.modes
        )
    ]
    if stale:
        print("\npeers > listed in expected.toml but not seen (fixed? remove them):")
        for entry in stale:
            print(
                f"  [{entry.suite} {'/'.join(entry.backends)} "
                f"{'/'.join(entry.modes)}] {entry.test}: {entry.outcome} "
                f"({entry.status})"
            )
    for problem in problems:
        print(f"\npeers > PROBLEM: {problem}")
    return expected, unexpected, problems


# -- the suites -----------------------------------------------------------------
def _env(extra: dict[str, str], drop: Iterable[str] = ()) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in drop
        and (not key.startswith("SAFELIVE_") or key == "SAFELIVE_PEERS_DB")
    }
    # This directory: the settings, the runner and the pytest plugin.
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")])
    )
    env.update(extra)
    return env


def django_runs(
    source: Path,
    logs: Path,
    args: argparse.Namespace,
    labels: Sequence[str],
    suite: str,
    backends: Sequence[str],
    test_timeout: float,
    extra_args: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> list[Result]:
    tests = source / "tests"
    results = []
    for backend in backends:
        settings = (
            [] if backend == "sqlite" else ["--settings=django_settings_postgres"]
        )
        for mode in ("stock", *args.modes):
            run = Run(suite, backend, mode)
            print(f"peers > {run.name}", flush=True)
            if mode == "stock":
                classes = {"SAFELIVE_PEERS_CLASSES": "stock"}
            else:
                classes = {"SAFELIVE_PEERS_CLASSES": "safelive", "SAFELIVE_MODE": mode}
            env = _env({**(extra_env or {}), **classes})
            command = [
                sys.executable, str(HERE / "django_runner.py"),
                str(tests / "runtests.py"), *settings, "--parallel=1",
                "--noinput", "-v", "2", *extra_args, *labels,
            ]  # fmt: skip
            results.append(
                execute(
                    run,
                    command,
                    tests,
                    env,
                    logs,
                    test_timeout,
                    args.run_timeout,
                    exclusion_env="SAFELIVE_PEERS_EXCLUDE",
                )
            )
    return results


def pytest_django_runs(
    source: Path, logs: Path, args: argparse.Namespace, stock: Path
) -> list[Result]:
    pg = {
        "DJANGO_SETTINGS_MODULE": "pytest_django_test.settings_postgres",
        "TEST_DB_HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "TEST_DB_USER": os.environ.get("PGUSER", "postgres"),
        "PGPORT": os.environ.get("PGPORT", "5432"),
    }
    variants = [
        ("stock", str(stock), []),
        ("switch-off", sys.executable, []),
        ("switch-on", sys.executable, ["--safelive-live-server"]),
    ]
    results = []
    for mode, python, switch in variants:
        run = Run("pytest-django", "postgres", mode)
        print(f"peers > {run.name}", flush=True)
        command = [
            python, "-m", "pytest", "-p", "no:cacheprovider", "-p", "record_pytest",
            "-rfE", *switch, *PYTEST_DJANGO_TESTS,
        ]  # fmt: skip
        results.append(
            execute(
                run,
                command,
                source,
                _env(pg, drop=["PYTEST_ADDOPTS"]),
                logs,
                args.test_timeout,
                args.run_timeout,
                exclusion_env=None,
            )
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".nox" / "peers-work")
    parser.add_argument(
        "--suite",
        action="append",
        choices=["django", "pytest-django", "selenium"],
        help="run only these suites (default: django and pytest-django)",
    )
    parser.add_argument(
        "--selenium",
        action="store_true",
        help="also Django's Selenium admin tests, in headless Chromium",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=["sqlite", "postgres"],
        help="Django's suite on these backends only (default: both)",
    )
    parser.add_argument(
        "--modes", nargs="+", default=["pool", "single"], choices=["pool", "single"]
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=60.0,
        help="seconds without a test ending before a run counts as hung",
    )
    parser.add_argument(
        "--selenium-test-timeout",
        type=float,
        default=300.0,
        help="the same for the Selenium tests (one takes 50 s on its own)",
    )
    parser.add_argument(
        "--run-timeout", type=float, default=1800.0, help="seconds for a whole run"
    )
    args = parser.parse_args(argv)
    suites = args.suite or ["django", "pytest-django"]
    if args.selenium and "selenium" not in suites:
        suites.append("selenium")
    backends = args.backend or ["sqlite", "postgres"]

    work: Path = args.work.resolve()
    logs = work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    sources = fetch_sources(work)
    # Django's suite and pytest-django's (with its stock virtualenv) use
    # databases of their own: run them side by side, each suite's runs in turn.
    lanes: list[Callable[[], list[Result]]] = []
    if "django" in suites:
        lanes.append(
            lambda: django_runs(
                sources["django"],
                logs,
                args,
                DJANGO_LABELS,
                "django",
                backends,
                args.test_timeout,
            )
        )
    if "pytest-django" in suites:
        lanes.append(
            lambda: pytest_django_runs(
                sources["pytest-django"], logs, args, stock_python(work)
            )
        )
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for lane in [pool.submit(lane) for lane in lanes]:
            results += lane.result()
    if "selenium" in suites:
        for binary in (CHROMIUM, CHROMEDRIVER):
            if not os.access(binary, os.X_OK):
                raise SystemExit(
                    f"peers: {binary} not found: install Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)"
                )
        results += django_runs(
            sources["django"],
            logs,
            args,
            SELENIUM_LABELS,
            "django-selenium",
            ["sqlite"],
            args.selenium_test_timeout,
            extra_args=["--selenium=chrome", "--headless"],
            extra_env={
                "SE_CHROMEDRIVER": CHROMEDRIVER,
                "SAFELIVE_PEERS_CHROMIUM": CHROMIUM,
            },
        )
    stocks = {
        (result.run.suite, result.run.backend): result
        for result in results
        if result.run.mode == "stock"
    }
    _, unexpected, problems = report(results, stocks)
    print(f"\npeers > logs and outcomes: {logs}")
    if unexpected or problems:
        print(
            f"peers > FAILED: {len(unexpected)} unexpected difference(s), "
            f"{len(problems)} problem(s)"
        )
        return 1
    print("peers > OK: every difference from the stock classes is expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
