"""``TtyPort`` (``firmware_host/transport/tty.py``) on real ptys and pipes, on a
virtual clock (tests written from mutation testing, docs/testing-internals.md).

The port is given a pyserial Serial opened on a pty's slave (what the backend
gives it) or, where a tty cannot be made to do it (EAGAIN on read, a full
output, a broken descriptor), a real pipe behind a two-method stand-in for the
Serial. Times are the virtual loop's (tests/virtual_time.py), so a read that
waits for the read clock's tick returns at exactly the tick.

Oracles: the documented rules, worked by hand: a read shorter than 3584 bytes
(``READ_COALESCE_BYTES``) makes the next read wait for the next tick; 1 MiB
(``WRITE_LIMIT``) of downlink may be queued, not a byte more; closing takes up
to 64 KiB (``FINAL_READ_MAX``) the port still holds and waits at most 1 s
(``CLOSE_TIMEOUT``) for queued downlink.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Iterator

import pytest
import serial

from firmware_host._sync import ReadClock
from firmware_host.errors import PortClosed
from firmware_host.transport.tty import TtyPort
from tests.remote_serial import deadline_poll
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(20)

FOLLOW = 3584
WRITE_LIMIT = 1 << 20
FINAL_MAX = 1 << 16
CLOSE_TIMEOUT = 1.0
GONE = "device reports readiness to read but returned no data (device disconnected or multiple access on port?)"


def waiting_bytes(fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


class PtyDevice:
    """A pty whose slave pyserial opened (raw, non-blocking), as the backend does."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.ser = serial.Serial(os.ttyname(slave), 115200, timeout=0)
        os.close(slave)

    def send(self, data: bytes) -> None:
        """The device writes ``data``; returns once the tty holds all of it."""
        before = waiting_bytes(self.ser.fd)
        os.write(self.master, data)
        deadline_poll(lambda: waiting_bytes(self.ser.fd) >= before + len(data), 5, "the pty to pass the bytes")

    def hang_up(self) -> None:
        """The device side goes (its descriptor closed once: a number closed twice
        could by then belong to something else)."""
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


