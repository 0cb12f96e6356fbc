"""Differences between the supported Python and Django versions, in one place."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, TypeVar

T = TypeVar("T")


def enter_class_context(cls: Any, manager: AbstractContextManager[T]) -> T:
    """``cls.enterClassContext(manager)``, also where neither Python (< 3.11) nor
    Django (< 5.0) provides it."""
    if hasattr(cls, "enterClassContext"):
        result: T = cls.enterClassContext(manager)
        return result
    result = manager.__enter__()
    cls.addClassCleanup(manager.__exit__, None, None, None)
    return result
