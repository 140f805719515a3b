"""The seam between the transport and everything above it.

An uplink reader sees only ``Port`` (read, write, close) and opens ports
through a ``PortOpener``; the real backend (``serial.py``) and the scripted
fake (``fake.py``) both fit, so tests inject a fake instead of patching
pyserial.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from firmware_host.errors import PortClosed

__all__ = ["Port", "PortClosed", "PortOpener", "UrlResolver"]


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

    async def close(self) -> None: ...


#: ``opener(url, baudrate) -> Port``; the runtime takes one so tests can swap it
PortOpener = Callable[[str, int], Awaitable[Port]]

#: ``resolve() -> url``: a fixed port, or a USB match looked up at each connect
UrlResolver = Callable[[], Awaitable[str]]
