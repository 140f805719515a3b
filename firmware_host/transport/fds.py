"""Descriptors: what a port's open says when the process runs out of them.

Running out of descriptors is the user's limit to raise, not a device's
fault, so the error says which limit and how.
"""

from __future__ import annotations

import errno

from firmware_host.errors import PortClosed

__all__ = ["open_failed"]

_ADVICE = "raise the limit: ulimit -n / LimitNOFILE="


def open_failed(url: str, exc: BaseException) -> PortClosed:
    """``PortClosed`` for a failed open; running out of descriptors says what to do."""
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return PortClosed(f"cannot open {url}: too many open files ({exc}); {_ADVICE}")
    return PortClosed(f"cannot open {url}: {exc}")
