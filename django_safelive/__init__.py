"""A bounded, drop-in replacement for Django's live test server.

The public names are imported on first use, so that importing the package, as
the pytest plugin does in every run it is installed in, imports no Django.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_safelive._assertions import max_sessions
    from django_safelive._budget import Holder, SessionWindow
    from django_safelive._config import Config
    from django_safelive._exceptions import (
        RequestStuck,
        SafeLiveError,
        SelfCallInSingleMode,
        ServerBudgetExhausted,
        SessionBudgetExceeded,
        SessionsLeftBehind,
    )
    from django_safelive._rollback import (
        RollbackLiveServerMixin,
        RollbackLiveServerTestCase,
        RollbackUnsupported,
        StaticRollbackLiveServerTestCase,
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
    "RollbackLiveServerMixin",
    "RollbackLiveServerTestCase",
    "RollbackUnsupported",
    "SafeLiveError",
    "SafeLiveServerMixin",
    "SafeLiveServerThread",
    "SelfCallInSingleMode",
    "ServerBudgetExhausted",
    "SessionBudgetExceeded",
    "SessionWindow",
    "SessionsLeftBehind",
    "StaticLiveServerTestCase",
    "StaticRollbackLiveServerTestCase",
    "max_sessions",
]

# public name -> the private module that defines it
_MODULES = {
    "BoundedWSGIServer": "_server",
    "Config": "_config",
    "Holder": "_budget",
    "LiveServerTestCase": "_testcases",
    "RequestStuck": "_exceptions",
    "RollbackLiveServerMixin": "_rollback",
    "RollbackLiveServerTestCase": "_rollback",
    "RollbackUnsupported": "_rollback",
    "SafeLiveError": "_exceptions",
    "SafeLiveServerMixin": "_testcases",
    "SafeLiveServerThread": "_server",
    "SelfCallInSingleMode": "_exceptions",
    "ServerBudgetExhausted": "_exceptions",
    "SessionBudgetExceeded": "_exceptions",
    "SessionWindow": "_budget",
    "SessionsLeftBehind": "_exceptions",
    "StaticLiveServerTestCase": "_testcases",
    "StaticRollbackLiveServerTestCase": "_rollback",
    "max_sessions": "_assertions",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
