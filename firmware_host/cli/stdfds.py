"""Standard descriptors closed at start (``>&-``, a bare service manager).

A process started without fd 0, 1 or 2 hands that number to the first file
it opens: a jsonl sink or a pty would then be written as stdout, uvloop
aborts on a descriptor <= 2 that it did not expect, and ``sys.stdout`` is
None (Python's own answer), so every print fails. Each missing one is
opened on /dev/null here, before a command runs, as daemons do.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

__all__ = ["ensure_std_fds"]


def ensure_std_fds() -> None:
    """Open /dev/null on each of fds 0-2 that is closed, and give Python a
    stream where it has none."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one, or a lower one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:
        sys.stdin = _null("r")
    if sys.stdout is None:
        sys.stdout = _null("w")
    if sys.stderr is None:
        sys.stderr = _null("w")


def _null(mode: str) -> IO[Any]:
    return open(os.devnull, mode, encoding="utf-8")  # the process's stream, for its lifetime
