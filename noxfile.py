"""Test matrix and checks. `nox` runs them all; `nox -s tests` just the tests."""

from __future__ import annotations

import re

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "backends", "lint", "mypy", "docs", "coverage"]

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
DRIVERS = {"psycopg2": "psycopg2-binary>=2.9", "psycopg": "psycopg[binary,pool]>=3.1"}
TEST_DEPS = [
    "matplotlib>=3.7",
    "pytest>=8",
    "pytest-django>=4.8",
    "pytest-xdist>=3.5",
    "requests>=2.31",
    "coverage[toml]>=7.4",
]
DEFAULT_PYTHON = "3.13"


def _database_name(session: nox.Session) -> str:
    """A test database of the session's own, so concurrent runs never collide."""
    return "test_safelive_" + re.sub(r"\W+", "_", session.name).strip("_")[:40]


def _install(session: nox.Session, django: str, driver: str) -> None:
    session.install(
        f"django~={django}.0",
        DRIVERS[driver],
        "-e",
        ".[hypothesis,schemathesis]",
        *TEST_DEPS,
    )


@nox.session
@nox.parametrize(
    ("python", "django", "driver"),
    MATRIX,
    ids=[f"py{py}-django{dj}-{drv}" for py, dj, drv in MATRIX],
)
def tests(session: nox.Session, django: str, driver: str) -> None:
    """Run the test suite against real PostgreSQL."""
    _install(session, django, driver)
    newest = (session.python, django, driver) == MATRIX[-1]
    if newest:
        # watch and doctor fall back to psycopg2 without psycopg 3: test that too.
        session.install(DRIVERS["psycopg2"])
    session.run(
        "coverage", "run", "-m", "pytest", *session.posargs,
        env={
            "PYTHONDEVMODE": "1",
            "COVERAGE_FILE": f".coverage.{session.name}",
            "SAFELIVE_TEST_DB_NAME": _database_name(session),
            # The command-line tools' tests run once, on the newest pair.
            "SAFELIVE_TEST_TOOLING": "1" if newest else "0",
        },
    )  # fmt: skip


# The shared behaviour tests on every other backend (tests/conftest.py picks
# the modules each runs): (SAFELIVE_TEST_DB, Django, database driver).
BACKENDS = [
    ("postgres-pool", "6.1", DRIVERS["psycopg"]),
    ("mariadb", "6.1", "mysqlclient>=2.2"),
    ("sqlite", "6.1", None),
    ("sqlite-memory", "6.1", None),
]


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize(
    ("backend", "django", "driver"), BACKENDS, ids=[b for b, _, _ in BACKENDS]
)
def backends(
    session: nox.Session, backend: str, django: str, driver: str | None
) -> None:
    """The shared behaviour tests on the psycopg pool, MariaDB and SQLite."""
    session.install(
        f"django~={django}.0",
        *([driver] if driver else []),
        # The sampler and the watch command read PostgreSQL with psycopg.
        DRIVERS["psycopg"],
        "-e",
        ".[hypothesis,schemathesis]",
        *TEST_DEPS,
    )
    session.run(
        "coverage", "run", "-m", "pytest", *session.posargs,
        env={
            "PYTHONDEVMODE": "1",
            "COVERAGE_FILE": f".coverage.{session.name}",
            "SAFELIVE_TEST_DB": backend,
            "SAFELIVE_TEST_DB_NAME": _database_name(session),
        },
    )  # fmt: skip


@nox.session(python=DEFAULT_PYTHON)
def coverage(session: nox.Session) -> None:
    """Combine the test sessions' coverage and report it."""
    session.install("coverage[toml]>=7.4")
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=DEFAULT_PYTHON)
def mypy(session: nox.Session) -> None:
    """mypy --strict with django-stubs."""
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


@nox.session(python=DEFAULT_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site; any Sphinx warning is an error."""
    # pytest-django: the API reference documents the pytest fixture's class.
    session.install(
        "sphinx>=7", "furo", "myst-parser>=2", "pytest-django>=4.8", "-e", ".[all]"
    )
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=DEFAULT_PYTHON)
def stress(session: nox.Session) -> None:
    """Faults and load at full counts: 32 clients x 1,000 requests, 200 cycles."""
    _install(session, "6.1", "psycopg")
    session.run(
        "pytest", "tests/test_faults.py", "tests/test_load.py",
        "tests/test_security.py", "tests/test_config.py", *session.posargs,
        env={
            "PYTHONDEVMODE": "1",
            "SAFELIVE_STRESS": "1",
            "SAFELIVE_TEST_DB_NAME": _database_name(session),
        },
    )  # fmt: skip


@nox.session(python=DEFAULT_PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: `python -m django_safelive demo` in a fresh environment."""
    session.install("-e", ".[all]")
    session.run("python", "-m", "django_safelive", "demo", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def bench(session: nox.Session) -> None:
    """Stock Django vs django-safelive single/pool-2/4/8 vs Schemathesis from_wsgi:
    requests/s, sessions, Schemathesis time, drain; --json, --plot."""
    _install(session, "6.1", "psycopg")
    session.install("waitress", "cheroot")
    session.run(
        "python", "-m", "benchmarks", *session.posargs,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings"},
    )  # fmt: skip
