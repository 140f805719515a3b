"""A tty read and written through its file descriptor, on the event loop.

pyserial opens and configures the tty (in an executor, by the backend: an
open can block on real hardware); from then on ``TtyPort`` owns the
descriptor for reading and writing: ``loop.add_reader`` / ``add_writer`` and
non-blocking ``os.read`` / ``os.write``. Why not pyserial-asyncio's
transport: it reads through ``Serial.read`` (select + read + select and two
copies per wakeup, and ``select()`` cannot take a descriptor >= 1024), its
write buffer is unbounded, and its close runs tcdrain and ``close`` on the
event loop, where a wedged USB adapter blocks for seconds.

The read is the hot path: one ``os.read`` per wakeup and no call that is not
needed. After a short read the next read waits for the backend's shared
``ReadClock`` tick (``limits.READ_COALESCE``); a near-full read is followed
at once; a silent port waits for readiness with no timer; a read that finds
data never suspends except for one ``asyncio.sleep(0)`` (one busy port must
not keep the loop to itself).

Closing takes what the kernel still holds for the tty first (bounded, never
blocking) and hands it to the next ``read`` (a parked reader is woken at
once), then writes the queued downlink until ``CLOSE_TIMEOUT`` and drops the
rest, and closes the Serial in an executor.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

from firmware_host._sync import ReadClock
from firmware_host.errors import PortClosed
from firmware_host.transport.limits import (
    CLOSE_TIMEOUT,
    FINAL_READ_MAX,
    MAX_READ_SIZE,
    READ_COALESCE_BYTES,
    RETRY_ERRNOS,
    WRITE_LIMIT,
)

__all__ = ["TtyPort"]

_GONE = "device reports readiness to read but returned no data (device disconnected or multiple access on port?)"


class TtyPort:
    """A ``Port`` on a tty that pyserial's PosixSerial opened (``ser``), read
    with coalescing on ``clock``. Made on the event loop that will use it."""

    def __init__(self, url: str, ser: Any, clock: ReadClock) -> None:
        self.url = url
        self._ser = ser
        self._fd: int = ser.fileno()
        self._loop = asyncio.get_running_loop()
        self._clock = clock
        clock.attach(self._loop)
        #: a read shorter than this waits for the next tick; with coalescing
        #: off (period 0) no read is shorter than 0, so none ever waits
        self._follow = READ_COALESCE_BYTES if clock.period > 0 else 0
        self._wait_tick = False
        self._tick: asyncio.Future[None] | None = None
        #: completed when the tty is readable (or the port closes)
        self._readable_fut: asyncio.Future[None] | None = None
        self._reading = False  # a reader callback is registered
        #: what ``close`` took from the tty; handed out by the next ``read``
        self._final = b""
        #: set once the port failed or began closing; ``read`` raises it
        #: after the final bytes
        self._error: PortClosed | None = None
        self._out = bytearray()
        self._writing = False  # a writer callback is registered
        self._drained: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # -- reading (the hot path) ----------------------------------------------------

    async def read(self) -> bytes:
        if self._wait_tick and self._error is None:
            self._wait_tick = False
            tick = self._tick = self._clock.tick()
            await tick
        else:
            # a read that finds data never suspends: yield, or one busy port
            # would keep the loop (and every other reader) for itself
            await asyncio.sleep(0)
        fd = self._fd
        woken = False
        while True:
            final = self._final
            if final:  # what close() took from the tty comes before anything newer
                self._final = b""
                return final
            error = self._error
            if error is not None:
                raise error
            try:
                data = os.read(fd, MAX_READ_SIZE)
            except OSError as exc:  # BlockingIOError (EAGAIN) included
                if exc.errno not in RETRY_ERRNOS:
                    raise self._fail(f"read failed: {exc}") from None
            else:
                if data:
                    self._wait_tick = len(data) < self._follow
                    return data
                # pyserial sets VMIN=0, so an empty tty reads as b"" rather
                # than EAGAIN; only an empty read right after the selector
                # said "readable" means the device is gone (pyserial's test)
                if woken:
                    raise self._fail(_GONE)
            await self._readable()
            woken = True

    async def _readable(self) -> None:
        """Wait until the tty is readable or the port fails or closes."""
        loop = self._loop
        fut = self._readable_fut = loop.create_future()
        loop.add_reader(self._fd, self._on_readable)
        self._reading = True
        try:
            await fut
        finally:
            self._readable_fut = None
            self._stop_reading()

    def _on_readable(self) -> None:
        # unregister at once: the loop would call this again on every
        # iteration until the woken reader has run
        self._stop_reading()
        fut = self._readable_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _wake_reader(self) -> None:
        """A reader parked on readiness or on a tick runs now (to take the
        final bytes or see the error), not at the next tick."""
        self._stop_reading()
        for fut in (self._readable_fut, self._tick):
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _fail(self, message: str) -> PortClosed:
        """The port is broken: every later read raises; returns the error."""
        if self._error is None:
            self._error = PortClosed(message)
        self._wake_reader()
        return self._error

    # -- writing ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        out = self._out
        if len(out) + len(data) > WRITE_LIMIT:
            raise OSError(errno.ENOBUFS, f"{self.url}: downlink not taken by the device ({len(out)} bytes queued)")
        if out:  # behind what is queued already
            out += data
            return
        try:
            sent = os.write(self._fd, data)
        except OSError as exc:
            if exc.errno not in RETRY_ERRNOS:
                raise self._write_failed(exc) from None
            sent = 0
        if sent < len(data):
            out += memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        out = self._out
        try:
            sent = os.write(self._fd, out)
        except OSError as exc:
            if exc.errno not in RETRY_ERRNOS:
                self._write_failed(exc)
            return
        del out[:sent]
        if not out:
            self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _write_failed(self, exc: OSError) -> PortClosed:
        self._out.clear()
        self._stop_writing()
        return self._fail(f"write failed: {exc}")

    # -- closing ----------------------------------------------------------------

    async def close(self) -> None:
        if self._closed is None:
            # before any await: the bytes the tty holds now are taken before
            # the loop can run anything else, and a parked reader gets them at once
            if self._error is None:
                self._read_final()
                self._error = PortClosed("port closed")
            self._wake_reader()
            self._closed = asyncio.ensure_future(self._finish_close())
        # shielded: a caller that is cancelled must not leave the fd half closed
        await asyncio.shield(self._closed)

    def _read_final(self) -> None:
        """Keep what the tty holds now (bounded, never blocking) for ``read``."""
        got, size = [self._final], len(self._final)
        while size < FINAL_READ_MAX:
            try:
                data = os.read(self._fd, FINAL_READ_MAX - size)
            except OSError:  # gone, or nothing (EAGAIN): what we have is all
                break
            if not data:
                break
            got.append(data)
            size += len(data)
        self._final = b"".join(got)

    async def _finish_close(self) -> None:
        loop = self._loop
        try:
            if self._out:
                drained = self._drained = loop.create_future()
                try:
                    await asyncio.wait_for(drained, CLOSE_TIMEOUT)
                except TimeoutError:
                    pass  # the device is not draining its input: drop the rest
        finally:
            self._out.clear()
            self._stop_writing()
            # off the loop: closing a tty with output still queued in the
            # driver can wait for it to drain (closing_wait, up to 30 s)
            await loop.run_in_executor(None, self._ser.close)
