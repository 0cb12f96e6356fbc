"""Test matrix and checks. `nox` runs them all; `nox -s tests` just the tests.

Works on a machine with one supported Python and no database running:

- each session's interpreter is looked for on PATH, in pyenv's and in uv's
  installed versions (never downloaded); a session whose Python is missing is
  skipped with one line, or fails where the ``CI`` variable is set;
- when no PostgreSQL answers at PGHOST:PGPORT (default 127.0.0.1:5432), a
  throwaway cluster is started there for the run and removed afterwards; the
  same for MariaDB at MYSQL_HOST:MYSQL_PORT (default 127.0.0.1:3306), whose
  session is skipped locally (and fails on CI) without the server binaries.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = [
    "tests",
    "backends",
    "peers",
    "lint",
    "mypy",
    "docs",
    "coverage",
]

ROOT = Path(__file__).resolve().parent
ON_CI = bool(os.environ.get("CI"))
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")

# Explicit (Python, Django, driver) triples: every supported pair once, the
# PostgreSQL driver alternating so both are tested on every Django series.
MATRIX = [
    ("3.10", "4.2", "psycopg2"),
    ("3.11", "4.2", "psycopg"),
    ("3.12", "4.2", "psycopg2"),
    ("3.10", "5.2", "psycopg"),
    ("3.11", "5.2", "psycopg2"),
    ("3.12", "5.2", "psycopg"),
    ("3.13", "5.2", "psycopg2"),
    ("3.12", "6.0", "psycopg2"),
    ("3.13", "6.0", "psycopg"),
    ("3.12", "6.1", "psycopg2"),
    ("3.13", "6.1", "psycopg"),
]
# The pairs measured by coverage (see `tests`): the oldest Django with
# psycopg2 on Python 3.12, and the newest pair. Not 3.10 or 3.11: there
# sys.settrace() is not reentrant across threads (CPython gh-98257, fixed in
# 3.12), and under coverage, which installs a tracer in every new thread, a
# thread started at the wrong moment dies before it runs ("Cannot install a
# trace function while another trace function is being installed").
COVERED = (MATRIX[2], MATRIX[-1])
DRIVERS = {"psycopg2": "psycopg2-binary>=2.9", "psycopg": "psycopg[binary,pool]>=3.1"}
TEST_DEPS = [
    "matplotlib>=3.7",
    "pytest>=8",
    "pytest-django>=4.8",
    "pytest-xdist>=3.5",
    "requests>=2.31",
    "coverage[toml]>=7.4",
    "pytest-cov>=5",
    "selenium>=4.11",
    "pytest-timeout>=2.3",
    # A WebSocket client for the ASGI server's tests.
    "websockets>=12",
    # Channels' own ChannelsLiveServerTestCase (channels.testing imports it),
    # which tests/test_channels_swap.py runs beside ours.
    "daphne>=4",
    # The API of the benchmark's --newuser suite (tests/benchmarks/ninjaapp),
    # which tests/test_benchmarks.py runs once.
    "django-ninja>=1.3",
]
# Seconds one test may take, set-up and teardown included, before pytest-timeout
# ends its xdist worker: the slowest (the benchmark's smoke runs) take 1-2 min.
PER_TEST_TIMEOUT = 600
# pytest-xdist workers per test session, each with a test database of its own.
# Three on two cores: the tests wait on servers, clients and subprocesses often
# enough that a third worker fills the gaps (a pair took 69-75 s, not 81-83).
TEST_PROCESSES = os.environ.get("SAFELIVE_TEST_PROCESSES", "3")
# Many tests start Python subprocesses (a pytest run on Django's server and on
# ours). Without bytecode caches each recompiles every module it imports and
# pytest rewrites every plugin's asserts again: about 6 s of CPU per process.
# The caches go under .nox/, so the checkout stays clean.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / ".nox" / "pycache"))


# -- interpreters ---------------------------------------------------------------
def _version_of(executable: str) -> str | None:
    """`executable`'s "X.Y", or None when it does not run (a pyenv shim whose
    version is not selected, say)."""
    try:
        done = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _candidates(version: str) -> list[str]:
    """Where an interpreter for `version` may be: PATH, pyenv, uv, newest first."""
    found = [sys.executable, shutil.which(f"python{version}") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    uv_root = os.environ.get("UV_PYTHON_INSTALL_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"),
        "uv",
        "python",
    )
    patterns = [
        f"{pyenv_root}/versions/{version}.*/bin/python{version}",
        f"{uv_root}/cpython-{version}.*/bin/python{version}",
    ]
    for pattern in patterns:
        # The highest patch release first: 3.12.10 sorts after 3.12.9.
        found += sorted(
            glob.glob(pattern),
            key=lambda path: [int(n) for n in re.findall(r"\d+", path)],
            reverse=True,
        )
    return [path for path in found if path]


def find_python(version: str) -> str | None:
    """The path of a working Python `version` on this machine, or None."""
    for candidate in _candidates(version):
        if _version_of(candidate) == version:
            return candidate
    return None


PYTHONS = {version: find_python(version) for version in SUPPORTED}


def _python(version: str) -> str | bool:
    # False: run the session without a virtualenv, so that it can skip itself.
    return PYTHONS[version] or False


def _newest(minimum: str = SUPPORTED[0]) -> str | None:
    """The newest supported Python found that is at least `minimum`, if any."""
    found = [PYTHONS[v] for v in SUPPORTED if PYTHONS[v] and _key(v) >= _key(minimum)]
    return found[-1] if found else None


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


RUNNING = "{}.{}".format(*sys.version_info[:2])
# The demo: the Python running nox when it is supported, else the newest found.
DEMO_PYTHON = sys.executable if RUNNING in SUPPORTED else _newest()
# Lint, mypy, docs and coverage: any supported Python will do, the newest found.
TOOLS_PYTHON = _newest()
# Sessions on Django 6.1, which needs Python 3.12 or newer.
DJANGO = "6.1"
DJANGO_PYTHON = _newest("3.12")


def _skip_or_fail(session: nox.Session, message: str) -> NoReturn:
    """Skip the session locally; fail it on CI, where everything is required."""
    if ON_CI:
        session.error(message)
    session.skip(message)


def _require(session: nox.Session, interpreter: str | None, needed: str) -> None:
    """Skip the session (fail it on CI) when no suitable Python was found."""
    if interpreter is None:
        _skip_or_fail(
            session,
            f"no {needed} found (looked on PATH, in pyenv's and uv's versions): "
            "install one to run this session",
        )


def _require_python(session: nox.Session, version: str) -> None:
    """Skip the session (fail it on CI) when Python `version` is not installed."""
    _require(session, PYTHONS[version], f"Python {version}")


# -- databases ------------------------------------------------------------------
def _load_cluster_module() -> ModuleType:
    """django_safelive/_tools/cluster.py, which needs only the standard library,
    loaded without the package (whose import needs Django)."""
    path = ROOT / "django_safelive" / "_tools" / "cluster.py"
    spec = importlib.util.spec_from_file_location("_safelive_cluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_INSTALL = {
    "PostgreSQL": "postgresql (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql)",
    "MariaDB": "mariadb-server (Debian/Ubuntu: apt-get install mariadb-server; "
    "macOS: brew install mariadb)",
}
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# server name -> None when it answers or runs, else why it cannot be had
_database_state: dict[str, str | None] = {}
_throwaway: list[Any] = []


def _address(server: str) -> tuple[str, int]:
    if server == "PostgreSQL":
        return os.environ.get("PGHOST", "127.0.0.1"), int(
            os.environ.get("PGPORT", "5432")
        )
    return os.environ.get("MYSQL_HOST", "127.0.0.1"), int(
        os.environ.get("MYSQL_PORT", "3306")
    )


def _bring_up(server: str) -> str | None:
    """Make `server` answer at its configured address; None, or why it can't."""
    cluster = _load_cluster_module()
    host, port = _address(server)
    if cluster.listening(host, port):
        return None
    where = f"{host}:{port}"
    if host not in _LOCAL_HOSTS:
        return f"no {server} answers at {where}, and it is not this machine"
    try:
        if server == "PostgreSQL":
            started = cluster.Cluster(max_connections=100, port=port)
        else:
            started = cluster.MariaDBServer(port=port)
    except cluster.ClusterError:
        return (
            f"no {server} answers at {where} and no server binaries were "
            f"found to start one: install {_INSTALL[server]}"
        )
    print(
        f"nox > no {server} at {where}: starting a throwaway server there "
        "for this run (removed at the end)",
        flush=True,
    )
    started.start()
    _throwaway.append(started)
    return None


