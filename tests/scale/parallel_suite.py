"""Three live-server test classes for ``manage.py test --parallel 3``
(tests/test_scale.py): Django's runner gives each class a process."""

from __future__ import annotations

from django_safelive import LiveServerTestCase
from tests._clients import concurrently


class Base(LiveServerTestCase):
    def test_concurrent_requests(self) -> None:
        """Six concurrent clients on the process's share: every one answered."""
        codes = concurrently(f"{self.live_server_url}/slow/?seconds=0.2", 6)
        self.assertEqual(codes, [200] * 6)


# Separate classes, so that Django's runner spreads them over its processes.
One, Two, Three = (
    type(name, (Base,), {"__module__": __name__}) for name in ("One", "Two", "Three")
)
del Base
