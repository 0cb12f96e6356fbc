"""One live-server test class, run by several processes at once on one
PostgreSQL server under one SERVER_BUDGET (tests/test_scale.py).

With SCALE_HOLD set, its test keeps making requests for a minute, so that the
parent can kill the process mid-run; SCALE_ROUNDS sets how many rounds of
requests it makes otherwise (tests/benchmarks/shared_budget.py).
"""

from __future__ import annotations

import os
import time

from django_safelive import LiveServerTestCase
from tests._clients import concurrently

ROUNDS = int(os.environ.get("SCALE_ROUNDS", "3"))
HOLD = 60.0


class SharedServerTests(LiveServerTestCase):
    def test_concurrent_requests(self) -> None:
        """Four concurrent clients, a few rounds: every request answered."""
        hold = time.monotonic() + HOLD if os.environ.get("SCALE_HOLD") else 0.0
        rounds = 0
        while rounds < ROUNDS or time.monotonic() < hold:
            codes = concurrently(f"{self.live_server_url}/slow/?seconds=0.2", 4)
            self.assertEqual(codes, [200] * 4)
            rounds += 1
