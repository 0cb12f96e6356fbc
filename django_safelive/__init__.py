"""A bounded, drop-in replacement for Django's live test server.

The public names are imported on first use, so that importing the package, as
the pytest plugin does in every run it is installed in, imports no Django.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_safelive._core.asgi_testcases import (
        ASGILiveServerMixin,
        ASGILiveServerTestCase,
    )
    from django_safelive._core.assertions import max_sessions
    from django_safelive._core.exceptions import (
        RequestStuck,
        SafeLiveError,
        SelfCallInSingleMode,
        ServerBudgetExhausted,
        SessionBudgetExceeded,
        SessionsLeftBehind,
    )
    from django_safelive._core.rollback import (
        RollbackLiveServerMixin,
        RollbackLiveServerTestCase,
        RollbackUnsupported,
        StaticRollbackLiveServerTestCase,
    )
    from django_safelive._core.server import SafeLiveServerThread
    from django_safelive._core.testcases import (
        LiveServerTestCase,
        SafeLiveServerMixin,
        StaticLiveServerTestCase,
    )

__all__ = [
    "ASGILiveServerMixin",
    "ASGILiveServerTestCase",
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
    "SessionsLeftBehind",
    "StaticLiveServerTestCase",
    "StaticRollbackLiveServerTestCase",
    "max_sessions",
]

# public name -> the private module that defines it
_MODULES = {
    "ASGILiveServerMixin": "_core.asgi_testcases",
    "ASGILiveServerTestCase": "_core.asgi_testcases",
    "LiveServerTestCase": "_core.testcases",
    "RequestStuck": "_core.exceptions",
    "RollbackLiveServerMixin": "_core.rollback",
    "RollbackLiveServerTestCase": "_core.rollback",
    "RollbackUnsupported": "_core.rollback",
    "SafeLiveError": "_core.exceptions",
    "SafeLiveServerMixin": "_core.testcases",
    "SafeLiveServerThread": "_core.server",
    "SelfCallInSingleMode": "_core.exceptions",
    "ServerBudgetExhausted": "_core.exceptions",
    "SessionBudgetExceeded": "_core.exceptions",
    "SessionsLeftBehind": "_core.exceptions",
    "StaticLiveServerTestCase": "_core.testcases",
    "StaticRollbackLiveServerTestCase": "_core.rollback",
    "max_sessions": "_core.assertions",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
