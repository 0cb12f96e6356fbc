"""Database URLs (``postgresql://user:password@host:port/name``): parsed in one
place for the tools, and shown with the password masked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit


@dataclass(frozen=True)
class DatabaseURL:
    """The parts of a database URL, unquoted."""

    scheme: str  # lowercase
    user: str | None
    password: str | None
    host: str | None
    port: int | None
    path: str  # for SQLite the file; for PostgreSQL "/" and the database's name
    query: dict[str, str]

    @property
    def is_postgresql(self) -> bool:
        return self.scheme in ("postgres", "postgresql")

    @property
    def shown(self) -> str:
        """The server's URL with the password masked, for messages and reports."""
        return display_url(self.user, self.password, self.host, self.port)


def parse_url(url: str) -> DatabaseURL:
    """The parts of `url`; ValueError, whose message never holds the password,
    when it cannot be parsed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        # Some of urlsplit's messages quote the whole user:password@host part.
        raise ValueError(_masked(str(error), url)) from None
    return DatabaseURL(
        scheme=parts.scheme,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        host=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        path=unquote(parts.path),
        query=dict(parse_qsl(parts.query)),
    )


def _masked(text: str, url: str) -> str:
    """`text` with the password of `url`, found as urlsplit finds it, as ***."""
    netloc = re.split(r"[/?#]", url.partition("//")[2], maxsplit=1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    password = userinfo.partition(":")[2]
    return text.replace(password, "***") if at and password else text


def display_url(
    user: str | None, password: str | None, host: str | None, port: int | None
) -> str:
    """A ``postgresql://`` URL of the server, with ``***`` for any password."""
    credentials = quote(user or "", safe="") + (":***" if password else "")
    at = "@" if credentials else ""
    location = (host or "") + (f":{port}" if port else "")
    return f"postgresql://{credentials}{at}{location}/"


def server_address(host: str | None, port: int | str | None) -> str:
    """``host:port`` of a PostgreSQL server, with libpq's default port."""
    return f"{host or 'the default host'}:{port or 5432}"