@atexit.register
def _stop_throwaway_servers() -> None:
    while _throwaway:
        _throwaway.pop().stop()


def _require_database(session: nox.Session, server: str, *, skippable: bool) -> None:
    """Make sure `server` answers, starting a throwaway one if needed.

    Without it: fail, or skip locally when `skippable` (only on CI is every
    backend required).
    """
    if server not in _database_state:
        _database_state[server] = _bring_up(server)
    problem = _database_state[server]
    if problem is None:
        return
    if skippable:
        _skip_or_fail(session, problem)
    missing = [name for name, state in _database_state.items() if state]
    if len(missing) > 1:
        problem = "no database server to test against: install " + " and ".join(
            _INSTALL[name] for name in missing
        )
    session.error(problem)


def _mysqlclient_headers() -> bool:
    """Whether mysqlclient (built from source on Linux and macOS) can find the
    MariaDB/MySQL client library it builds against, the way its setup does."""
    if shutil.which("mariadb_config") or shutil.which("mysql_config"):
        return True
    if not shutil.which("pkg-config"):
        return False
    return any(
        subprocess.run(["pkg-config", "--exists", name]).returncode == 0
        for name in ("mysqlclient", "libmariadb")
    )


def _require_mysqlclient_headers(session: nox.Session) -> None:
    """Skip the session (fail it on CI) when mysqlclient cannot be built."""
    if not _mysqlclient_headers():
        _skip_or_fail(
            session,
            "mysqlclient cannot be built: its client library headers are missing "
            "(Debian/Ubuntu: apt-get install libmariadb-dev pkg-config; "
            "macOS: brew install mariadb-connector-c pkg-config)",
        )


