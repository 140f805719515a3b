"""The words of a failed open: one line, the port named once, and what to do.

pyserial words a missing port "[Errno 2] could not open port /dev/x: [Errno
2] No such file or directory: '/dev/x'": the port and the reason twice each.
A reader's ``last_error`` (shown by ``status`` and logged once per change)
is this line instead, and for the two mistakes a new user makes, a missing
port and a port without permission, it says how to fix them.
"""

from __future__ import annotations

import errno
import os

from firmware_host.errors import PortClosed

__all__ = ["EACCES_HINT", "EMFILE_ADVICE", "ENOENT_HINT", "open_failed", "open_reason"]

EACCES_HINT = "permission denied: add the user to the dialout group (or see docs/service.md for a udev rule)"
ENOENT_HINT = "no such port: `firmware-host devices` lists the serial ports of this host"
EMFILE_ADVICE = "raise the limit: ulimit -n / LimitNOFILE="

_HINTS = {
    errno.EACCES: EACCES_HINT,
    errno.EPERM: EACCES_HINT,
    errno.ENOENT: ENOENT_HINT,
    errno.EMFILE: f"too many open files; {EMFILE_ADVICE}",
    errno.ENFILE: f"too many open files in the system; {EMFILE_ADVICE}",
}


#: how pyserial words a failed open: "could not open port PORT: " and an OSError's text
_PYSERIAL_PREFIX = "could not open port "


def open_reason(exc: BaseException) -> str:
    """Why an open failed, without the port's name (the caller adds it once)."""
    code = exc.errno if isinstance(exc, OSError) else None  # pyserial's SerialException is an OSError
    if not isinstance(code, int) or code <= 0:
        return str(exc) or type(exc).__name__
    words = exc.strerror if isinstance(exc, OSError) and isinstance(exc.strerror, str) else ""
    if words.startswith(_PYSERIAL_PREFIX):
        said = words.partition(": ")[2]
        if not said.startswith("[Errno "):
            return said  # words of the raiser's own (the test kit's mock), not the errno's
    # the errno alone: pyserial's own text repeats the port and the reason
    return _HINTS.get(code) or f"[Errno {code}] {os.strerror(code)}"


def open_failed(url: str, exc: BaseException) -> PortClosed:
    """``PortClosed`` for a failed open of ``url``, in one line."""
    return PortClosed(f"cannot open {url}: {open_reason(exc)}")
