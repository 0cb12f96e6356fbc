"""A bounded, drop-in replacement for Django's live test server."""

from __future__ import annotations

from django_safelive._assertions import max_sessions
from django_safelive._budget import Holder, SessionWindow
from django_safelive._config import Config
from django_safelive._exceptions import (
    RequestStuck,
    SafeLiveError,
    SelfCallInSingleMode,
    SessionBudgetExceeded,
    SessionsLeftBehind,
)
from django_safelive._server import BoundedWSGIServer, SafeLiveServerThread
from django_safelive._testcases import (
    LiveServerTestCase,
    SafeLiveServerMixin,
    StaticLiveServerTestCase,
)

__all__ = [
    "BoundedWSGIServer",
    "Config",
    "Holder",
    "LiveServerTestCase",
    "RequestStuck",
    "SafeLiveError",
    "SafeLiveServerMixin",
    "SafeLiveServerThread",
    "SelfCallInSingleMode",
    "SessionBudgetExceeded",
    "SessionWindow",
    "SessionsLeftBehind",
    "StaticLiveServerTestCase",
    "max_sessions",
]
