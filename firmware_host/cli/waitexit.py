"""``stop --wait``: wait, bounded, until a runtime has exited.

Exited means both: its process (the pid ``ping`` gave) is gone, and its
control socket no longer answers. The process is awaited through a pidfd
(Linux 5.3+), which becomes readable when it exits: no polling. Where there
is none (another OS, an old kernel) its existence is probed every
``PROBE_INTERVAL``; so is the socket in the rare case it still answers once
that pid is gone (a runtime in another pid namespace reports a pid this
host does not know).
"""

from __future__ import annotations

import os
import select
import time

from firmware_host.control.client import request_sync
from firmware_host.errors import ControlError, NoRuntime

__all__ = ["PROBE_INTERVAL", "wait_for_exit"]

#: seconds between probes where no event says it (no pidfd; a socket still answering)
PROBE_INTERVAL = 0.05


def wait_for_exit(path: str, pid: int, timeout: float) -> bool:
    """True once the process ``pid`` is gone and nothing answers on ``path``;
    False when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    return _wait_pid(pid, deadline) and _wait_silent(path, deadline)


def _wait_pid(pid: int, deadline: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfd here: probe
        return _probe_pid(pid, deadline)
    try:
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        return bool(readable)
    finally:
        os.close(fd)


def _probe_pid(pid: int, deadline: float) -> bool:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # it exists, as another user's process
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(PROBE_INTERVAL)


def _wait_silent(path: str, deadline: float) -> bool:
    while True:
        remaining = deadline - time.monotonic()
        try:
            request_sync(path, {"cmd": "ping"}, timeout=max(0.1, remaining))
        except NoRuntime:
            return True
        except ControlError:  # a socket closing under us: it is going, ask again
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(PROBE_INTERVAL, max(0.0, deadline - time.monotonic())))
