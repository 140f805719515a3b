"""Descriptor headroom: a port opens only while enough descriptors stay free.

Why: a process that runs out of descriptors fails everywhere at once (the
control socket's accept, a sink's reconnect, SQLite's journal), and then
``status`` cannot even say why. Every device costs descriptors (a tty opened
by pyserial takes five: the tty and its two cancel pipes; a ``socket://``
device one), so a fleet larger than ``ulimit -n`` allows would take the last
of them. The backend therefore refuses an open that would leave fewer than
``FD_RESERVE`` free: that device waits in backoff with a last_error naming
the limit, and the control socket, the sinks and the other devices keep
working.

The check counts the process's open descriptors (``/proc/self/fd``, or
``/dev/fd``) instead of tracking our own, because sinks, plugins and the
control server open descriptors too and only the kernel's count has them
all. It is a directory listing, so it runs in the executor, next to the open
it guards. Opens in flight are counted at their most (five for a tty), so
many opens started together cannot all pass against the same count. Where
no count is available the check passes, and a failed open still reports
EMFILE in the same words.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from firmware_host.errors import PortClosed
from firmware_host.transport.openerror import EMFILE_ADVICE

__all__ = ["FD_RESERVE", "SOCKET_COST", "TTY_COST", "FdBudget"]

#: descriptors kept free for everything that is not a device: control
#: connections, sink files and sockets, a spool's journal, DNS lookups
FD_RESERVE = 32
#: what one open may take: a pyserial tty holds the tty and two pipes (5
#: descriptors; the other pyserial URL handlers take fewer), a socket one
TTY_COST = 5
SOCKET_COST = 1

_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def soft_limit() -> int | None:
    """The soft RLIMIT_NOFILE, or None when there is none to respect."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def open_descriptors() -> int | None:
    """How many descriptors the process holds now (None: no way to tell).

    The listing's own descriptor is counted too: one too many errs on the safe side.
    """
    for path in _FD_DIRS:
        try:
            return len(os.listdir(path))
        except OSError:
            continue
    return None


class FdBudget:
    """Refuses an open that would leave fewer than ``reserve`` descriptors free.

    Opens run in executor threads: ``opening`` wraps one there, checking and
    reserving under a lock held only for the count (never for the open, which
    can block on hardware). A socket connects on the event loop, so
    ``connecting`` counts it there (loop-thread state, read by the checks
    without the lock: a stale read only over-counts) and ``check`` runs in
    the executor first.
    """

    def __init__(self, reserve: int = FD_RESERVE) -> None:
        self.reserve = reserve
        self._lock = threading.Lock()
        self._opening = 0  # reserved by opens in executor threads (under _lock)
        self._connecting = 0  # socket connects in progress (event loop thread only)

    @contextlib.contextmanager
    def opening(self, url: str, cost: int) -> Iterator[None]:
        """In the executor thread, around one open that may take ``cost``
        descriptors: PortClosed if that would leave too few free."""
        with self._lock:
            self._check(url, cost)
            self._opening += cost
        try:
            yield
        finally:
            with self._lock:
                self._opening -= cost

    @contextlib.contextmanager
    def connecting(self) -> Iterator[None]:
        """On the event loop, around one socket connect (``check`` it first)."""
        self._connecting += SOCKET_COST
        try:
            yield
        finally:
            self._connecting -= SOCKET_COST

    def check(self, url: str) -> None:
        """In the executor thread, inside ``connecting``: PortClosed if the
        connects and opens in flight would leave too few free."""
        with self._lock:
            # this connect is among those counted in flight: count it as the cost
            self._check(url, SOCKET_COST, counted=SOCKET_COST)

    def _check(self, url: str, cost: int, counted: int = 0) -> None:
        limit = soft_limit()
        used = open_descriptors() if limit is not None else None
        if limit is None or used is None:
            return
        pending = self._opening + self._connecting - counted
        if limit - used - pending - cost < self.reserve:
            more = f", {pending} more being opened" if pending else ""
            raise PortClosed(
                f"cannot open {url}: too many open files ({used} of {limit} descriptors in use{more},"
                f" {self.reserve} kept free for the control socket and sinks); {EMFILE_ADVICE}"
            )