class PipeSerial:
    """What TtyPort uses of a Serial (fileno, close), over one end of a real pipe."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        assert self.fd is not None
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def pty() -> Iterator[PtyDevice]:
    dev = PtyDevice()
    yield dev
    dev.hang_up()
    dev.ser.close()


def fill_pipe(fd: int) -> int:
    """Write to the non-blocking ``fd`` until the pipe is full; how much went in."""
    total = 0
    for size in (65536, 4096, 1):
        while True:
            try:
                total += os.write(fd, bytes(size))
            except BlockingIOError:
                break
    return total


def drain_pipe(fd: int) -> bytes:
    got = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


# -- reading and coalescing --------------------------------------------------------------


def test_a_short_read_makes_the_next_wait_for_the_tick_and_a_long_one_does_not(pty):
    async def main() -> list[tuple[float, int]]:
        loop = virtual_loop()
        clock = ReadClock(0.5)
        port = TtyPort("p", pty.ser, clock)
        seen = []
        try:
            pty.send(b"abc")
            data = await port.read()
            seen.append((loop.time(), len(data)))  # at once: no tick waited yet
            pty.send(b"d" * (FOLLOW - 1))
            data = await port.read()
            seen.append((loop.time(), len(data)))  # waits for the tick: 0.5
            pty.send(b"e" * FOLLOW)
            data = await port.read()
            seen.append((loop.time(), len(data)))  # short before: next tick, 1.0
            pty.send(b"f")
            data = await port.read()
            seen.append((loop.time(), len(data)))  # long before: at once, 1.0
            pty.send(b"g")
            data = await port.read()
            seen.append((loop.time(), len(data)))  # short before: 1.5
            assert not loop.remove_reader(pty.ser.fd)  # nothing left registered
            seen.append((loop.time(), 0))
        finally:
            await port.close()
        return seen

    # each read is timed as it returns
    got = run_virtual(main())
    times = [t for t, _ in got]
    sizes = [n for _, n in got]
    assert sizes == [3, FOLLOW - 1, FOLLOW, 1, 1, 0]
    assert times == [0.0, 0.5, 1.0, 1.0, 1.5, 1.5]


def test_without_coalescing_no_read_waits(pty):
    async def main() -> None:
        loop = virtual_loop()
        clock = ReadClock(0)
        port = TtyPort("p", pty.ser, clock)
        assert port.url == "p"
        try:
            for data in (b"a", b"bc", b"d"):
                pty.send(data)
                reading = asyncio.ensure_future(port.read())
                await asyncio.sleep(0)
                assert clock.waiting == 0  # not parked on a tick, even one of 0 s
                assert await reading == data
            assert loop.time() == 0.0
        finally:
            await port.close()

    run_virtual(main())


def test_a_read_of_an_empty_tty_waits_for_readiness_not_a_timer(pty):
    async def main() -> None:
        loop = virtual_loop()
        clock = ReadClock(0.5)
        port = TtyPort("p", pty.ser, clock)
        try:
            reading = asyncio.ensure_future(port.read())
            for _ in range(5):
                await asyncio.sleep(0)
            assert not reading.done() and clock.waiting == 0
            pty.send(b"hi")
            assert await reading == b"hi"
            assert loop.time() == 0.0
            assert not loop.remove_reader(pty.ser.fd)  # unregistered once woken
        finally:
            await port.close()

    run_virtual(main())


def test_a_read_that_finds_data_yields_to_the_loop_once(pty):
    async def main() -> None:
        port = TtyPort("p", pty.ser, ReadClock(0))
        ran = []
        try:
            pty.send(b"x")
            asyncio.get_running_loop().call_soon(ran.append, 1)
            assert await port.read() == b"x"
            assert ran == [1]  # the read let the loop run
        finally:
            await port.close()

    run_virtual(main())


def test_a_hung_up_tty_fails_reads_with_the_gone_error(pty):
    async def main() -> None:
        port = TtyPort("p", pty.ser, ReadClock(0.5))
        try:
            reading = asyncio.ensure_future(port.read())
            for _ in range(5):
                await asyncio.sleep(0)
            pty.hang_up()
            with pytest.raises(PortClosed) as info:
                await reading  # the suite's timeout guards it: a virtual timer would jump ahead
            assert str(info.value) == GONE
            # the error stays; writes see it too
            with pytest.raises(PortClosed) as again:
                await port.read()
            assert again.value is info.value
            with pytest.raises(PortClosed) as written:
                port.write(b"x")
            assert written.value is info.value
        finally:
            await port.close()

    run_virtual(main())


def test_an_empty_tty_is_not_gone_until_the_selector_said_readable(pty):
    async def main() -> None:
        port = TtyPort("p", pty.ser, ReadClock(0))
        try:
            reading = asyncio.ensure_future(port.read())
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not reading.done()  # the first empty read (VMIN=0) is not a hang-up
            pty.send(b"k")
            assert await reading == b"k"
        finally:
            await port.close()

    run_virtual(main())


def test_a_read_error_fails_the_port_in_words():
    r, w = os.pipe()
    ser = PipeSerial(w)  # reading a pipe's write end: EBADF

    async def main() -> None:
        port = TtyPort("p", ser, ReadClock(0))
        try:
            with pytest.raises(PortClosed) as info:
                await port.read()
            assert str(info.value) == "read failed: [Errno 9] Bad file descriptor"
            assert info.value.__cause__ is None
        finally:
            await port.close()

    try:
        run_virtual(main())
    finally:
        os.close(r)


def test_eagain_on_read_waits_for_readiness():
    r, w = os.pipe()
    ser = PipeSerial(r)

    async def main() -> None:
        loop = virtual_loop()
        port = TtyPort("p", ser, ReadClock(0.5))
        try:
            reading = asyncio.ensure_future(port.read())
            for _ in range(5):
                await asyncio.sleep(0)
            assert not reading.done()
            os.write(w, b"late")
            assert await reading == b"late"
            assert loop.time() == 0.0
        finally:
            await port.close()

    try:
        run_virtual(main())
    finally:
        os.close(w)


# -- writing ----------------------------------------------------------------------------


def test_a_write_that_fits_goes_out_at_once_and_registers_nothing(pty):
    async def main() -> None:
        loop = virtual_loop()
        port = TtyPort("p", pty.ser, ReadClock(0))
        try:
            port.write(b"downlink")
            assert not loop.remove_writer(pty.ser.fd)
            assert os.read(pty.master, 100) == b"downlink"
        finally:
            await port.close()

    run_virtual(main())


def test_queued_downlink_keeps_its_order_and_drains():
    r, w = os.pipe()
    ser = PipeSerial(w)
    os.set_blocking(r, False)

    async def main() -> None:
        loop = virtual_loop()
        port = TtyPort("p", ser, ReadClock(0))
        try:
            filled = fill_pipe(w)
            port.write(b"A" * 10)  # EAGAIN: all of it queued
            assert drain_pipe(r) == bytes(filled)  # room again, but the loop has not run
            port.write(b"B" * 5)  # behind the queue, not around it
            got = bytearray()
            drained = loop.create_future()

            def take() -> None:
                got.extend(drain_pipe(r))
                if len(got) >= 15 and not drained.done():
                    drained.set_result(None)

            loop.add_reader(r, take)
            try:
                await asyncio.wait_for(drained, 5)
            finally:
                loop.remove_reader(r)
            assert bytes(got) == b"A" * 10 + b"B" * 5
            for _ in range(3):
                await asyncio.sleep(0)
            assert not loop.remove_writer(w)  # the writer is gone once all went out
            assert loop.time() == 0.0
        finally:
            await port.close()

    try:
        run_virtual(main())
    finally:
        os.close(r)


def test_a_partial_write_queues_exactly_the_rest():
    r, w = os.pipe()
    ser = PipeSerial(w)
    os.set_blocking(r, False)

    async def main() -> None:
        loop = virtual_loop()
        port = TtyPort("p", ser, ReadClock(0))
        try:
            filled = fill_pipe(w)
            drain = drain_pipe(r)
            assert len(drain) == filled
            data = bytes(i % 251 for i in range(filled + 1000))  # more than the pipe takes at once
            port.write(data)
            got = bytearray()
            done = loop.create_future()

            def take() -> None:
                got.extend(drain_pipe(r))
                if len(got) >= len(data) and not done.done():
                    done.set_result(None)

            loop.add_reader(r, take)
            try:
                await asyncio.wait_for(done, 5)
            finally:
                loop.remove_reader(r)
            assert bytes(got) == data
        finally:
            await port.close()

    try:
        run_virtual(main())
    finally:
        os.close(r)


def test_the_downlink_queue_holds_exactly_the_limit():
    r, w = os.pipe()
    ser = PipeSerial(w)

    async def main() -> None:
        port = TtyPort("u", ser, ReadClock(0))
        try:
            fill_pipe(w)
            port.write(b"x" * 100)  # EAGAIN: queued
            port.write(bytes(WRITE_LIMIT - 100))  # exactly full
            with pytest.raises(OSError) as info:
                port.write(b"y")
            assert info.value.errno == errno.ENOBUFS
            assert info.value.strerror == f"u: downlink not taken by the device ({WRITE_LIMIT} bytes queued)"
        finally:
            await port.close()

    try:
        run_virtual(main())
    finally:
        os.close(r)


def test_the_limit_counts_the_write_itself():
    r, w = os.pipe()
    ser = PipeSerial(w)

    async def main() -> None:
        port = TtyPort("u", ser, ReadClock(0))
        try:
            fill_pipe(w)
            port.write(b"x" * 100)
            with pytest.raises(OSError) as info:
                port.write(bytes(WRITE_LIMIT - 99))
            assert info.value.strerror == "u: downlink not taken by the device (100 bytes queued)"
        finally:
            await port.close()

    try:
        run_virtual(main())
    finally:
        os.close(r)


def test_a_failed_write_breaks_the_port_for_reader_and_writer():
    r, w = os.pipe()
    ser = PipeSerial(r)  # writing a pipe's read end: EBADF

    async def main() -> None:
        port = TtyPort("p", ser, ReadClock(0))
        try:
            with pytest.raises(PortClosed) as info:
                port.write(b"x")
            assert str(info.value) == "write failed: [Errno 9] Bad file descriptor"
            with pytest.raises(PortClosed) as read:
                await port.read()
            assert read.value is info.value
        finally:
            await port.close()

    try:
        run_virtual(main())
    finally:
        os.close(w)


def test_a_queued_write_to_a_broken_pipe_fails_the_port_and_drops_the_queue():
    r, w = os.pipe()
    ser = PipeSerial(w)

    async def main() -> None:
        loop = virtual_loop()
        port = TtyPort("p", ser, ReadClock(0))
        fill_pipe(w)
        port.write(b"queued")
        os.close(r)  # the far end goes: the queued write gets EPIPE
        for _ in range(5):
            await asyncio.sleep(0)
        assert not loop.remove_writer(w)  # the writer was dropped with the queue
        with pytest.raises(PortClosed) as info:
            port.write(b"more")
        assert str(info.value) == "write failed: [Errno 32] Broken pipe"
        await port.close()
        assert loop.time() == 0.0  # nothing queued to wait for at close

    run_virtual(main())


# -- closing -----------------------------------------------------------------------------


def test_close_hands_over_what_the_tty_holds_then_reports_closed(pty):
    async def main() -> None:
        port = TtyPort("p", pty.ser, ReadClock(0))
        pty.send(b"left over")
        await port.close()
        assert pty.ser.fd is None  # the Serial was closed
        assert await port.read() == b"left over"
        with pytest.raises(PortClosed) as info:
            await port.read()
        assert str(info.value) == "port closed"
        with pytest.raises(PortClosed, match=r"^port closed$"):
            port.write(b"x")
        await port.close()  # again: nothing more

    run_virtual(main())


def test_close_takes_at_most_64_kib():
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: room for more than the bound
    ser = PipeSerial(r)
    os.write(w, bytes(range(256)) * 300)  # 76,800 bytes

    async def main() -> None:
        port = TtyPort("p", ser, ReadClock(0))
        await port.close()
        final = await port.read()
        assert final == (bytes(range(256)) * 300)[:FINAL_MAX]
        with pytest.raises(PortClosed):
            await port.read()

    try:
        run_virtual(main())
    finally:
        os.close(w)


def test_close_keeps_what_it_read_before_the_descriptor_ran_dry():
    r, w = os.pipe()
    ser = PipeSerial(r)  # an empty pipe reads EAGAIN (an error), not b""
    os.write(w, b"the last bytes")

    async def main() -> None:
        port = TtyPort("p", ser, ReadClock(0))
        await port.close()
        assert await port.read() == b"the last bytes"

    try:
        run_virtual(main())
    finally:
        os.close(w)


def test_close_takes_several_reads_up_to_64_kib_in_all():
    """A datagram socket returns one datagram per read (cut to the size asked
    for), so the final read takes three reads here: 40,000 + 25,536 bytes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    grams = [bytes([n]) * 40_000 for n in (1, 2, 3)]
    for gram in grams:
        theirs.send(gram)
    ser = PipeSerial(ours.detach())

    async def main() -> None:
        port = TtyPort("p", ser, ReadClock(0))
        await port.close()
        final = await port.read()
        assert final == grams[0] + grams[1][: FINAL_MAX - 40_000]
        with pytest.raises(PortClosed):
            await port.read()

    try:
        run_virtual(main())
    finally:
        theirs.close()


