"""The real serial backend: open a port by path or URL, as a ``PortOpener``.

``SerialBackend`` is what the runtime opens ports with (``await
backend(url, baudrate) -> Port``). It owns the state its ports share, so no
module holds any: the ``ReadClock`` every busy tty waits on (period from
``[serial] read_coalesce``), the descriptor budget (``fds.py``) that keeps
descriptors free for the control socket and the sinks, and what RFC 2217
servers were found not to acknowledge (``rfc2217.ServerQuirks``).

Which port a URL gets:

- ``socket://HOST:PORT``: a connection made by asyncio (``tcp.py``);
- ``rfc2217://HOST:PORT``: the same, with our RFC 2217 client setting the
  far end's line (``rfc2217.py``);
- a tty, i.e. whatever pyserial opens as its plain PosixSerial: read and
  written through its descriptor on the event loop, with read coalescing
  (``tty.py``);
- anything else pyserial opens (its other URL handlers, the test kit's
  MockSerial, which patches ``serial.serial_for_url``): pyserial-asyncio
  (``handler.py``).

A URL whose scheme the transport cannot read (``loop://``, ``cp2110://``)
is refused at open, in the words the config uses to refuse it at load
(``supported_url``; the table is ``config._check.PORT_URL_SCHEMES``).

pyserial's open runs in an executor: on real hardware it can block (a USB
adapter mid-enumeration).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import serial
from serial.serialposix import Serial as PosixSerial

from firmware_host._sync import ReadClock
from firmware_host.config._check import port_url_problem
from firmware_host.errors import PortClosed
from firmware_host.transport.base import Port
from firmware_host.transport.fds import FD_RESERVE, TTY_COST, FdBudget
from firmware_host.transport.handler import open_handler
from firmware_host.transport.limits import READ_COALESCE
from firmware_host.transport.openerror import open_failed
from firmware_host.transport.rfc2217 import ServerQuirks, is_rfc2217_url, open_rfc2217
from firmware_host.transport.tcp import is_socket_url, open_socket
from firmware_host.transport.tty import TtyPort

__all__ = ["READ_COALESCE", "SerialBackend", "open_serial", "supported_url"]


def supported_url(url: str) -> str | None:
    """Why the transport cannot read ``url`` (a path or pyserial URL), or None."""
    return port_url_problem(url)


class SerialBackend:
    """Opens ttys, ``socket://`` and pyserial URLs; a ``PortOpener``.

    ``read_coalesce``: seconds a busy tty waits between reads (0: read at
    every readiness). ``fd_reserve``: descriptors an open must leave free.
    Use one backend per event loop (a runtime has one).
    """

    def __init__(self, *, read_coalesce: float = READ_COALESCE, fd_reserve: int = FD_RESERVE) -> None:
        self.clock = ReadClock(read_coalesce)
        self.fds = FdBudget(fd_reserve)
        #: what RFC 2217 servers did not acknowledge, not waited for again
        self.quirks = ServerQuirks()

    async def __call__(self, url: str, baudrate: int) -> Port:
        loop = asyncio.get_running_loop()
        problem = supported_url(url)
        if problem is not None:
            raise PortClosed(f"cannot open {url}: {problem}")
        if is_socket_url(url) or is_rfc2217_url(url):
            with self.fds.connecting():
                await loop.run_in_executor(None, self.fds.check, url)
                if is_socket_url(url):
                    return await open_socket(url)
                return await open_rfc2217(url, baudrate, self.quirks)
        opening = loop.run_in_executor(None, functools.partial(self._open, url, baudrate))
        try:
            # shielded: if this open is abandoned, the Serial it makes is closed, not leaked
            ser = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_abandoned)
            raise
        if type(ser) is PosixSerial:  # exactly: spy:// and hwgrep:// subclass it to read their own way
            return TtyPort(url, ser, self.clock)
        return await open_handler(url, ser)

    def _open(self, url: str, baudrate: int) -> Any:
        """In the executor: pyserial's open, if the descriptors allow it."""
        try:
            with self.fds.opening(url, TTY_COST):
                ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0)
        except PortClosed:  # the descriptor check, already in words
            raise
        except (serial.SerialException, OSError, ValueError) as exc:
            raise open_failed(url, exc) from exc
        if type(ser) is PosixSerial:
            return ser
        try:
            ser.write_timeout = 0  # non-blocking writes, as pyserial-asyncio expects
            ser.fileno()  # the transport waits on it
        except Exception as exc:
            ser.close()
            reason = "not supported (pyserial gives it no file descriptor to wait on)"
            raise PortClosed(f"cannot open {url}: {reason}") from exc
        return ser


def _close_abandoned(opening: asyncio.Future[Any]) -> None:
    """Close the Serial an abandoned open made, off the loop."""
    if opening.cancelled() or opening.exception() is not None:
        return
    ser = opening.result()
    try:
        asyncio.get_running_loop().run_in_executor(None, ser.close)
    except RuntimeError:
        # the executor is shut down: asyncio.run cancels a pending open as it
        # ends, and the open lands while the executor drains
        threading.Thread(target=ser.close, name="firmware-host-close", daemon=True).start()


async def open_serial(url: str, baudrate: int) -> Port:
    """Open one port with a backend of its own (its own read clock and
    descriptor budget): for scripts and tests. A runtime opens through one
    shared ``SerialBackend``, so that its busy ttys wake on one tick."""
    return await SerialBackend()(url, baudrate)
