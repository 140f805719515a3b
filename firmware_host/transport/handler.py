"""Any Serial that is not a plain tty, through pyserial-asyncio's public API.

pyserial's other URL handlers that give a descriptor to wait on
(``spy://``, ``alt://``, ``hwgrep://``) and Serial objects that are not pyserial's
PosixSerial (the test kit's ``MockSerial``) implement reading in their own
``read``; they are driven by pyserial-asyncio's transport, made with
``serial_asyncio.connection_for_serial`` and read through our
``ChunkProtocol``.

The transport is handed ``SerialAdapter`` rather than the Serial itself,
because of three things upstream does that the runtime cannot have:

- it calls ``flush()`` (tcdrain) and ``close()`` on the event loop when the
  connection ends: the adapter makes both no-ops and the port closes the
  real Serial in an executor once the transport reported the loss;
- it reads 1024 bytes per readiness event (one callback per KiB at 921600
  baud): the adapter reads up to ``MAX_READ_SIZE``;
- it catches only ``SerialException`` from a read or write, so any other
  error would escape into the loop's exception handler with the reader
  still registered (a busy loop): the adapter reports every error as a
  ``SerialException``, which closes the connection (the reader reconnects).
"""

from __future__ import annotations

import asyncio
from typing import Any

import serial
import serial_asyncio

from firmware_host.transport.limits import MAX_READ_SIZE
from firmware_host.transport.stream import ChunkProtocol, StreamPort

__all__ = ["SerialAdapter", "open_handler"]


class SerialAdapter:
    """What pyserial-asyncio's transport sees as its Serial (see the module doc)."""

    def __init__(self, ser: Any) -> None:
        self._ser = ser
        # the transport sets these to 0; the Serial was configured so, in the
        # executor, when it was opened (setting them on a tty reconfigures it)
        self.timeout: float | None = 0
        self.write_timeout: float | None = 0

    def fileno(self) -> int:
        return int(self._ser.fileno())

    def read(self, size: int = 1) -> bytes:
        # ``size`` is the transport's 1024: read what one wakeup can take
        try:
            return bytes(self._ser.read(MAX_READ_SIZE))
        except serial.SerialException:
            raise
        except Exception as exc:
            raise serial.SerialException(f"read failed: {exc}") from exc

    def write(self, data: bytes) -> int:
        try:
            return int(self._ser.write(data))
        except (serial.SerialException, BlockingIOError, InterruptedError):
            raise  # what the transport handles itself
        except Exception as exc:
            raise serial.SerialException(f"write failed: {exc}") from exc

    def flush(self) -> None:
        """The transport has written its buffer; a tcdrain would block the loop."""

    def close(self) -> None:
        """Closed by the port, in an executor, after the transport is done."""


async def open_handler(url: str, ser: Any) -> StreamPort:
    """A port on ``ser``, an open Serial with a file descriptor to wait on."""
    loop = asyncio.get_running_loop()
    protocol = ChunkProtocol()
    transport, _ = await serial_asyncio.connection_for_serial(loop, lambda: protocol, SerialAdapter(ser))

    async def close_serial() -> None:
        await loop.run_in_executor(None, ser.close)

    return StreamPort(url, transport, protocol, on_closed=close_serial)
