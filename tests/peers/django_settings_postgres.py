# Settings for running Django's own test suite (tests/runtests.py) on
# PostgreSQL, in the style of Django's tests/test_sqlite.py; run.py passes
# --settings=django_settings_postgres with this directory on PYTHONPATH.
#
# The server is the one at PGHOST:PGPORT (default 127.0.0.1:5432), user
# postgres (PGUSER), trust authentication. Django connects to the "postgres"
# database to create the test databases, so NAME need not exist; TEST NAME is
# ours, so that a run never touches another's test database.
from __future__ import annotations

import os

_PREFIX = os.environ.get("SAFELIVE_PEERS_DB", "test_safelive_peers")
_SERVER = {
    "ENGINE": "django.db.backends.postgresql",
    "USER": os.environ.get("PGUSER", "postgres"),
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
}

DATABASES = {
    "default": {
        **_SERVER,
        "NAME": "django_safelive_peers",
        "TEST": {"NAME": f"{_PREFIX}_default"},
    },
    "other": {
        **_SERVER,
        "NAME": "django_safelive_peers_other",
        "TEST": {"NAME": f"{_PREFIX}_other"},
    },
}

SECRET_KEY = "django_tests_secret_key"

# Use a fast hasher to speed up tests.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
]

USE_TZ = False