# -- sessions -------------------------------------------------------------------
def _database_name(session: nox.Session) -> str:
    """A test database of the session's and the checkout's own, so that
    concurrent runs (of two sessions, or of one in two clones) never collide.

    At most 45 characters, as PostgreSQL refuses names over 63: pytest-xdist's
    workers add ``_gw0``, and tests derive databases of their own from it
    (``<name>_bench_<8 hex digits>``, say).
    """
    name = session.name.replace("django", "dj").replace("psycopg", "pg")
    name = re.sub(r"\W+", "_", name).strip("_")[:24]
    checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:6]
    return f"test_safelive_{name}_{checkout}"


def _install(session: nox.Session, django: str, driver: str) -> None:
    session.install(
        f"django~={django}.0",
        DRIVERS[driver],
        "-e",
        ".[hypothesis,schemathesis,channels]",
        *TEST_DEPS,
    )


def _pytest(session: nox.Session, env: dict[str, str], *, cover: bool = True) -> None:
    """pytest in TEST_PROCESSES workers unless told otherwise; under coverage
    when `cover`."""
    # A class's tests on one worker (tests/conftest.py's work_unit), so that its
    # live server starts once; the module-level tests spread over the workers.
    workers = [] if session.posargs else ["-n", TEST_PROCESSES]
    # pytest-cov measures the pytest-xdist workers, where the tests run (not the
    # tools' and scenarios' own subprocesses); `nox -s coverage` combines.
    coverage = ["--cov", "--cov-report="] if cover else []
    # A test that hangs (a client thread that never reaches its barrier, say)
    # fails after PER_TEST_TIMEOUT with every thread's stack, and its xdist
    # worker is replaced, instead of holding the whole run until CI's limit.
    timeout = [f"--timeout={PER_TEST_TIMEOUT}", "--timeout-method=thread"]
    session.run(
        "pytest", *coverage, *workers, *timeout, *session.posargs,
        env={
            "PYTHONDEVMODE": "1",
            "COVERAGE_FILE": f".coverage.{session.name}",
            "SAFELIVE_TEST_DB_NAME": _database_name(session),
            **env,
        },
    )  # fmt: skip


