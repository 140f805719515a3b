"""``status --watch``: the human status, refreshed until Ctrl-C.

On a terminal each refresh redraws the screen in place (cursor home, each
line cleared to its end, the rest of the screen cleared): no scrollback
piles up. Anywhere else (a pipe, a file) the tables follow one another,
each after a header line, so a log of them reads top to bottom.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["watch"]

HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def watch(render: Callable[[], str], interval: float, out: TextIO, *, terminal: bool, lines: bool = False) -> None:
    """Print ``render()`` every ``interval`` seconds until Ctrl-C (which returns).

    ``lines``: each render is one line (``--json``): printed as it is, one
    after another, with no header, on a terminal too (JSON Lines)."""
    try:
        while True:
            if lines:
                out.write(f"{render()}\n")
            elif terminal:
                text = f"every {interval:g}s, {time.strftime('%H:%M:%S')} (Ctrl-C ends)\n{render()}"
                body = "".join(f"{line}{CLEAR_LINE}\n" for line in text.splitlines())
                out.write(f"{HOME}{body}{CLEAR_BELOW}")
            else:
                out.write(f"every {interval:g}s, {time.strftime('%H:%M:%S')}\n{render()}\n\n")
            out.flush()
            time.sleep(interval)  # a command line's own loop: no event loop to block
    except KeyboardInterrupt:
        if terminal and not lines:
            out.write("\n")  # the prompt after the last table, not on it
            out.flush()
