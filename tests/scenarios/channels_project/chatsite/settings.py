"""Settings of a small Channels project: a chat on PostgreSQL.

The database server and names come from the environment: PGHOST, PGPORT,
PGUSER, CHAT_DB_NAME and CHAT_TEST_DB_NAME.
"""

import os

SECRET_KEY = "chatsite-insecure-key-for-tests"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "channels",
    "chat",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CHAT_DB_NAME", "chat"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        # Persistent connections, as in production.
        "CONN_MAX_AGE": 600,
        # Channels' live server process connects to this name itself.
        "TEST": {"NAME": os.environ.get("CHAT_TEST_DB_NAME", "test_chat")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "/static/"

# Server errors go to the console, with their tracebacks.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

# django-safelive's budget of database sessions (only its classes read it).
SAFELIVE = {"MAX_SESSIONS": 6}
