"""``python -m django_safelive``: the command-line tools.

Each subcommand is a module with ``add_arguments(parser)`` and
``run(args) -> int``; a module that sets ``TAKES_COMMAND = True`` receives the
words after ``--`` as ``args.command``, unparsed. Adding a subcommand is one
more entry in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Sequence

PROG = "python -m django_safelive"

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "watch": (
        "django_safelive._tools.watch",
        "run a command and report the peak of PostgreSQL sessions while it ran",
    ),
    "demo": (
        "django_safelive._tools.demo",
        "run one Schemathesis suite on Django's live server and on ours, side by side",
    ),
    "doctor": (
        "django_safelive._tools.doctor",
        "check the database and django-safelive settings your tests will use",
    ),
}


def _fill(text: str | None) -> str | None:
    """Wrap each blank-line-separated paragraph, keeping the paragraphs apart."""
    if text is None:
        return None
    return "\n\n".join(textwrap.fill(part, width=79) for part in text.split("\n\n"))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one subparser per entry in COMMANDS."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line tools of django-safelive.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="subcommand", metavar="COMMAND", required=True
    )
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            # When "--" is forgotten, the command's options (pytest --fail...)
            # must be reported, not taken for abbreviations of ours.
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module = importlib.import_module(module_name)
        module.add_arguments(subparser)
        subparser.description = _fill(subparser.description)
        subparser.epilog = _fill(subparser.epilog)
        subparser.set_defaults(module=module, subparser=subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" belongs to the command `watch` runs, options
    # included, so it is split off before argparse sees it.
    command: list[str] | None = None
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    takes_command = getattr(args.module, "TAKES_COMMAND", False)
    if unknown:
        hint = " (put the command to run after --)" if takes_command else ""
        args.subparser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    if command is not None and not takes_command:
        args.subparser.error("takes no command after --")
    args.command = command
    status: int = args.module.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
