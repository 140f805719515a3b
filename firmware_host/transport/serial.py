"""The serial seam: open a port by path or pyserial URL, read, write, close.

Everything above this module sees only the small ``Port`` interface, so tests
can inject ``FakePort`` (scripted chunks, injected errors, captured writes)
instead of patching pyserial. The real implementation is pyserial +
pyserial-asyncio; opening and closing run in an executor because both can
block on real hardware (a USB adapter mid-enumeration, tcdrain on close).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import os
from collections.abc import Callable
from typing import Any

import serial
import serial_asyncio
from serial.serialposix import Serial as _PosixSerial

from firmware_host._sync import ReadClock, read_clock
from firmware_host.errors import PortClosed

#: bytes buffered per port before the transport stops reading (backpressure)
READ_LIMIT = 1 << 20
#: bytes asked of the OS per readiness event; pyserial-asyncio's 1024 would
#: mean one callback per 1 KiB at 921600 baud
MAX_READ_SIZE = 1 << 16
CLOSE_TIMEOUT = 1.0
#: After a read shorter than READ_COALESCE_BYTES, the next read of a tty waits
#: for the next tick of the loop's shared ReadClock (every READ_COALESCE
#: seconds unless ``[serial] read_coalesce`` says otherwise), like a USB-serial
#: adapter's latency timer: busy ports then cost one wakeup each per tick, all
#: in one loop iteration, instead of one per USB packet each, and a silent
#: port costs nothing (it waits for readiness). A read that returned more is
#: followed at once, so fast links are never held back. The receive timestamp
#: is taken after the read, so this adds at most one tick to wire->host
#: latency and nothing to receive->sink latency.
READ_COALESCE = 0.02
#: A tty read returns at most what the line discipline holds: 4095 bytes
#: (n_tty's 4 KiB buffer, measured on ptys). A read this close to that means
#: more is waiting in the driver. The bar sits well above one tick of 921600
#: baud (1,843 bytes, or ~2,300 for a tick that fires late) so paced fast
#: ports are not followed at once only to find a few bytes.
READ_COALESCE_BYTES = 3584
#: Closing a tty first takes what the kernel still holds for it (up to this
#: much), so frames that had arrived when the runtime stopped are decoded and
#: flushed, not dropped with the file descriptor.
FINAL_READ_MAX = 1 << 16

_RETRY_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class _ChunkProtocol(asyncio.Protocol):
    """Collects chunks from the transport; ``read`` hands them over in one piece."""

    def __init__(self, limit: int = READ_LIMIT) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._transport: asyncio.Transport | None = None
        self.lost: asyncio.Event = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._error = PortClosed(str(exc) if exc else "port closed")
        self.lost.set()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused and self._transport is not None and not self.lost.is_set():
            self._paused = False
            self._transport.resume_reading()
        return data


class _SerialTransport(serial_asyncio.SerialTransport):  # type: ignore[misc]
    """pyserial-asyncio's transport, minus the blocking parts of closing.

    Upstream's ``_call_connection_lost`` calls tcdrain and ``Serial.close``
    on the event loop; on a wedged USB adapter either can block for seconds.

    With ``direct`` set (a tty opened by pyserial's PosixSerial), the transport
    does not read: ``SerialPort`` reads the file descriptor itself (one
    ``os.read`` per wakeup instead of pyserial's select + read + select + two
    copies), and the transport keeps writing and closing.
    """

    serial_closed: asyncio.Future[None] | None = None
    direct = False
    _direct_fd: int | None = None

    def _ensure_reader(self) -> None:
        if not self.direct:
            super()._ensure_reader()

    def add_direct_reader(self, callback: Callable[[], Any]) -> None:
        if self._direct_fd is None and not self._closing:
            ser: Any = self._serial
            loop: Any = self._loop
            fd = ser.fileno()
            loop.add_reader(fd, callback)
            self._direct_fd = fd

    def remove_direct_reader(self) -> None:
        fd = self._direct_fd
        if fd is not None:
            self._direct_fd = None
            loop: Any = self._loop
            loop.remove_reader(fd)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        # pyserial-asyncio is untyped and resets these to None below
        ser: Any = self._serial  # type: ignore[has-type]
        protocol: Any = self._protocol  # type: ignore[has-type]
        loop: Any = self._loop  # type: ignore[has-type]
        # before the executor closes the fd: a closed fd left in the selector
        # would clash with the next one that reuses its number
        self.remove_direct_reader()
        try:
            protocol.connection_lost(exc)
        finally:
            self._write_buffer.clear()
            self._serial = None
            self._protocol = None
            self._loop = None
            self.serial_closed = loop.run_in_executor(None, ser.close)


class SerialPort:
    """A real port: pyserial in non-blocking mode under pyserial-asyncio.

    A tty (pyserial's PosixSerial) is read straight from its file descriptor,
    with read coalescing (``READ_COALESCE``); anything else (``socket://`` and
    the other URL handlers, mocks) is read through the transport.
    """

    def __init__(self, url: str, transport: _SerialTransport, protocol: _ChunkProtocol) -> None:
        self.url = url
        self._transport = transport
        self._protocol = protocol
        self._ser = transport.serial
        self._wait_tick = False
        self._clock: ReadClock | None = None
        self._fd: int | None = None
        #: what ``close`` read from the tty; handed out by the next ``read``
        self._final = b""
        self._tick: asyncio.Future[None] | None = None
        if transport.direct:
            self._fd = self._ser.fileno()

    async def read(self) -> bytes:
        if self._fd is None:
            return await self._protocol.read()
        clock = self._clock
        if clock is None:  # looked up once: a port lives on one loop
            clock = self._clock = read_clock(READ_COALESCE)
        if self._wait_tick and clock.period > 0 and not self._transport.is_closing():
            self._wait_tick = False
            tick = self._tick = clock.tick()
            await tick
        else:
            # a read that finds data never suspends: yield, or one busy port
            # would keep the loop (and every other reader) for itself
            await asyncio.sleep(0)
        protocol = self._protocol
        woken = False
        while True:
            final = self._final
            if final:  # what close() took from the tty comes before anything newer
                self._final = b""
                return final
            error = protocol._error
            if error is not None:
                raise error
            data = self._read_now(woken)
            if data:
                self._wait_tick = len(data) < READ_COALESCE_BYTES
                return data
            await self._readable()
            woken = True

    def _read_now(self, woken: bool) -> bytes | None:
        """What the tty holds now (None: nothing yet); PortClosed when it is gone.

        pyserial sets VMIN=0, so an empty tty reads as b"" rather than EAGAIN;
        only an empty read right after the selector said "readable" means the
        device is gone (pyserial's own test).
        """
        ser = self._ser
        try:
            if "read" in ser.__dict__:
                # the Serial's read was replaced (instrumentation, tests): honour it
                return ser.read(MAX_READ_SIZE) or None
            data = os.read(self._fd, MAX_READ_SIZE)  # type: ignore[arg-type]
        except BlockingIOError:
            return None
        except (OSError, serial.SerialException) as exc:
            if isinstance(exc, OSError) and exc.errno in _RETRY_ERRNOS:
                return None
            self._fail(str(exc) if isinstance(exc, serial.SerialException) else f"read failed: {exc}")
        if not data:
            if not woken:
                return None
            self._fail(
                "device reports readiness to read but returned no data "
                "(device disconnected or multiple access on port?)"
            )
        return data

    def _fail(self, message: str) -> None:
        exc = PortClosed(message)
        transport = self._transport
        if not transport.is_closing():
            transport._close(exc)  # as upstream's _read_ready does on a read error
        raise exc

    async def _readable(self) -> None:
        """Wait until the tty is readable or the port closes."""
        protocol, transport = self._protocol, self._transport
        fut = asyncio.get_running_loop().create_future()
        protocol._waiter = fut  # connection_lost wakes it

        def ready() -> None:
            transport.remove_direct_reader()
            if not fut.done():
                fut.set_result(None)

        transport.add_direct_reader(ready)
        try:
            await fut
        finally:
            protocol._waiter = None
            transport.remove_direct_reader()

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def _read_final(self) -> None:
        """Keep what the tty holds now (bounded, never blocking) for ``read``."""
        fd, got, size = self._fd, [self._final], len(self._final)
        if fd is None or "read" in self._ser.__dict__:
            return
        while size < FINAL_READ_MAX:
            try:
                data = os.read(fd, FINAL_READ_MAX - size)
            except OSError:  # gone, or nothing (EAGAIN): what we have is all
                break
            if not data:
                break
            got.append(data)
            size += len(data)
        self._final = b"".join(got)

    async def close(self) -> None:
        transport = self._transport
        if not transport.is_closing():
            if self._protocol._error is None:
                self._read_final()
            transport.close()  # writes queued downlink bytes first
            # a parked reader takes the final bytes now, not at the next tick
            # or once the downlink has drained and connection_lost has run
            tick = self._tick
            if tick is not None and not tick.done():
                tick.set_result(None)
            if self._final:
                self._protocol._wake()
        try:
            await asyncio.wait_for(self._protocol.lost.wait(), CLOSE_TIMEOUT)
        except TimeoutError:
            transport.abort()  # the device is not draining its input; drop the rest
            await self._protocol.lost.wait()
        if transport.serial_closed is not None:
            await transport.serial_closed


def _open_url(url: str, baudrate: int) -> Any:
    """``serial.serial_for_url``, except that a ``socket://`` port keeps its input.

    pyserial flushes a port's input as it opens it. On a tty that drops stale
    line noise; on a socket it drops whatever the device sent as soon as it
    accepted the connection (a greeting, the first frames), racing the open in
    the executor against the device.
    """
    if not url.startswith("socket://"):
        return serial.serial_for_url(url, baudrate=baudrate, timeout=0)
    ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0, do_not_open=True)
    ser.reset_input_buffer = _keep_input
    try:
        ser.open()
    finally:
        del ser.reset_input_buffer
    return ser


def _keep_input() -> None:
    pass


async def open_serial(url: str, baudrate: int) -> SerialPort:
    """Open ``url`` (a path or a pyserial URL such as ``socket://host:port``)."""
    loop = asyncio.get_running_loop()
    try:
        ser = await loop.run_in_executor(None, functools.partial(_open_url, url, baudrate))
    except (serial.SerialException, OSError, ValueError) as exc:
        raise PortClosed(f"cannot open {url}: {exc}") from exc
    protocol = _ChunkProtocol()
    transport = _SerialTransport(loop, protocol, ser)
    transport._max_read_size = MAX_READ_SIZE
    # a tty's fd is read directly; URL handlers (socket://, ...) keep the transport's reads
    transport.direct = isinstance(ser, _PosixSerial)
    return SerialPort(url, transport, protocol)
