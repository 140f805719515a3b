"""Scripted ports for tests: ``FakePort`` replays chunks and raises injected
errors, ``FakeOpener`` hands out scripted ports (or open failures) per URL."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

from firmware_host.errors import PortClosed
from firmware_host.transport.base import Port

__all__ = ["FakeOpener", "FakePort"]


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
