"""``python -m django_safelive doctor``: check settings against the server's limits.

Reads the project's DJANGO_SETTINGS_MODULE, asks each PostgreSQL server how
many sessions it allows and has, and says which setting to change when a
test run could exhaust them.
"""

from __future__ import annotations

import argparse
import os
import textwrap

from django_safelive._tools.doctor.diagnosis import diagnose
from django_safelive._tools.messages import fail, one_line

TAKES_COMMAND = False


def _wrap(text: str, bullet: str = "  - ") -> str:
    return textwrap.fill(
        text, width=88, initial_indent=bullet, subsequent_indent=" " * len(bullet)
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``doctor``."""
    parser.description = (
        "Show, for each database of $DJANGO_SETTINGS_MODULE, the server's session "
        "limits and current use, CONN_MAX_AGE, CONN_HEALTH_CHECKS and pool "
        "options, and the django-safelive configuration a test run would use; "
        "then warn about settings that can exhaust the server's connections, "
        "naming the setting to change."
    )
    parser.epilog = (
        "Exit status: 0 when there is nothing to warn about; 1 when a warning or a "
        "problem (unreachable database, invalid SAFELIVE setting) was printed; 2 "
        "when the settings cannot be loaded."
    )
    parser.add_argument(
        "--xdist",
        type=int,
        metavar="N",
        help="check for a run of pytest -n N (default: $PYTEST_XDIST_WORKER_COUNT, "
        "else 1)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the diagnosis; 0 if all is well, 1 with warnings or problems."""
    if args.xdist is not None and args.xdist < 1:
        return fail("doctor", f"--xdist must be at least 1, got {args.xdist}")
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not module:
        return fail(
            "doctor",
            "DJANGO_SETTINGS_MODULE is not set: set it to the settings your tests "
            "use, e.g. DJANGO_SETTINGS_MODULE=mysite.settings python -m "
            "django_safelive doctor",
        )
    try:
        import django

        django.setup()
    except Exception as error:
        return fail(
            "doctor", f"cannot load DJANGO_SETTINGS_MODULE={module}: {one_line(error)}"
        )

    lines, findings = diagnose(args.xdist)
    print("\n".join(lines))
    if findings.warnings:
        print(f"\n{len(findings.warnings)} warning(s):")
        print("\n".join(_wrap(warning) for warning in findings.warnings))
    if findings.problems:
        print(f"\n{len(findings.problems)} problem(s):")
        print("\n".join(_wrap(problem) for problem in findings.problems))
    if not findings.warnings and not findings.problems:
        print("\nNo problems found.")
        return 0
    return 1