def test_close_of_a_failed_port_takes_nothing_more(pty):
    async def main() -> None:
        port = TtyPort("p", pty.ser, ReadClock(0))
        reading = asyncio.ensure_future(port.read())
        for _ in range(3):
            await asyncio.sleep(0)
        pty.hang_up()
        with pytest.raises(PortClosed, match="disconnected"):
            await reading
        await port.close()
        with pytest.raises(PortClosed, match="disconnected"):
            await port.read()

    run_virtual(main())


def test_close_wakes_a_reader_waiting_for_the_tick(pty):
    async def main() -> None:
        loop = virtual_loop()
        clock = ReadClock(30)
        port = TtyPort("p", pty.ser, clock)
        pty.send(b"a")
        assert await port.read() == b"a"
        reading = asyncio.ensure_future(port.read())
        await asyncio.sleep(0)
        assert clock.waiting == 1
        pty.send(b"b")
        closing = asyncio.ensure_future(port.close())
        assert await reading == b"b"
        assert loop.time() == 0.0  # not at the tick (30)
        await closing

    run_virtual(main())


def test_close_writes_queued_downlink_when_it_drains():
    r, w = os.pipe()
    ser = PipeSerial(w)
    os.set_blocking(r, False)

    async def main() -> None:
        loop = virtual_loop()
        port = TtyPort("p", ser, ReadClock(0))
        filled = fill_pipe(w)
        port.write(b"tail")
        got = bytearray()
        loop.add_reader(r, lambda: got.extend(drain_pipe(r)))
        try:
            await port.close()
        finally:
            loop.remove_reader(r)
        got.extend(drain_pipe(r))
        assert bytes(got) == bytes(filled) + b"tail"
        assert loop.time() == 0.0  # it drained: no wait for the timeout
        assert ser.fd is None

    try:
        run_virtual(main())
    finally:
        os.close(r)


def test_close_drops_downlink_the_device_does_not_take_after_one_second():
    r, w = os.pipe()
    ser = PipeSerial(w)

    async def main() -> None:
        loop = virtual_loop()
        port = TtyPort("p", ser, ReadClock(0))
        fill_pipe(w)
        port.write(b"never taken")
        await port.close()
        assert loop.time() == CLOSE_TIMEOUT
        assert ser.fd is None

    try:
        run_virtual(main())
    finally:
        os.close(r)


def test_a_cancelled_close_still_closes(pty):
    async def main() -> None:
        port = TtyPort("p", pty.ser, ReadClock(0))
        closing = asyncio.ensure_future(port.close())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await port.close()
        assert pty.ser.fd is None

    run_virtual(main())