@nox.session
@nox.parametrize(
    ("python", "version", "django", "driver"),
    [(_python(py), py, dj, drv) for py, dj, drv in MATRIX],
    ids=[f"py{py}-django{dj}-{drv}" for py, dj, drv in MATRIX],
)
def tests(session: nox.Session, version: str, django: str, driver: str) -> None:
    """Run the test suite against real PostgreSQL."""
    _require_python(session, version)
    _require_database(session, "PostgreSQL", skippable=False)
    _install(session, django, driver)
    newest = (version, django, driver) == MATRIX[-1]
    if newest:
        # watch and doctor fall back to psycopg2 without psycopg 3: test that too.
        session.install(DRIVERS["psycopg2"])
    # The tests that do not depend on Django or the driver run once, on the
    # newest pair (tests/conftest.py lists them).
    once = {"SAFELIVE_TEST_ONCE": "1" if newest else "0"}
    # Coverage tracing costs about a fifth of a session's time. The oldest
    # Django with psycopg2, the newest pair with psycopg 3 and the backends
    # between them reach every Django- and driver-dependent branch.
    _pytest(session, once, cover=(version, django, driver) in COVERED)


# The shared behaviour tests on every other backend (tests/conftest.py picks
# the modules each runs): (SAFELIVE_TEST_DB, Django, database driver).
BACKENDS = [
    ("postgres-pool", DJANGO, DRIVERS["psycopg"]),
    ("mariadb", DJANGO, "mysqlclient>=2.2"),
    ("sqlite", DJANGO, None),
    ("sqlite-memory", DJANGO, None),
]


@nox.session(python=DJANGO_PYTHON or False)
@nox.parametrize(
    ("backend", "django", "driver"), BACKENDS, ids=[b for b, _, _ in BACKENDS]
)
def backends(
    session: nox.Session, backend: str, django: str, driver: str | None
) -> None:
    """The shared behaviour tests on the psycopg pool, MariaDB and SQLite."""
    _require(session, DJANGO_PYTHON, f"Python 3.12+ (for Django {DJANGO})")
    # The sampler and the watch command read PostgreSQL, whatever the backend.
    _require_database(session, "PostgreSQL", skippable=False)
    if backend == "mariadb":
        _require_database(session, "MariaDB", skippable=True)
        _require_mysqlclient_headers(session)
    session.install(
        f"django~={django}.0",
        *([driver] if driver else []),
        DRIVERS["psycopg"],
        "-e",
        ".[hypothesis,schemathesis,channels]",
        *TEST_DEPS,
    )
    _pytest(session, {"SAFELIVE_TEST_DB": backend})


@nox.session(python=TOOLS_PYTHON or False)
def coverage(session: nox.Session) -> None:
    """Combine the test sessions' coverage and report it."""
    _require(session, TOOLS_PYTHON, "supported Python")
    session.install("coverage[toml]>=7.4")
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


