"""The server to watch: from --database-url, DATABASE_URL or Django's settings,
and the session to it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from django_safelive._tools.database_url import display_url, parse_url, server_address
from django_safelive._tools.messages import ToolError, one_line

APPLICATION_NAME = "django-safelive watch"


@dataclass(frozen=True)
class Target:
    """Connection parameters for the sampler, and how to show them safely."""

    params: dict[str, Any]
    shown: str  # a URL with the password masked
    source: str  # where it came from, to say what to change

    @property
    def address(self) -> str:
        return server_address(self.params.get("host"), self.params.get("port"))


def _params(
    user: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        **(extra or {}),
        "host": host or None,
        "port": port or None,
        "user": user or None,
        "password": password or None,
        # Always the maintenance database: pg_stat_activity shows every database,
        # and a test database being dropped must not have us connected to it.
        "dbname": "postgres",
        "application_name": APPLICATION_NAME,
        "connect_timeout": 5,
    }


def target_from_url(url: str, source: str) -> Target:
    """Parse a ``postgres://`` or ``postgresql://`` URL; the database path is unused."""
    try:
        parsed = parse_url(url)
    except ValueError as error:
        raise ToolError(f"bad database URL from {source}: {error}") from None
    if not parsed.is_postgresql:
        scheme = parsed.scheme or "no scheme"
        raise ToolError(
            f"the database URL from {source} uses {scheme!r}; watch reads "
            "PostgreSQL's pg_stat_activity, so give a postgres:// or postgresql:// "
            "URL, e.g. --database-url postgresql://postgres@127.0.0.1:5432/"
        )
    params = _params(
        parsed.user, parsed.password, parsed.host, parsed.port, parsed.query
    )
    return Target(params, parsed.shown, source)


def target_from_settings() -> Target:
    """The server of the ``default`` alias in DJANGO_SETTINGS_MODULE."""
    module = os.environ["DJANGO_SETTINGS_MODULE"]
    source = f"settings.DATABASES['default'] of DJANGO_SETTINGS_MODULE={module}"
    try:
        import django
        from django.conf import settings
        from django.db import connections

        django.setup()
        if "default" not in settings.DATABASES:
            raise ToolError(f"{source} is not set; pass --database-url")
        default: dict[str, Any] = dict(settings.DATABASES["default"])
        vendor = connections["default"].vendor
    except ToolError:
        raise
    except Exception as error:
        raise ToolError(
            f"cannot load DJANGO_SETTINGS_MODULE={module}: {one_line(error)}"
        ) from None
    if vendor != "postgresql":
        raise ToolError(
            f"{source} uses {default.get('ENGINE')!r} ({vendor}), not PostgreSQL; "
            "pass --database-url postgresql://user@host:port/ instead"
        )
    port = int(default["PORT"]) if str(default.get("PORT") or "").isdigit() else None
    user, password = default.get("USER"), default.get("PASSWORD")
    host = default.get("HOST")
    shown = display_url(user, password, host, port)
    return Target(_params(user, password, host, port), shown, source)


def find_target(url: str | None) -> Target:
    """--database-url, else DATABASE_URL, else the settings' default alias."""
    if url is not None:
        return target_from_url(url, "--database-url")
    if os.environ.get("DATABASE_URL"):
        return target_from_url(os.environ["DATABASE_URL"], "DATABASE_URL")
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return target_from_settings()
    raise ToolError(
        "no database to watch: pass --database-url postgresql://user@host:port/, "
        "or set DATABASE_URL or DJANGO_SETTINGS_MODULE"
    )


def connect(target: Target) -> Any:
    """An autocommit connection to the target's ``postgres`` database."""
    try:
        import psycopg
    except ImportError:
        import psycopg2

        driver_error: type[Exception] = psycopg2.Error
        try:
            connection = psycopg2.connect(**target.params)
        except driver_error as error:
            raise _unreachable(target, error) from None
        connection.autocommit = True
        return connection
    try:
        return psycopg.connect(**target.params, autocommit=True)
    except psycopg.Error as error:
        raise _unreachable(target, error) from None


def _unreachable(target: Target, error: Exception) -> ToolError:
    return ToolError(
        f"cannot connect to PostgreSQL at {target.address} ({target.shown}, from "
        f"{target.source}): {one_line(error)} -- start PostgreSQL there, or point "
        "--database-url (or DATABASE_URL) at the server your command uses"
    )
