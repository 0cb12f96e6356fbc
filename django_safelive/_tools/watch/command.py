"""Running the watched command in the foreground, passing signals on."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def _forward_sigterm(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass SIGTERM on to the command, so that we still report and clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(
        signal.SIGTERM, lambda signum, frame: process.send_signal(signum)
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(command: Sequence[str]) -> tuple[int, bool]:
    """Run `command` with our stdin/stdout/stderr; its status, and whether ^C came.

    The terminal sends Ctrl-C to the whole process group, so the command gets
    it too: we wait for it to finish its own cleanup, and kill it on a second ^C.
    """
    interrupted = False
    with subprocess.Popen(command) as process, _forward_sigterm(process):
        while True:
            try:
                status = process.wait()
                break
            except KeyboardInterrupt:
                if interrupted:
                    process.kill()
                interrupted = True
    # Killed by signal N: report it as a shell would, 128 + N.
    return (128 - status if status < 0 else status), interrupted
