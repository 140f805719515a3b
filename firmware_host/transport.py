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
import functools
from typing import Awaitable, Callable, Iterable, Protocol

import serial
import serial_asyncio

#: bytes buffered per port before the transport stops reading (backpressure)
READ_LIMIT = 1 << 20
#: bytes asked of the OS per readiness event; pyserial-asyncio's 1024 would
#: mean one callback per 1 KiB at 921600 baud
MAX_READ_SIZE = 1 << 16
CLOSE_TIMEOUT = 1.0


class PortClosed(ConnectionError):
    """The port is gone (unplugged, read error, or closed by us)."""


class Port(Protocol):
    """What an uplink reader needs from a port."""

    url: str

    async def read(self) -> bytes:
        """Return the bytes received since the last read (at least one).

        Raises PortClosed when the port is gone.
        """
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for the device without blocking."""
        ...

    async def close(self) -> None:
        ...


#: ``opener(url, baudrate) -> Port``; the runtime takes one so tests can swap it
PortOpener = Callable[[str, int], Awaitable[Port]]


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
    """

    serial_closed: asyncio.Future[None] | None = None

    def _call_connection_lost(self, exc: Exception | None) -> None:
        ser, protocol, loop = self._serial, self._protocol, self._loop
        try:
            protocol.connection_lost(exc)
        finally:
            self._write_buffer.clear()
            self._serial = None
            self._protocol = None
            self._loop = None
            self.serial_closed = loop.run_in_executor(None, ser.close)


class SerialPort:
    """A real port: pyserial in non-blocking mode under pyserial-asyncio."""

    def __init__(self, url: str, transport: _SerialTransport, protocol: _ChunkProtocol) -> None:
        self.url = url
        self._transport = transport
        self._protocol = protocol

    async def read(self) -> bytes:
        return await self._protocol.read()

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    async def close(self) -> None:
        transport = self._transport
        if not transport.is_closing():
            transport.close()  # writes queued downlink bytes first
        try:
            await asyncio.wait_for(self._protocol.lost.wait(), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            transport.abort()  # the device is not draining its input; drop the rest
            await self._protocol.lost.wait()
        if transport.serial_closed is not None:
            await transport.serial_closed


async def open_serial(url: str, baudrate: int) -> SerialPort:
    """Open ``url`` (a path or a pyserial URL such as ``socket://host:port``)."""
    loop = asyncio.get_running_loop()
    try:
        ser = await loop.run_in_executor(
            None, functools.partial(serial.serial_for_url, url, baudrate=baudrate, timeout=0)
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise PortClosed(f"cannot open {url}: {exc}") from exc
    protocol = _ChunkProtocol()
    transport = _SerialTransport(loop, protocol, ser)
    transport._max_read_size = MAX_READ_SIZE
    return SerialPort(url, transport, protocol)


class FakePort:
    """A scripted port for unit tests: replays chunks, raises injected errors.

    Items are bytes (returned by one ``read``) or exceptions (raised by the
    ``read`` that reaches them, which closes the port).
    """

    def __init__(self, items: Iterable[bytes | BaseException] = (), url: str = "fake://") -> None:
        self.url = url
        self.writes: list[bytes] = []
        self.closed = False
        self._items: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        for item in items:
            self._items.put_nowait(item)

    def feed(self, data: bytes) -> None:
        self._items.put_nowait(data)

    def fail(self, exc: BaseException | None = None) -> None:
        self._items.put_nowait(exc or PortClosed("unplugged"))

    async def read(self) -> bytes:
        if self.closed and self._items.empty():
            raise PortClosed("port closed")
        item = await self._items.get()
        if isinstance(item, BaseException):
            self.closed = True
            raise item
        return item

    def write(self, data: bytes) -> None:
        if self.closed:
            raise PortClosed("port closed")
        self.writes.append(bytes(data))

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._items.put_nowait(PortClosed("port closed"))  # wakes a pending read


class FakeOpener:
    """A ``PortOpener`` over scripted ports: each open of a URL takes the next
    item of its script, a FakePort or an exception to raise from the open."""

    def __init__(self, scripts: dict[str, list[FakePort | BaseException]]) -> None:
        self.scripts = {url: collections.deque(items) for url, items in scripts.items()}
        self.opens: collections.Counter[str] = collections.Counter()

    async def __call__(self, url: str, baudrate: int) -> Port:
        self.opens[url] += 1
        script = self.scripts.get(url)
        if not script:
            raise PortClosed(f"cannot open {url}: no such device")
        item = script.popleft()
        if isinstance(item, BaseException):
            raise item
        return item
