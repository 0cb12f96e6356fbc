"""How the tools report what went wrong: one line on stderr, exit status 2."""

from __future__ import annotations

import sys


class ToolError(Exception):
    """Bad input or an unreachable server: reported in one line, exit status 2."""


def one_line(error: BaseException) -> str:
    """The error's message on one line, or its type's name when it has none."""
    return " ".join(str(error).split()) or type(error).__name__


def print_error(command: str, message: str) -> None:
    """``django-safelive COMMAND: error: MESSAGE`` on stderr."""
    print(f"django-safelive {command}: error: {message}", file=sys.stderr)


def fail(command: str, message: str) -> int:
    """Report bad input or an unreachable server; the exit status for it, 2."""
    print_error(command, message)
    return 2
