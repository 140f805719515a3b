"""The serial backend (``firmware_host/transport/serial.py``) and the pyserial
URL handler path (``handler.py``): which port each URL gets, what an open that
fails says, the descriptor budget at the edge, and ``SerialAdapter``'s
translation of errors (tests written from mutation testing,
docs/testing-internals.md).

Real ptys throughout (pyserial's ``spy://`` on a pty is a pyserial URL handler
that is not a plain tty); a stand-in Serial only where no pty can do it (a
Serial without a descriptor, a read that raises something unexpected).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import threading
from collections.abc import Iterator

import pytest
import serial

from firmware_host.errors import PortClosed
from firmware_host.transport.fds import open_descriptors
from firmware_host.transport.handler import SerialAdapter
from firmware_host.transport.rfc2217 import ServerQuirks
from firmware_host.transport.serial import SerialBackend, _close_abandoned, open_serial, supported_url
from firmware_host.transport.stream import StreamPort
from firmware_host.transport.tty import TtyPort

pytestmark = pytest.mark.timeout(15)

ENOENT = "no such port: `firmware-host devices` lists the serial ports of this host"


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty() -> Iterator[Pty]:
    pair = Pty()
    yield pair
    pair.close()


@contextlib.contextmanager
def soft_nofile(value: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def read_some(port: object, n: int) -> bytes:
    got = b""
    async with asyncio.timeout(5):
        while len(got) < n:
            got += await port.read()  # type: ignore[attr-defined]
    return got


def test_the_backend_owns_its_clock_budget_and_quirks():
    backend = SerialBackend(read_coalesce=0.3, fd_reserve=7)
    assert backend.clock.period == 0.3
    assert backend.fds.reserve == 7
    assert isinstance(backend.quirks, ServerQuirks)
    default = SerialBackend()
    assert default.clock.period == 0.02
    assert default.fds.reserve == 32
    assert default.clock is not backend.clock


def test_supported_url_says_why_not():
    assert supported_url("/dev/ttyUSB0") is None
    assert supported_url("socket://h:1") is None
    assert supported_url("loop://").startswith("loop:// is not supported: ")  # type: ignore[union-attr]


async def test_a_tty_gets_a_tty_port_on_the_backends_clock(pty):
    backend = SerialBackend(read_coalesce=30)
    port = await backend(pty.name, 115200)
    try:
        assert type(port) is TtyPort
        assert port.url == pty.name
        os.write(pty.master, b"a")
        assert await read_some(port, 1) == b"a"
        reading = asyncio.ensure_future(port.read())  # short: waits for the backend's tick
        await asyncio.sleep(0)
        assert backend.clock.waiting == 1
        reading.cancel()
        port.write(b"down")
        assert os.read(pty.master, 10) == b"down"
    finally:
        await port.close()


async def test_a_pyserial_url_handler_gets_a_stream_port(pty):
    port = await open_serial(f"spy://{pty.name}", 57600)
    try:
        assert type(port) is StreamPort
        assert port.url == f"spy://{pty.name}"
        os.write(pty.master, b"hello")
        assert await read_some(port, 5) == b"hello"
        port.write(b"\x00\xffdown")
        got = b""
        async with asyncio.timeout(5):
            while len(got) < 6:
                await asyncio.sleep(0.01)
                try:
                    got += os.read(pty.master, 10)
                except BlockingIOError:
                    pass
        assert got == b"\x00\xffdown"
    finally:
        await port.close()


async def test_a_socket_url_gets_a_connected_stream_port():
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        got.put_nowait(await reader.readexactly(3))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port_no = server.sockets[0].getsockname()[1]
    backend = SerialBackend()
    port = await backend(f"socket://127.0.0.1:{port_no}", 9600)
    try:
        assert type(port) is StreamPort
        assert await read_some(port, 2) == b"hi"
        port.write(b"yes")
        assert await asyncio.wait_for(got.get(), 5) == b"yes"
    finally:
        await port.close()
        server.close()
        await server.wait_closed()


async def test_an_unsupported_url_is_refused_before_any_open():
    with pytest.raises(PortClosed) as info:
        await SerialBackend()("loop://", 9600)
    assert str(info.value) == f"cannot open loop://: {supported_url('loop://')}"


async def test_a_missing_port_says_so_in_one_line(tmp_path):
    path = str(tmp_path / "nope")
    with pytest.raises(PortClosed) as info:
        await SerialBackend()(path, 9600)
    assert str(info.value) == f"cannot open {path}: {ENOENT}"
    assert isinstance(info.value.__cause__, serial.SerialException)


async def test_a_bad_baudrate_says_so_in_one_line(pty):
    with pytest.raises(PortClosed) as info:
        await SerialBackend()(pty.name, -1)
    assert str(info.value) == f"cannot open {pty.name}: Not a valid baudrate: -1"


async def test_the_tty_open_costs_five_descriptors(pty):
    backend = SerialBackend(fd_reserve=3)
    # one open first, so that what a first open brings along (the executor's thread, and
    # whatever a tracer opens for it) is in place before the count
    await (await backend(pty.name, 9600)).close()
    used = open_descriptors()
    assert used is not None
    with soft_nofile(used + 3 + 4):  # one short of the cost of 5
        with pytest.raises(PortClosed) as info:
            await backend(pty.name, 9600)
    assert str(info.value) == (
        f"cannot open {pty.name}: too many open files ({used} of {used + 7} descriptors in use,"
        " 3 kept free for the control socket and sinks); raise the limit: ulimit -n / LimitNOFILE="
    )
    assert info.value.__cause__ is None
    with soft_nofile(used + 3 + 5):
        port = await backend(pty.name, 9600)
    await port.close()


async def test_a_socket_open_checks_the_budget_first():
    backend = SerialBackend(fd_reserve=3)
    await asyncio.get_running_loop().run_in_executor(None, int)  # the executor's thread is in place before the count
    used = open_descriptors()
    assert used is not None
    with soft_nofile(used + 3):  # a socket costs 1: one short
        with pytest.raises(PortClosed) as info:
            await backend("socket://127.0.0.1:9", 9600)
    assert str(info.value).startswith("cannot open socket://127.0.0.1:9: too many open files (")
    with soft_nofile(used + 3):
        with pytest.raises(PortClosed) as info:
            await backend("rfc2217://127.0.0.1:9", 9600)
    assert str(info.value).startswith("cannot open rfc2217://127.0.0.1:9: too many open files (")
    assert backend.fds._connecting == 0  # released after the refusal


async def test_an_rfc2217_open_uses_the_backends_quirks():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"rfc2217://127.0.0.1:{server.sockets[0].getsockname()[1]}?timeout=0.1"
    backend = SerialBackend()
    try:
        port = await asyncio.wait_for(backend(url, 9600), 5)
        await port.close()
        assert backend.quirks.ignored(url) == frozenset({1, 2, 3, 4, 44})
    finally:
        server.close()
        await server.wait_closed()


class NoDescriptor:
    """A Serial (not pyserial's tty) with no descriptor to wait on."""

    def __init__(self) -> None:
        self.closed = False
        self.write_timeout: float | None = None

    def fileno(self) -> int:
        raise serial.SerialException("no fileno")

    def close(self) -> None:
        self.closed = True


async def test_a_serial_without_a_descriptor_is_closed_and_refused(mocker):
    made = NoDescriptor()
    mocker.patch("firmware_host.transport.serial.serial.serial_for_url", return_value=made)
    with pytest.raises(PortClosed) as info:
        await SerialBackend()("/dev/whatever", 9600)
    assert str(info.value) == (
        "cannot open /dev/whatever: not supported (pyserial gives it no file descriptor to wait on)"
    )
    assert made.closed
    assert made.write_timeout == 0


async def test_the_open_asks_pyserial_for_a_non_blocking_port(mocker, pty):
    real = serial.serial_for_url
    seen = []

    def spy(url, **kwargs):
        seen.append((url, kwargs))
        return real(url, **kwargs)

    made = []

    def keep(url, **kwargs):
        made.append(spy(url, **kwargs))
        return made[-1]

    mocker.patch("firmware_host.transport.serial.serial.serial_for_url", side_effect=keep)
    port = await SerialBackend()(pty.name, 38400)
    await port.close()
    assert seen == [(pty.name, {"baudrate": 38400, "timeout": 0})]
    # a tty is left as pyserial opened it (setting write_timeout would reconfigure it)
    assert made[0].write_timeout is None


async def test_an_abandoned_open_that_failed_or_was_cancelled_leaves_nothing_to_close():
    loop = asyncio.get_running_loop()
    failed = loop.create_future()
    failed.set_exception(PortClosed("cannot open /dev/x: gone"))
    _close_abandoned(failed)  # nothing raised, nothing to close
    cancelled = loop.create_future()
    cancelled.cancel()
    _close_abandoned(cancelled)


class Closing:
    def __init__(self) -> None:
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    def close(self) -> None:
        self.thread = threading.current_thread()
        self.closed.set()


async def test_an_abandoned_open_is_closed_in_the_executor():
    loop = asyncio.get_running_loop()
    opened = loop.create_future()
    ser = Closing()
    opened.set_result(ser)
    _close_abandoned(opened)
    assert await asyncio.to_thread(ser.closed.wait, 5)
    assert ser.thread is not threading.main_thread()


def test_an_abandoned_open_without_a_loop_is_closed_by_a_daemon_thread_of_its_own():
    """As asyncio.run ends: no running loop (its executor is shut down)."""
    loop = asyncio.new_event_loop()
    try:
        opened = loop.create_future()
        ser = Closing()
        opened.set_result(ser)
        _close_abandoned(opened)  # called with no loop running
        assert ser.closed.wait(5)
        assert ser.thread is not None
        assert ser.thread.name == "firmware-host-close"
        assert ser.thread.daemon  # a wedged close cannot hold the process open
    finally:
        loop.close()


# -- SerialAdapter -----------------------------------------------------------------------


class Recorder:
    def __init__(self, read_error: BaseException | None = None, write_error: BaseException | None = None) -> None:
        self.sizes: list[int] = []
        self.read_error, self.write_error = read_error, write_error
        self.closed = self.flushed = False

    def fileno(self) -> str:
        return "7"

    def read(self, size: int) -> bytearray:
        self.sizes.append(size)
        if self.read_error:
            raise self.read_error
        return bytearray(b"got")

    def write(self, data: bytes) -> float:
        if self.write_error:
            raise self.write_error
        return 2.0

    def close(self) -> None:
        self.closed = True

    def flush(self) -> None:
        self.flushed = True


def test_the_adapter_reads_up_to_64_kib_and_returns_bytes():
    ser = Recorder()
    adapter = SerialAdapter(ser)
    data = adapter.read(1024)
    assert data == b"got" and type(data) is bytes
    assert ser.sizes == [65536]
    assert adapter.fileno() == 7
    assert adapter.timeout == 0 and adapter.write_timeout == 0
    assert adapter.write(b"ab") == 2


def test_the_adapter_neither_flushes_nor_closes_the_serial():
    ser = Recorder()
    adapter = SerialAdapter(ser)
    adapter.flush()
    adapter.close()
    assert not ser.flushed and not ser.closed


def test_the_adapter_reports_every_read_error_as_a_serial_exception():
    own = serial.SerialException("theirs")
    with pytest.raises(serial.SerialException) as info:
        SerialAdapter(Recorder(read_error=own)).read()
    assert info.value is own
    cause = ValueError("odd")
    with pytest.raises(serial.SerialException) as info:
        SerialAdapter(Recorder(read_error=cause)).read()
    assert str(info.value) == "read failed: odd"
    assert info.value.__cause__ is cause


@pytest.mark.parametrize(
    "error", [serial.SerialException("s"), BlockingIOError(errno.EAGAIN, "again"), InterruptedError()]
)
def test_the_adapter_passes_on_the_write_errors_the_transport_handles(error):
    with pytest.raises(type(error)) as info:
        SerialAdapter(Recorder(write_error=error)).write(b"x")
    assert info.value is error


def test_the_adapter_reports_other_write_errors_as_serial_exceptions():
    cause = OSError(errno.EIO, "Input/output error")
    with pytest.raises(serial.SerialException) as info:
        SerialAdapter(Recorder(write_error=cause)).write(b"x")
    assert str(info.value) == "write failed: [Errno 5] Input/output error"
    assert info.value.__cause__ is cause
