"""Standard output's reader left (``firmware-host status | head -1``): end
quietly, exit 0, as a Unix filter does.

``OneLineErrors.invoke`` (commands.py) is the one place that catches it, for
every command: whatever a command printed, stdout is flushed there, so the
error surfaces inside the handler rather than at interpreter exit (where
Python prints "Exception ignored ... BrokenPipeError" and exits 120).
"""

from __future__ import annotations

import os
import select
import sys
from typing import NoReturn

__all__ = ["reader_left", "stdout_reader_gone"]

EXIT_OK = 0


def stdout_reader_gone() -> bool:
    """True when stdout is a pipe or socket whose reading end is closed.

    A broken pipe elsewhere (a socket to the runtime) is not this: it stays
    an error. The kernel flags the writing end of a pipe without readers
    with POLLERR (a socket: POLLHUP)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # an in-memory stdout (tests): it has no reader to lose
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def reader_left() -> NoReturn:
    """End quietly, exit 0; stdout is pointed at /dev/null so the
    interpreter's own flush at exit has nothing to complain about."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(EXIT_OK)
