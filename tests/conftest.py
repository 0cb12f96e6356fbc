from __future__ import annotations

import os
from pathlib import Path

from hypothesis import settings

# No example database on disk: runs stay independent and the tree stays clean.
settings.register_profile("safelive-tests", database=None, deadline=None)
settings.load_profile("safelive-tests")

BACKEND = os.environ.get("SAFELIVE_TEST_DB", "postgres")
# The modules each backend runs. Plain PostgreSQL runs everything but the pool's
# own tests; the other backends run the shared behaviour tests (and the pool its
# own), since the rest read PostgreSQL-only figures such as application_name.
_ONLY = {
    "postgres-pool": ("test_shared.py", "test_pool.py"),
    "mariadb": ("test_shared.py",),
    "sqlite": ("test_shared.py",),
    "sqlite-memory": ("test_shared.py",),
}


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    name = collection_path.name
    if not (name.startswith("test_") and name.endswith(".py")):
        return None
    if BACKEND in _ONLY:
        return name not in _ONLY[BACKEND] or None
    return name == "test_pool.py" or None


def pytest_report_header() -> str:
    modules = ", ".join(_ONLY[BACKEND]) if BACKEND in _ONLY else "all but test_pool.py"
    return f"django-safelive tests: SAFELIVE_TEST_DB={BACKEND}, running {modules}"
