"""A ``Port`` over an asyncio transport: ``socket://`` and pyserial's URL handlers.

Both kinds of connection are an asyncio transport feeding a protocol, so one
port class serves them: ``ChunkProtocol`` collects what arrives (from the
moment of connection, so a device's greeting is kept) and hands it over in
one piece per ``read``; ``StreamPort`` writes through the transport with a
bounded queue and closes it with a deadline. The port reads the protocol's
state only through the protocol's own methods.

These ports are not read on the shared tick: a socket or a URL handler
delivers what the transport read at each readiness, as before.
"""

from __future__ import annotations

import asyncio
import collections
import errno
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from firmware_host.errors import PortClosed
from firmware_host.transport.limits import CLOSE_TIMEOUT, READ_LIMIT, WRITE_LIMIT

__all__ = ["ChunkProtocol", "StreamPort"]


class _Transport(Protocol):
    """What ``StreamPort`` uses of a transport (asyncio's and pyserial-asyncio's)."""

    def write(self, data: Any) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ChunkProtocol(asyncio.Protocol):
    """Collects chunks from the transport; ``read`` hands them over in one piece."""

    def __init__(self, limit: int = READ_LIMIT) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: PortClosed | None = None
        self._eof = False
        self._transport: asyncio.ReadTransport | None = None
        self._lost = asyncio.Event()

    # -- the transport's side --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            message = str(exc) or type(exc).__name__
        else:
            message = "connection closed by the device" if self._eof else "port closed"
        self._error = PortClosed(message)
        self._lost.set()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the port's side -----------------------------------------------------------

    async def read(self) -> bytes:
        """What arrived since the last read; PortClosed once it is all read
        and the connection is gone."""
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
        if self._paused and self._transport is not None and not self._lost.is_set():
            self._paused = False
            self._transport.resume_reading()
        return data

    def lost(self) -> PortClosed | None:
        """Why the connection is gone, or None while it lives."""
        return self._error

    async def wait_lost(self) -> None:
        await self._lost.wait()


class StreamPort:
    """A ``Port`` over ``transport`` feeding ``protocol``; ``on_closed`` runs
    once the transport has reported the connection lost (e.g. closing a
    pyserial Serial in an executor)."""

    def __init__(
        self,
        url: str,
        transport: _Transport,
        protocol: ChunkProtocol,
        on_closed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self._transport = transport
        self._protocol = protocol
        self._on_closed = on_closed
        self._closed: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        return await self._protocol.read()

    def write(self, data: bytes) -> None:
        error = self._protocol.lost()
        if error is not None:
            raise error
        if self._closed is not None:
            raise PortClosed("port closed")
        queued = self._transport.get_write_buffer_size()
        if queued + len(data) > WRITE_LIMIT:
            raise OSError(errno.ENOBUFS, f"{self.url}: downlink not taken by the device ({queued} bytes queued)")
        self._transport.write(data)

    async def close(self) -> None:
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._close())
        # shielded: a caller that is cancelled must not leave the port half closed
        await asyncio.shield(self._closed)

    async def _close(self) -> None:
        transport, protocol = self._transport, self._protocol
        transport.close()  # writes queued downlink bytes first
        try:
            try:
                await asyncio.wait_for(protocol.wait_lost(), CLOSE_TIMEOUT)
            except TimeoutError:
                transport.abort()  # the device is not draining its input; drop the rest
                # abort reports the loss at the loop's next iteration; the bound is a guard
                await asyncio.wait_for(protocol.wait_lost(), CLOSE_TIMEOUT)
        finally:
            if self._on_closed is not None:
                await self._on_closed()
