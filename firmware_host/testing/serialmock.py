"""A scripted pyserial, for tests with no hardware and no pty.

``SerialMock`` patches ``serial.serial_for_url`` (the one place firmware-host
opens pyserial, through ``transport.open_serial``) so each open of a
registered URL returns a :class:`MockSerial` driven by its :class:`MockDevice`:
scripted reads, captured writes, injected open errors, unplug and replug.

Why a socketpair: pyserial-asyncio's transport waits for readiness with
``loop.add_reader(serial.fileno())`` (and ``add_writer`` for downlink). Each
MockSerial owns a socketpair whose one end is its ``fileno()``: a "doorbell"
byte makes it readable exactly while scripted input is pending, and a socket
is always writable. So the real transport, protocol and reader code run
unchanged on a real selector, while every byte read or written is scripted
and captured in memory. No tty, no device node.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import serial

#: what pyserial raises when a USB device disappears under an open port
DISCONNECTED = "device reports readiness to read but returned no data (device disconnected or multiple access on port?)"


class MockSerial:
    """The fake ``serial.Serial`` one open returns (duck-typed: the attributes
    pyserial-asyncio and ``open_serial`` use, plus the usual read/write API)."""

    def __init__(self, device: MockDevice, baudrate: int, **kwargs: Any) -> None:
        self.device = device
        self.port = device.url
        self.baudrate = baudrate
        self.timeout: float | None = kwargs.get("timeout")
        self.write_timeout: float | None = kwargs.get("write_timeout")
        self.open_kwargs = kwargs
        self.is_open = True
        #: set once a read failed (scripted error or unplug); later reads fail too
        self.error: BaseException | None = None
        self._rx, self._bell = socket.socketpair()
        self._rx.setblocking(False)
        self._bell.setblocking(False)
        self._rung = False

    # -- readiness (called with the device lock held) ------------------------

    def _ring(self) -> None:
        if not self._rung and self.is_open:
            self._bell.send(b"\x01")
            self._rung = True

    def _silence(self) -> None:
        if self._rung:
            try:
                while self._rx.recv(64):
                    pass
            except BlockingIOError:
                pass
            self._rung = False

    # -- the pyserial API ------------------------------------------------------

    def fileno(self) -> int:
        if not self.is_open:
            raise serial.PortNotOpenError()
        return self._rx.fileno()

    @property
    def in_waiting(self) -> int:
        return self.device.pending_bytes()

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise serial.PortNotOpenError()
        return self.device._read(self, size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if not self.is_open:
            raise serial.PortNotOpenError()
        return self.device._write(self, bytes(data))

    def flush(self) -> None:
        """Output goes straight to ``device.writes``: nothing to wait for."""

    def reset_input_buffer(self) -> None:
        """Deliberately a no-op: the script is the device's output, and a
        flush at open would make what a test fed race with the open."""

    def reset_output_buffer(self) -> None:
        pass

    def close(self) -> None:
        # runs in an executor thread (transport.py closes off the loop)
        self.device._detach(self)

    def __repr__(self) -> str:
        return f"<MockSerial {self.port} open={self.is_open}>"


class MockDevice:
    """One scripted device behind a URL. Every open of the URL returns a new
    :class:`MockSerial` reading the same script, in order: what one
    connection did not read is read by the next (like bytes that wait in
    the device until someone reads them)."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: every ``write`` call's bytes, in order (the host's downlink)
        self.writes: list[bytes] = []
        #: raised by every open while set (e.g. ``PermissionError(13, ...)``)
        self.open_error: BaseException | None = None
        self.plugged = True
        #: successful opens, and every ``serial_for_url`` call for this URL
        self.opens = 0
        self.open_attempts = 0
        self.baudrates: list[int] = []
        self._items: collections.deque[bytes | BaseException] = collections.deque()
        self._open: list[MockSerial] = []
        self._lock = threading.Lock()  # opens and closes run in executor threads
        self._waiters: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []

    # -- scripting ---------------------------------------------------------------

    def feed(self, *chunks: bytes) -> None:
        """Queue chunks; each is returned by one read (split if the reader asks for less)."""
        with self._lock:
            self._items.extend(bytes(c) for c in chunks if c)
            self._ring_all()

    def fail(self, exc: BaseException | None = None) -> None:
        """Queue a read error after what is already queued; the connection that
        reads it dies (the runtime's reader then reconnects). Non-pyserial
        errors are raised as ``SerialException``, as pyserial reports them."""
        with self._lock:
            self._items.append(exc if exc is not None else serial.SerialException(DISCONNECTED))
            self._ring_all()

    def script(self, items: Iterable[bytes | BaseException]) -> None:
        """Queue a mixed sequence of chunks and errors."""
        for item in items:
            if isinstance(item, BaseException):
                self.fail(item)
            else:
                self.feed(item)

    def unplug(self) -> None:
        """Yank the cable: open ports fail their next read, opens fail until
        :meth:`replug`. Input not yet read stays queued for after the replug."""
        with self._lock:
            self.plugged = False
            for ser in self._open:
                ser.error = ser.error or serial.SerialException(DISCONNECTED)
                ser._ring()
        self._notify()

    def replug(self) -> None:
        with self._lock:
            self.plugged = True
        self._notify()

    # -- inspection ----------------------------------------------------------------

    @property
    def written(self) -> bytes:
        """All downlink bytes so far, joined (the transport may merge or split writes)."""
        return b"".join(self.writes)

    @property
    def is_open(self) -> bool:
        return bool(self._open)

    def pending_bytes(self) -> int:
        with self._lock:
            return sum(len(i) for i in self._items if isinstance(i, bytes))

    @property
    def pending(self) -> int:
        """Scripted items (chunks and errors) not read yet."""
        return len(self._items)

    async def wait_written(self, nbytes: int = 1, timeout: float = 5.0) -> bytes:
        """Until at least ``nbytes`` downlink bytes were written; returns them all."""
        await self.wait_for(lambda: len(self.written) >= nbytes, timeout)
        return self.written

    async def wait_open(self, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: self.is_open, timeout)

    async def wait_drained(self, timeout: float = 5.0) -> None:
        """Until every scripted item was read (by some connection)."""
        await self.wait_for(lambda: not self._items, timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Await ``predicate()`` re-checked on every read, write, open and close (no polling)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event.set)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    event.clear()
                    await event.wait()
        finally:
            self._waiters.remove(entry)

    # -- called by MockSerial / SerialMock -------------------------------------------

    def _notify(self) -> None:
        for loop, wake in list(self._waiters):
            try:
                loop.call_soon_threadsafe(wake)
            except RuntimeError:  # that loop is closed: its waiter is gone
                pass

    def _ring_all(self) -> None:
        for ser in self._open:
            ser._ring()

    def _attach(self, baudrate: int, kwargs: dict[str, Any]) -> MockSerial:
        try:
            with self._lock:
                self.open_attempts += 1
                if self.open_error is not None:
                    raise self.open_error
                if not self.plugged:
                    raise serial.SerialException(
                        2, f"could not open port {self.url}: [Errno 2] No such file or directory: {self.url!r}"
                    )
                ser = MockSerial(self, baudrate, **kwargs)
                self._open.append(ser)
                self.opens += 1
                self.baudrates.append(baudrate)
                if self._items:
                    ser._ring()
            return ser
        finally:
            self._notify()  # failed opens too: tests await open_attempts

    def _detach(self, ser: MockSerial) -> None:
        with self._lock:
            if not ser.is_open:
                return
            ser.is_open = False
            if ser in self._open:
                self._open.remove(ser)
            ser._rx.close()
            ser._bell.close()
        self._notify()

    def _read(self, ser: MockSerial, size: int) -> bytes:
        with self._lock:
            try:
                if ser.error is not None:
                    raise ser.error
                if not self._items:
                    return b""
                item = self._items[0]
                if isinstance(item, BaseException):
                    self._items.popleft()
                    if not isinstance(item, serial.SerialException):
                        # pyserial wraps OS errors so; pyserial-asyncio catches only these
                        err = serial.SerialException(f"read failed: {item}")
                        err.__cause__ = item
                        item = err
                    ser.error = item
                    raise item
                if len(item) > size:
                    self._items[0] = item[size:]
                    return item[:size]
                self._items.popleft()
                return item
            finally:
                if not self._items and ser.error is None:
                    ser._silence()
                self._notify()

    def _write(self, ser: MockSerial, data: bytes) -> int:
        if not self.plugged or ser.error is not None:
            raise serial.SerialException("write failed: [Errno 5] Input/output error")
        self.writes.append(data)
        self._notify()
        return len(data)

    def __repr__(self) -> str:
        return f"<MockDevice {self.url} plugged={self.plugged} open={len(self._open)} pending={len(self._items)}>"


