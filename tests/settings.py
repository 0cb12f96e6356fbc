"""Settings for django-safelive's own tests; the database comes from the environment.

SAFELIVE_TEST_DB picks the backend: ``postgres`` (the default; Django uses
psycopg 3 when it is installed, psycopg2 otherwise), ``postgres-pool`` (Django
5.1+'s psycopg 3 pool), ``mariadb`` (mysqlclient; MYSQL_HOST/PORT/USER/PASSWORD,
default root@127.0.0.1:3306), ``sqlite`` (a file) or ``sqlite-memory``.
PGHOST, PGPORT and PGUSER locate the server (default 127.0.0.1:5432,
postgres); SAFELIVE_TEST_PG_NAME is the configured NAME (default ``postgres``;
one that does not exist stands for CI, where only the test database will).
SAFELIVE_TEST_CONN_MAX_AGE sets CONN_MAX_AGE (default 600, the
setting under which Django's live server leaks the most sessions).
"""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "django-safelive-tests"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
# The test app's URLs and the ASGI app's async views (tests/asgiapp), which the
# ASGI server's tests serve through ASGI_APPLICATION (Channels' routing).
ROOT_URLCONF = "tests.asgiapp.urls"
ASGI_APPLICATION = "tests.asgiapp.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
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
_test_name = os.environ.get("SAFELIVE_TEST_DB_NAME", "test_safelive")
_conn_max_age = int(os.environ.get("SAFELIVE_TEST_CONN_MAX_AGE", "600"))
_postgres = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": os.environ.get("SAFELIVE_TEST_PG_NAME", "postgres"),
    "USER": os.environ.get("PGUSER", "postgres"),
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
    "CONN_MAX_AGE": _conn_max_age,
    "TEST": {"NAME": _test_name},
}
_BACKENDS: dict[str, dict[str, object]] = {
    "postgres": _postgres,
    # Django 5.1+'s psycopg 3 pool; pooling refuses persistent connections.
    "postgres-pool": {
        **_postgres,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"pool": {"min_size": 1, "max_size": 6}},
    },
    "mariadb": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "test",
        "USER": os.environ.get("MYSQL_USER", "root"),
        "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
        "HOST": os.environ.get("MYSQL_HOST", "127.0.0.1"),
        "PORT": os.environ.get("MYSQL_PORT", "3306"),
        "CONN_MAX_AGE": _conn_max_age,
        "TEST": {"NAME": _test_name},
    },
    # A file database: every worker opens its own connection.
    "sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), f"{_test_name}.base.sqlite3"),
        "CONN_MAX_AGE": _conn_max_age,
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"{_test_name}.sqlite3")},
    },
    # In memory: the live server shares the test thread's connection.
    "sqlite-memory": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "CONN_MAX_AGE": _conn_max_age,
    },
}
if _backend not in _BACKENDS:
    raise RuntimeError(
        f"SAFELIVE_TEST_DB={_backend!r} is not supported; use one of "
        f"{', '.join(map(repr, _BACKENDS))}."
    )
DATABASES = {"default": _BACKENDS[_backend]}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    # The views below fail on purpose in some tests; keep their tracebacks quiet.
    "loggers": {"django.request": {"handlers": ["null"], "propagate": False}},
}
