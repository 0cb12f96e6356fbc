"""Wait for a condition with a deadline: the only way these tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable

# Generous: a deadline is for a condition that will never hold, and a busy CI
# machine can take seconds to reach one that will.
DEADLINE = 30.0


def wait_for(predicate: Callable[[], object], timeout: float = DEADLINE) -> bool:
    """Poll `predicate` until it returns something truthy; False past `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
