"""Settings for ``python -m django_safelive doctor`` and ``watch`` in tests.

tests.settings with CONN_MAX_AGE = 600 on the default database. DOCTOR_VARIANT
changes one thing, as a project's settings might:

- ``clean``: CONN_MAX_AGE = 0, nothing to warn about;
- ``pool``: Django's psycopg pool (5.1+) with max_size 20, above the budget;
- ``unreachable``: a second alias on a port where no server listens;
- ``sqlite``: the default database is SQLite, not PostgreSQL.
"""

from __future__ import annotations

import os
from typing import Any

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES as _BASE

_variant = os.environ.get("DOCTOR_VARIANT", "")
_default: dict[str, Any] = {**_BASE["default"], "CONN_MAX_AGE": 600}

DATABASES = {"default": _default}
if _variant == "clean":
    _default["CONN_MAX_AGE"] = 0
elif _variant == "pool":
    # Django refuses a pool with persistent connections.
    _default["CONN_MAX_AGE"] = 0
    _default["OPTIONS"] = {"pool": {"min_size": 1, "max_size": 20}}
elif _variant == "unreachable":
    DATABASES["down"] = {**_default, "PORT": "1"}
elif _variant == "sqlite":
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    }
elif _variant:
    raise RuntimeError(f"DOCTOR_VARIANT={_variant!r} is not one of the above.")
