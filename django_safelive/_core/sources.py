"""Where each django-safelive setting comes from, and how its value is read:
the environment wins over the class attribute, which wins over
``settings.SAFELIVE``; the names of 0.1 are still read, with a warning."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

Mode = Literal["single", "pool"]
MODES: tuple[Mode, ...] = ("single", "pool")

# setting key -> (class attribute, environment variable)
_SOURCES: dict[str, tuple[str | None, str]] = {
    "MAX_SESSIONS": ("max_sessions", "SAFELIVE_MAX_SESSIONS"),
    # The whole run's budget, split across pytest-xdist workers: no class attribute.
    "TOTAL_MAX_SESSIONS": (None, "SAFELIVE_TOTAL_MAX_SESSIONS"),
    "MODE": ("server_mode", "SAFELIVE_MODE"),
    "WORKERS": ("server_workers", "SAFELIVE_WORKERS"),
    # The ASGI server's workers for WebSocket connections, which share them.
    "WEBSOCKET_WORKERS": ("websocket_workers", "SAFELIVE_WEBSOCKET_WORKERS"),
    "DRAIN_TIMEOUT": ("drain_timeout", "SAFELIVE_DRAIN_TIMEOUT"),
    "TRACE": ("trace", "SAFELIVE_TRACE"),
    "SESSION_PER_REQUEST": ("session_per_request", "SAFELIVE_SESSION_PER_REQUEST"),
    # Sessions shared by every process on one PostgreSQL server, and how long
    # a process waits for its share: facts of the run, not of a test class.
    "SERVER_BUDGET": (None, "SAFELIVE_SERVER_BUDGET"),
    "SERVER_BUDGET_TIMEOUT": (None, "SAFELIVE_SERVER_BUDGET_TIMEOUT"),
    # The names of 0.1, still read, with a DeprecationWarning (see _RENAMED).
    "MAX_CONNECTIONS": ("max_connections", "SAFELIVE_MAX_CONNECTIONS"),
    "TOTAL_MAX_CONNECTIONS": (None, "SAFELIVE_TOTAL_MAX_CONNECTIONS"),
}
# new key -> its name in 0.1: the budget counts database sessions, as the
# assertions and errors always said.
_RENAMED = {
    "MAX_SESSIONS": "MAX_CONNECTIONS",
    "TOTAL_MAX_SESSIONS": "TOTAL_MAX_CONNECTIONS",
}


def where(key: str, source: str) -> str:
    """How messages name the place `key` was set: ``"env"``, ``"class"`` or
    ``"settings"`` (the environment variable, the class attribute, the
    ``SAFELIVE`` dict's key); ``"env:OLD_KEY"`` and so on where `key`'s old
    name was used."""
    source, _, old = source.partition(":")
    key = old or key
    attribute, variable = _SOURCES[key]
    if source == "env":
        return f"the environment variable {variable}"
    if source == "class":
        return f"the class attribute {attribute}"
    return f"SAFELIVE[{key!r}]"


def _parse_env(
    key: str, value: object, source: str, parse: Callable[[str], object], noun: str
) -> object:
    """`value` parsed with `parse` when it comes from the environment (a
    string), as it is otherwise."""
    if not (source.startswith("env") and isinstance(value, str)):
        return value
    try:
        return parse(value.strip())
    except ValueError:
        raise ImproperlyConfigured(
            f"{where(key, source)} must be {noun}, got {value!r}."
        ) from None


def positive_int(key: str, value: object, source: str, minimum: int = 1) -> int:
    """`value`, set for `key` at `source`, as a whole number of at least `minimum`."""
    value = _parse_env(key, value, source, int, "a whole number")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImproperlyConfigured(
            f"{where(key, source)} must be an int, got {type(value).__name__} "
            f"{value!r}."
        )
    if value < minimum:
        raise ImproperlyConfigured(
            f"{where(key, source)} must be at least {minimum}, got {value}."
        )
    return value


def parse_mode(value: object, source: str) -> Mode:
    """`value`, set for MODE at `source`, as a mode."""
    if isinstance(value, str) and value.strip().lower() in MODES:
        mode: Mode = "single" if value.strip().lower() == "single" else "pool"
        return mode
    raise ImproperlyConfigured(
        f"{where('MODE', source)} must be 'single' or 'pool', got {value!r}."
    )


def seconds(key: str, value: object, source: str) -> float:
    value = _parse_env(key, value, source, float, "a number of seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImproperlyConfigured(
            f"{where(key, source)} must be a number of seconds, got "
            f"{type(value).__name__} {value!r}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ImproperlyConfigured(
            f"{where(key, source)} must be a positive, finite number of seconds, "
            f"got {value!r}."
        )
    return float(value)


_TRUE = ("1", "true")
_FALSE = ("0", "false")


def boolean(key: str, value: object, source: str) -> bool:
    if source.startswith("env") and isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE + _FALSE:
            return text in _TRUE
        raise ImproperlyConfigured(
            f"{where(key, source)} must be 1, 0, true or false, got {value!r}."
        )
    if not isinstance(value, bool):
        raise ImproperlyConfigured(
            f"{where(key, source)} must be True or False, got "
            f"{type(value).__name__} {value!r}."
        )
    return value


def _raw_settings() -> Mapping[str, Any]:
    raw = getattr(settings, "SAFELIVE", {})
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"settings.SAFELIVE must be a dict, got {type(raw).__name__}."
        )
    unknown = sorted(set(raw) - set(_SOURCES))
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown key(s) in settings.SAFELIVE: {', '.join(map(repr, unknown))}. "
            f"Valid keys are {', '.join(repr(k) for k in _SOURCES if k not in _OLD)}."
        )
    return raw


_OLD = set(_RENAMED.values())


def lookup(key: str, owner: object | None) -> tuple[object, str] | None:
    """Return the winning (value, source) for a key: environment, class,
    settings; at each, the key's name of 0.1 too, with a DeprecationWarning."""
    names = [key, _RENAMED[key]] if key in _RENAMED else [key]
    for source in ("env", "class", "settings"):
        found = [
            (name, value)
            for name in names
            if (value := _read(name, source, owner)) is not None
        ]
        if len(found) > 1:
            raise ImproperlyConfigured(
                f"{where(key, source)} and {where(key, f'{source}:{names[1]}')} "
                f"are both set: keep {where(key, source)} only (the other is "
                "its old name)."
            )
        if found:
            name, value = found[0]
            if name == key:
                return value, source
            warnings.warn(
                f"{where(key, f'{source}:{name}')} is deprecated: use "
                f"{where(key, source)} (the budget counts database sessions).",
                DeprecationWarning,
                stacklevel=3,
            )
            return value, f"{source}:{name}"
    return None


def _read(key: str, source: str, owner: object | None) -> object | None:
    """`key`'s value at `source`, or None where it is not set."""
    attribute, variable = _SOURCES[key]
    if source == "env":
        return os.environ.get(variable)
    if source == "class":
        if attribute is None or owner is None:
            return None
        return getattr(owner, attribute, None)
    return _raw_settings().get(key)
