"""Django's live server (with CONN_MAX_AGE 0 and 600, and with Django's psycopg
pool), django-safelive's, and Schemathesis's in-process WSGI, side by side on
the same endpoints and data.

Run with ``nox -s bench``, or in a test environment:
``DJANGO_SETTINGS_MODULE=tests.settings python -m tests.benchmarks [--quick]``.
Prints the latency of one client on a fresh connection per request and on a
keep-alive one (and where the server spends it), requests/s (fresh connections
from 32 clients; keep-alive reads and writes from 1/8/32), peak sessions, the
wall time of a Schemathesis run, the cost of a reset and the teardown drain
time, each the median of --repeat runs; then the ratios to Django's live server
under CONN_MAX_AGE 0 and which targets they meet. Not a test: nothing here
asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

# --asgi: tests/benchmarks/_asgi.py, which measures in a process of its own on
# a throwaway PostgreSQL: nothing here may read the settings first.
if "--asgi" in sys.argv[1:]:
    from tests.benchmarks._asgi import main as asgi

    sys.exit(asgi([arg for arg in sys.argv[1:] if arg != "--asgi"]))

# --rollback: the suite of tests/benchmarks/_rollback.py, on settings that add the
# flush app's tables (nox sets tests.settings).
ROLLBACK = "--rollback" in sys.argv[1:]
if ROLLBACK:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.benchmarks.settings"
# --newuser: the django-ninja suite of tests/benchmarks/_newuser.py, on settings
# that add its API (and the flush app's tables) under CONN_MAX_AGE = 0.
NEWUSER = "--newuser" in sys.argv[1:]
if NEWUSER:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.benchmarks.settings_newuser"
# --classes: tests/benchmarks/_classes.py, a test case class's start and stop.
CLASSES = "--classes" in sys.argv[1:]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
# A database of its own unless the caller picked one, so that a benchmark never
# drops the test suite's.
os.environ.setdefault("SAFELIVE_TEST_DB_NAME", "test_safelive_bench")

import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402
from django.test.utils import (  # noqa: E402
    override_settings,
    setup_databases,
    teardown_databases,
)

from tests.benchmarks import _floor, _report  # noqa: E402
from tests.benchmarks._run import (  # noqa: E402
    AUTH,
    BY_NAME,
    DEFAULT_VARIANTS,
    Sizes,
    restore,
    run,
    seed,
    warm_up,
)
from tests.benchmarks._servers import compare_servers  # noqa: E402

# (normal, --quick)
DEFAULTS = {
    "requests": (100, 16),
    "repeat": (3, 1),
    "examples": (25, 2),
    "drain_timeout": (5.0, 1.0),
    "fresh_requests": (320, 32),
    "resets": (20, 3),
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 16 requests (32 from 32 fresh clients), 1 repeat, "
        "2 examples, 3 resets, 1 s drain timeout",
    )
    parser.add_argument(
        "--requests",
        type=int,
        help="per keep-alive phase and per fresh 1-client phase (default 100)",
    )
    parser.add_argument(
        "--clients", default="1,8,32", help="keep-alive clients, default 1,8,32"
    )
    parser.add_argument(
        "--fresh-clients",
        type=int,
        default=32,
        help="clients on a fresh connection per request (default 32)",
    )
    parser.add_argument(
        "--fresh-requests", type=int, help="shared by them, per run (default 320)"
    )
    parser.add_argument(
        "--resets", type=int, help="timed resets per kind and run (default 20)"
    )
    parser.add_argument("--repeat", type=int, help="runs per variant (default 3)")
    parser.add_argument(
        "--examples", type=int, help="Schemathesis examples per operation (default 25)"
    )
    parser.add_argument("--drain-clients", type=int, default=8, help="default 8")
    parser.add_argument(
        "--drain-timeout", type=float, help="seconds to wait (default 5)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated, default %(default)s; also single@600, "
        "pool-2@0, pool-8@600 and the like",
    )
    parser.add_argument("--json", metavar="FILE", help="write medians and runs")
    parser.add_argument("--plot", metavar="FILE.png", help="write a bar chart")
    parser.add_argument(
        "--markdown", metavar="FILE", help="write the tables as Markdown"
    )
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="run the rollback server's Schemathesis suite instead "
        "(python -m tests.benchmarks --rollback --help)",
    )
    parser.add_argument(
        "--newuser",
        action="store_true",
        help="run a django-ninja suite as written and with its import swapped "
        "instead (python -m tests.benchmarks --newuser --help)",
    )
    parser.add_argument(
        "--asgi",
        action="store_true",
        help="compare Channels' live server with ours on the ASGI app instead "
        "(python -m tests.benchmarks --asgi --help)",
    )
    parser.add_argument(
        "--servers",
        action="store_true",
        help="compare the pool with waitress and cheroot instead",
    )
    parser.add_argument(
        "--classes",
        action="store_true",
        help="time a test case class's live server start and stop instead, on "
        "Django's and ours (python -m tests.benchmarks --classes --help)",
    )
    args = parser.parse_args()
    for name, (normal, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    unknown = set(args.variants.split(",")) - set(BY_NAME)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(BY_NAME)}")
    return args


def main() -> None:
    args = arguments()
    sizes = Sizes(
        requests=args.requests,
        clients=[int(count) for count in args.clients.split(",")],
        examples=args.examples,
        drain_clients=args.drain_clients,
        drain_timeout=args.drain_timeout,
        fresh_clients=args.fresh_clients,
        fresh_requests=args.fresh_requests,
        resets=args.resets,
    )
    variants = [BY_NAME[name] for name in args.variants.split(",")]
    about = _report.machine()
    began = time.monotonic()

    old_config = setup_databases(verbosity=0, interactive=False)
    datname = connections["default"].settings_dict["NAME"]
    connections.close_all()
    results: dict[str, dict[str, Any]] = {}
    floor: dict[str, float] | None = None
    # As LiveServerTestCase does, let the live server's host in; and the test
    # client's.
    allowed = override_settings(ALLOWED_HOSTS=["localhost", "testserver"])
    allowed.enable()
    try:
        if args.servers:
            compare_servers(args.requests, datname)
            return
        last_seed = seed()
        warm_up(sizes)
        restore(datname, last_seed)
        # Round-robin, so that other work on the machine slows every variant
        # alike rather than whichever ran while it did.
        runs: dict[str, list[dict[str, Any]]] = {
            variant.name: [] for variant in variants
        }
        for number in range(args.repeat):
            for variant in variants:
                print(
                    f"run {number + 1}/{args.repeat}: {variant.name}",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                started = time.monotonic()
                runs[variant.name].append(run(variant, sizes, datname))
                restore(datname, last_seed)
                print(f" ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        results = {
            name: {"median": _report.medians(done), "runs": done}
            for name, done in runs.items()
        }
        floor = _report.schemathesis_floor(
            results,
            _floor.per_call_ms(30 if args.quick else 300, AUTH),
            _floor.connect_ms("default", 5 if args.quick else 50),
        )
        about["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
        about["elapsed_s"] = round(time.monotonic() - began)
        about["django_safelive_after"] = _report.library_state()
    finally:
        allowed.disable()
        connections.close_all()
        teardown_databases(old_config, verbosity=0)

    print(
        f"{sizes.requests} requests per run, median of {args.repeat} runs; "
        f"{about['cpu_count']} CPUs, "
        f"Python {about['python']}, Django {about['django']}, {about['driver']}, "
        f"PostgreSQL {about['postgresql']}; load average "
        f"{about['load_average'][0]} at the start, "
        f"{about['load_average_after'][0]} at the end; {about['elapsed_s']} s; "
        f"django-safelive {about['django_safelive']}\n"
    )
    if about["django_safelive_after"] != about["django_safelive"]:
        print(
            "The django-safelive checkout changed during the run (now "
            f"{about['django_safelive_after']}): modules imported late may differ.\n"
        )
    tables = _report.tables(variants, results, sizes)
    print("\n\n".join(table.text() for table in tables))
    print()
    print(_report.targets(variants, results, sizes))
    if floor is not None:
        print(f"\n{_report.floor_text(floor)}")
    if args.markdown:
        _report.write_markdown(args.markdown, tables, variants, results, sizes)
    if args.json:
        _report.write_json(args.json, about, sizes, variants, results, floor)
    if args.plot:
        _report.plot(args.plot, about, sizes, variants, results)


if ROLLBACK:
    from tests.benchmarks._rollback import main as rollback

    rollback([arg for arg in sys.argv[1:] if arg != "--rollback"])
elif NEWUSER:
    from tests.benchmarks._newuser import main as newuser

    newuser([arg for arg in sys.argv[1:] if arg != "--newuser"])
elif CLASSES:
    from tests.benchmarks._classes import main as classes

    classes([arg for arg in sys.argv[1:] if arg != "--classes"])
else:
    main()