class SerialMock:
    """What the ``fh_serial_mock`` fixture yields: ``serial_for_url`` patched
    for as long as the test runs; ``device(url)`` registers a scripted device."""

    def __init__(self, mocker: Any) -> None:
        self.devices: dict[str, MockDevice] = {}
        #: False: an unregistered URL fails to open instead of reaching real
        #: hardware (a typo must not open the lab's /dev/ttyACM0)
        self.allow_real = False
        self._real = serial.serial_for_url
        # the module attribute, so ``firmware_host.transport.serial.serial_for_url``
        # (looked up at each open) and any other caller of pyserial see the mock
        #: the patch itself (a MagicMock): ``.call_args_list`` etc.
        self.serial_for_url = mocker.patch.object(serial, "serial_for_url", side_effect=self._open)

    def device(self, url: str, *chunks: bytes) -> MockDevice:
        """The scripted device behind ``url`` (created on first use), with ``chunks`` fed."""
        dev = self.devices.get(url)
        if dev is None:
            dev = self.devices[url] = MockDevice(url)
        if chunks:
            dev.feed(*chunks)
        return dev

    __getitem__ = device

    def _open(self, url: str, *args: Any, **kwargs: Any) -> Any:
        dev = self.devices.get(url)
        if dev is None:
            if self.allow_real:
                return self._real(url, *args, **kwargs)
            raise serial.SerialException(
                2, f"could not open port {url}: not a mocked device (register it with fh_serial_mock.device({url!r}))"
            )
        baudrate = kwargs.pop("baudrate", args[0] if args else 9600)
        return dev._attach(baudrate, kwargs)
