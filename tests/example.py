"""The main job until `python -m django_safelive demo` lands: one Schemathesis suite
(tests/scenarios/schemathesis_shop.py, the README's example) run on Hypothesis's
LiveServerTestCase and on django-safelive's, against a throwaway PostgreSQL with
max_connections = 12, printing what each did to the database.

Run it with `nox -s example` (or `python -m tests.example` in a test environment).
"""

from __future__ import annotations

import sys

from tests._cluster import Cluster
from tests.test_root_causes import BUDGET, run


def main() -> int:
    cluster = Cluster(max_connections=12)
    cluster.start()
    try:
        print("Schemathesis suite, 3 operations x 30 examples, CONN_MAX_AGE = 600,")
        print(
            "clients that never close their sessions; PostgreSQL max_connections = 12\n"
        )
        print(f"{'live server':<46} {'result':<8} {'peak sessions':>13}")
        outcomes = {}
        for impl, label in [
            ("stock", "hypothesis.extra.django.LiveServerTestCase"),
            ("safelive", "django_safelive.hypothesis.LiveServerTestCase"),
        ]:
            outcome = run("schemathesis_shop", impl, cluster.host, cluster.port)
            outcomes[impl] = outcome
            result = "passed" if outcome.returncode == 0 else "FAILED"
            print(f"{label:<46} {result:<8} {outcome.peak:>13}")
        refused = outcomes["stock"].output.count("too many clients")
        print(f"\nDjango's server: 'too many clients already' seen {refused} time(s).")
        print(f"django-safelive: budget {BUDGET} sessions per alias, never exceeded.")
    finally:
        cluster.stop()
    ok = outcomes["safelive"].returncode == 0 and outcomes["safelive"].peak <= BUDGET
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
