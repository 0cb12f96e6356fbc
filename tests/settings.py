"""Settings for django-safelive's own tests; the database comes from the environment.

SAFELIVE_TEST_DB picks the backend: ``postgres`` (the default; Django uses
psycopg 3 when it is installed, psycopg2 otherwise). PGHOST, PGPORT and PGUSER
locate the server (default 127.0.0.1:5432, postgres). SAFELIVE_TEST_CONN_MAX_AGE
sets CONN_MAX_AGE (default 600, the setting under which Django's live server
leaks the most sessions).
"""

from __future__ import annotations

import os

SECRET_KEY = "django-safelive-tests"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
ROOT_URLCONF = "tests.testapp.urls"
INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "tests.testapp",
]
# CommonMiddleware sets Content-Length, which lets Django's own server keep
# sockets alive, as in real projects.
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_backend = os.environ.get("SAFELIVE_TEST_DB", "postgres")
if _backend != "postgres":
    raise RuntimeError(
        f"SAFELIVE_TEST_DB={_backend!r} is not supported; use 'postgres'."
    )

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "CONN_MAX_AGE": int(os.environ.get("SAFELIVE_TEST_CONN_MAX_AGE", "600")),
        "TEST": {
            "NAME": os.environ.get("SAFELIVE_TEST_DB_NAME", "test_safelive"),
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    # The views below fail on purpose in some tests; keep their tracebacks quiet.
    "loggers": {"django.request": {"handlers": ["null"], "propagate": False}},
}
