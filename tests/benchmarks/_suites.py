"""What the suite benchmarks (``--rollback``, ``--newuser``) share: their
command line, the test database, and the round-robin over their variants."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections
from django.test.utils import override_settings, setup_databases, teardown_databases


def arguments(
    prog: str,
    description: str | None,
    argv: list[str],
    *,
    examples_help: str,
    examples: tuple[int, int],
) -> argparse.Namespace:
    """--quick, --examples (`examples`: normal and --quick), --repeat, --json
    and --markdown, parsed from `argv`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {examples[1]} examples, 1 run",
    )
    parser.add_argument(
        "--examples", type=int, help=f"{examples_help} (default {examples[0]})"
    )
    parser.add_argument("--repeat", type=int, help="runs per variant (default 3)")
    parser.add_argument("--json", metavar="FILE", help="write medians and runs")
    parser.add_argument("--markdown", metavar="FILE", help="write the table")
    args = parser.parse_args(argv)
    if args.examples is None:
        args.examples = examples[1] if args.quick else examples[0]
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


@contextmanager
def test_database() -> Iterator[str]:
    """The test database (with the flush app's tables), as a test run has it."""
    old_config = setup_databases(verbosity=0, interactive=False)
    datname = connections["default"].settings_dict["NAME"]
    connections.close_all()
    # The in-process transport's host; the live servers add their own.
    allowed = override_settings(ALLOWED_HOSTS=["localhost", "testserver"])
    allowed.enable()
    try:
        yield datname
    finally:
        allowed.disable()
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


def round_robin(
    repeat: int,
    groups: list[str],
    variants: list[str],
    run_once: Callable[[str, str], dict[str, Any]],
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], list[float]]:
    """``run_once(group, variant)`` `repeat` times for every group and variant,
    round-robin, so that other work on the machine slows every variant alike
    rather than whichever ran while it did; the runs by group and variant, and
    the load averages seen (each run reports its ``load_average``)."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        group: {variant: [] for variant in variants} for group in groups
    }
    loads = [os.getloadavg()[0]]
    for number in range(repeat):
        for group in groups:
            for variant in variants:
                print(
                    f"run {number + 1}/{repeat}: {group} {variant}",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                done = run_once(group, variant)
                runs[group][variant].append(done)
                loads.append(done["load_average"])
                print(f" ({done['wall_s']:.1f} s)", file=sys.stderr)
    return runs, loads


def write_outputs(
    args: argparse.Namespace, markdown: Callable[[], str], document: dict[str, Any]
) -> None:
    """Write ``markdown()`` to --markdown FILE and `document` to --json FILE,
    each if asked for."""
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(markdown() + "\n")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
