"""Settings of the demo API; the database comes from SAFELIVE_DEMO_DATABASE.

``postgresql://user:password@host:port/dbname`` or ``sqlite:///path``. Like
many real projects' settings, CONN_MAX_AGE is 600: under Django's threaded live
server every keep-alive socket then pins a database session.
"""

from __future__ import annotations

import os

from django_safelive._tools.database_url import parse_url

SECRET_KEY = "django-safelive-demo"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
ROOT_URLCONF = "django_safelive._tools.demo.urls"
INSTALLED_APPS = ["django_safelive._tools.demo.apps.DemoConfig"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The live server test cases serve static files too.
STATIC_URL = "/static/"
# Server errors go to stderr, where the demo counts PostgreSQL's refusals.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "propagate": False}},
}

_url = parse_url(os.environ.get("SAFELIVE_DEMO_DATABASE", "sqlite:///demo.sqlite3"))
_test_name = os.environ.get("SAFELIVE_DEMO_TEST_DB", "test_safelive_demo")
if _url.is_postgresql:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/") or "postgres",
            "USER": _url.user or "postgres",
            "PASSWORD": _url.password or "",
            "HOST": _url.host or "",
            "PORT": str(_url.port or ""),
            "CONN_MAX_AGE": 600,
            "TEST": {"NAME": _test_name},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _url.path or "demo.sqlite3",
            "CONN_MAX_AGE": 600,
            "TEST": {"NAME": _url.path or "demo.sqlite3"},
        }
    }
