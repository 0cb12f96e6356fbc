"""Run the demo suite in this process and print what it did as one JSON line.

``python -m django_safelive._tools.demo.run``, with DJANGO_SETTINGS_MODULE set to
``django_safelive._tools.demo.settings`` (the demo command starts it so).
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    import django

    django.setup()
    from django.test.runner import DiscoverRunner

    from django_safelive._core.accounting import ServerAccount
    from django_safelive._core.hooks import registry
    from django_safelive._tools.demo.suite import Stats

    # Counts sessions in-process for both servers (a budget nothing reaches),
    # across every server's account: the only count there is on SQLite.
    with (
        registry.activate(ServerAccount(1 << 30)),
        registry.window("default") as window,
    ):
        started = time.monotonic()
        failures = DiscoverRunner(verbosity=1, interactive=False).run_tests(
            ["django_safelive._tools.demo.suite"]
        )
        wall = time.monotonic() - started
        peak = window.peak
    report = {
        "failures": failures,
        "calls": Stats.calls,
        "server_errors": Stats.server_errors,
        "wall": wall,
        "in_process_peak": peak,
    }
    print("SAFELIVE-DEMO " + json.dumps(report), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
