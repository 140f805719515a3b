"""systemd ``Type=notify`` without a dependency: datagrams to ``$NOTIFY_SOCKET``.

``READY=1`` once devices, sinks and the control socket are up; ``STATUS=`` a
one-line summary every ``STATUS_INTERVAL``; ``STOPPING=1`` when the shutdown
begins; ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from a callback of the
event loop itself, so a stuck loop stops the pings and systemd restarts the
service. A send never blocks and never raises into the runtime: the socket
is non-blocking and a failure is logged once (docs/service.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["STATUS_INTERVAL", "SdNotifier", "StatusSource", "summary_line"]

log = logging.getLogger("firmware_host.sdnotify")

#: seconds between two ``STATUS=`` lines
STATUS_INTERVAL = 10.0
#: seconds one status snapshot for ``STATUS=`` may take
STATUS_TIMEOUT = 5.0
#: the longest datagram sent (a status line is cut to fit)
MAX_MESSAGE = 4096


class StatusSource(Protocol):
    async def status(self) -> dict[str, Any]: ...


def summary_line(status: Mapping[str, Any]) -> str:
    """``2/3 devices connected, 1234 frames, 5 dropped, 1/1 sinks ok``."""
    devices = status["devices"].values()
    live = [d for d in devices if not d.get("removed")]
    connected = sum(d["state"] == "connected" for d in live)
    sinks = status.get("sinks") or []
    ok = sum(s["state"] == "ok" for s in sinks)
    frames = sum(d["frames"] for d in devices)
    dropped = sum(d["dropped"] for d in devices)
    return f"{connected}/{len(live)} devices connected, {frames} frames, {dropped} dropped, {ok}/{len(sinks)} sinks ok"


class SdNotifier:
    """Talks to systemd's notify socket ``address`` (a path, or ``@name`` abstract)."""

    def __init__(self, address: str, *, watchdog_interval: float | None = None) -> None:
        # "@name" is Linux's abstract namespace: a leading NUL byte on the wire
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = watchdog_interval
        self.sent = 0
        self.failed = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._watchdog: asyncio.TimerHandle | None = None
        self._status_task: asyncio.Task[None] | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SdNotifier | None:
        """From ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``; None when not under systemd."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address or address == "@":
            return None
        return cls(address, watchdog_interval=_watchdog_interval(env))

    # -- sending -------------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send ``VAR=value`` lines in one datagram; False (logged once) if it failed."""
        data = "\n".join(assignments).encode("utf-8", "replace")[:MAX_MESSAGE]
        try:
            self._sock.sendto(data, self.address)
        except OSError as exc:  # gone, refused, full (EAGAIN): never the runtime's problem
            self.failed += 1
            level = logging.WARNING if self.failed == 1 else logging.DEBUG
            log.log(level, "systemd notify socket %r: %s (further failures are not logged)", self.shown, exc)
            return False
        self.sent += 1
        return True

    @property
    def shown(self) -> str:
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    # -- the watchdog ----------------------------------------------------------------

    def start_watchdog(self) -> None:
        """Ping now and every ``watchdog_interval`` from the running loop."""
        if self.watchdog_interval is None or self._watchdog is not None:
            return
        self._ping()

    def _ping(self) -> None:
        self.notify("WATCHDOG=1")
        assert self.watchdog_interval is not None
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.watchdog_interval, self._ping)

    # -- the runtime's hooks ---------------------------------------------------------

    async def ready(self, rt: StatusSource) -> None:
        """``Runtime.on_start`` hook, added last: everything is up."""
        line = await self._summary(rt)
        self.notify("READY=1", f"STATUS={line or 'running'}", f"MAINPID={os.getpid()}")
        self._status_task = asyncio.create_task(self._report(rt), name="sdnotify:status")

    async def stopping(self, rt: StatusSource) -> None:
        """``Runtime.on_stop`` hook: the shutdown begins."""
        self.notify("STOPPING=1", "STATUS=stopping: draining to the sinks")
        await self._stop_status()

    async def _report(self, rt: StatusSource) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)  # a periodic report: time is the event
            line = await self._summary(rt)
            if line is not None:
                self.notify(f"STATUS={line}")

    async def _summary(self, rt: StatusSource) -> str | None:
        try:
            async with asyncio.timeout(STATUS_TIMEOUT):
                return summary_line(await rt.status())
        except Exception as exc:  # a summary is a nicety: never a failure of the run
            log.debug("no status line for systemd: %s", exc)
            return None

    async def _stop_status(self) -> None:
        task, self._status_task = self._status_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def aclose(self) -> None:
        """Stop the pings and the status lines; close the socket."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        await self._stop_status()
        self._sock.close()


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is ours."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):  # meant for another process (we were forked)
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds: no watchdog pings", usec)
        return None
    if value <= 0:
        return None
    return value / 2 / 1e6