@nox.session(python=TOOLS_PYTHON or False)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    _require(session, TOOLS_PYTHON, "supported Python")
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=TOOLS_PYTHON or False)
def mypy(session: nox.Session) -> None:
    """mypy --strict with django-stubs."""
    _require(session, TOOLS_PYTHON, "supported Python")
    session.install(
        "mypy",
        "django-stubs",
        "types-requests",
        "nox",
        DRIVERS["psycopg"],
        "-e",
        ".[all]",
        *TEST_DEPS,
    )
    session.run("mypy")


@nox.session(python=TOOLS_PYTHON or False)
def docs(session: nox.Session) -> None:
    """Build the documentation site; any Sphinx warning is an error."""
    _require(session, TOOLS_PYTHON, "supported Python")
    # pytest-django: the API reference documents the pytest fixture's class.
    session.install(
        "sphinx>=7", "furo", "myst-parser>=2", "pytest-django>=4.8", "-e", ".[all]"
    )
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=DJANGO_PYTHON or False)
def stress(session: nox.Session) -> None:
    """Faults and load at full counts: 32 clients x 1,000 requests, 200 cycles."""
    _require(session, DJANGO_PYTHON, f"Python 3.12+ (for Django {DJANGO})")
    _require_database(session, "PostgreSQL", skippable=False)
    _install(session, DJANGO, "psycopg")
    session.run(
        "pytest", "tests/test_faults.py", "tests/test_load.py",
        "tests/test_security.py", "tests/test_config.py", *session.posargs,
        env={
            "PYTHONDEVMODE": "1",
            "SAFELIVE_STRESS": "1",
            "SAFELIVE_TEST_DB_NAME": _database_name(session),
        },
    )  # fmt: skip


@nox.session(python=DEMO_PYTHON or False)
def demo(session: nox.Session) -> None:
    """The main job: `python -m django_safelive demo` in a fresh environment."""
    _require(session, DEMO_PYTHON, "supported Python")
    session.install("-e", ".[all]")
    session.run("python", "-m", "django_safelive", "demo", *session.posargs)


@nox.session(python=DJANGO_PYTHON or False)
def peers(session: nox.Session) -> None:
    """Django's and pytest-django's own live-server tests, from their sdists, on
    the stock classes and on ours (both modes, SQLite and PostgreSQL); fails on
    a difference tests/peers/expected.toml does not list. `-- --selenium` adds
    Django's Selenium admin tests in headless Chromium."""
    _require(session, DJANGO_PYTHON, f"Python 3.12+ (for Django {DJANGO})")
    _require_database(session, "PostgreSQL", skippable=False)
    _install(session, DJANGO, "psycopg")
    # pip downloads the sdists and fills the stock (django-safelive-free) venv.
    session.install("pip")
    session.run("python", "-m", "tests.peers.run", *session.posargs)


@nox.session(python=DJANGO_PYTHON or False)
def bench(session: nox.Session) -> None:
    """Django's live server (CONN_MAX_AGE 0 and 600, psycopg pool) vs
    django-safelive single/pool-4 vs Schemathesis from_wsgi: latency and
    requests/s on fresh and keep-alive connections, sessions, Schemathesis
    time, reset cost, drain, targets; --json, --plot, --markdown. With --asgi:
    Channels' ChannelsLiveServerTestCase (Daphne) vs ours on the ASGI app; with
    --classes: a test case class's server start and stop, Django's vs ours."""
    _require(session, DJANGO_PYTHON, f"Python 3.12+ (for Django {DJANGO})")
    _require_database(session, "PostgreSQL", skippable=False)
    _install(session, DJANGO, "psycopg")
    # daphne: Channels' ChannelsLiveServerTestCase runs it (--asgi only; the
    # test sessions leave it out, so the ASGI tests never depend on it).
    session.install("waitress", "cheroot", "daphne")
    session.run(
        "python", "-m", "tests.benchmarks", *session.posargs,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings"},
    )  # fmt: skip
