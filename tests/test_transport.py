"""The serial seam: pty ports read through their descriptor, socket:// URLs
through asyncio, open failures as PortClosed, reads that fail on unplug, and
the read clock the backend's ttys share."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
from collections.abc import Iterator

import pytest

from firmware_host import FakeOpener, FakePort, PortClosed
from firmware_host._sync import ReadClock
from firmware_host.transport.limits import CLOSE_TIMEOUT
from firmware_host.transport.serial import SerialBackend, open_serial

pytestmark = pytest.mark.timeout(15)


async def test_pty_read_write_and_unplug(fh_ports):
    vp = fh_ports.new()
    port = await open_serial(vp.path, 115200)
    try:
        await vp.write(b"hello")
        got = b""
        while len(got) < 5:
            got += await port.read()
        assert got == b"hello"
        port.write(b"downlink")
        assert await vp.read() == b"downlink"
        vp.unplug()
        with pytest.raises(PortClosed):
            while True:
                await port.read()
    finally:
        await port.close()


async def test_socket_url():
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"from-device")
        await writer.drain()
        received.put_nowait(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port_no = server.sockets[0].getsockname()[:2]
    port = await open_serial(f"socket://{host}:{port_no}", 115200)
    try:
        got = b""
        while len(got) < 11:
            got += await port.read()
        assert got == b"from-device"
        port.write(b"to-device")
        assert await asyncio.wait_for(received.get(), 5) == b"to-device"
    finally:
        await port.close()
        server.close()
        await server.wait_closed()


async def test_open_missing_port_is_portclosed(tmp_path):
    with pytest.raises(PortClosed, match="cannot open"):
        await open_serial(str(tmp_path / "nope"), 9600)


async def test_a_pyserial_url_without_a_descriptor_is_refused_at_open():
    """loop:// has nothing the event loop could wait on: a clear error, not a
    port that never reads."""
    with pytest.raises(
        PortClosed, match=r"^cannot open loop://: loop:// is not supported: pyserial's loop:// gives no file descriptor"
    ):
        await open_serial("loop://", 9600)


async def test_open_runs_in_an_executor(mocker, fh_ports):
    """pyserial's open can block on real hardware: it must not run on the loop thread."""
    import threading

    import serial

    real = serial.serial_for_url
    threads = []

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    mocker.patch("firmware_host.transport.serial.serial.serial_for_url", side_effect=spy)
    vp = fh_ports.new()
    port = await open_serial(vp.path, 9600)
    await port.close()
    assert threads and threads[0] is not threading.main_thread()


async def test_read_error_fails_the_port_not_the_loop(mocker, fh_ports):
    """A read the OS fails (EIO) ends the port with PortClosed, never the loop;
    the port then closes cleanly."""
    vp = fh_ports.new()
    port = await open_serial(vp.path, 9600)
    real_read = os.read

    def failing(fd: int, n: int) -> bytes:
        if fd == vp.master:  # the device side keeps working
            return real_read(fd, n)
        raise OSError(errno.EIO, "Input/output error")

    mocker.patch("os.read", side_effect=failing)
    await vp.write(b"x")  # readiness makes the port read
    with pytest.raises(PortClosed, match=r"read failed: .*Input/output error"):
        await port.read()
    with pytest.raises(PortClosed):  # and stays failed
        await port.read()
    mocker.stopall()
    await port.close()


async def test_device_gone_fails_reads_and_writes(fh_ports):
    """The device side closing (a real fault, as when a USB adapter goes):
    the read sees readiness with no data, a write fails with EIO; both are
    PortClosed."""
    vp = fh_ports.new()
    port = await open_serial(vp.path, 9600)
    try:
        reading = asyncio.ensure_future(port.read())
        for _ in range(5):  # the tty is empty: the read parks on readiness
            await asyncio.sleep(0)
        assert not reading.done()
        os.close(vp.master)  # the device side is gone; the pty slave hangs up
        vp.master = None
        with pytest.raises(PortClosed, match="disconnected"):
            await asyncio.wait_for(reading, 5)
        with pytest.raises(PortClosed):
            port.write(b"downlink")
    finally:
        await port.close()


async def test_write_to_a_dead_tty_is_portclosed_for_the_reader_too(fh_ports):
    """A write that fails (EIO) breaks the port: the writer gets PortClosed,
    and so does the reader, with the write's error."""
    vp = fh_ports.new()
    port = await open_serial(vp.path, 9600)
    try:
        reading = asyncio.ensure_future(port.read())
        for _ in range(5):
            await asyncio.sleep(0)
        os.close(vp.master)
        vp.master = None
        with pytest.raises(PortClosed, match="write failed"):
            port.write(b"x")  # before the loop has seen the hang-up
        with pytest.raises(PortClosed, match="write failed"):
            await asyncio.wait_for(reading, 5)
    finally:
        await port.close()


async def test_downlink_is_bounded(fh_ports, monkeypatch):
    """A device that does not take its input cannot make the host queue
    without bound: a write past the limit is refused whole (ENOBUFS)."""
    from firmware_host.transport import tty
    from firmware_host.transport.limits import WRITE_LIMIT

    # close() gives the queue nobody reads CLOSE_TIMEOUT (1 s) to drain: not what this tests
    monkeypatch.setattr(tty, "CLOSE_TIMEOUT", 0.1)
    vp = fh_ports.new()
    port = await open_serial(vp.path, 9600)
    try:
        port.write(bytes(WRITE_LIMIT))  # the pty takes some; the rest is queued
        with pytest.raises(OSError) as err:
            port.write(bytes(WRITE_LIMIT))
        assert err.value.errno == errno.ENOBUFS
    finally:
        await port.close()


@pytest.mark.parametrize("loop_ends", [False, True])
def test_an_abandoned_open_closes_what_it_opened(mocker, fh_ports, loop_ends):
    """An open cancelled while pyserial is still opening (a reader stopping,
    or asyncio.run ending) closes the Serial once it lands, also when the
    loop's executor is already shut down."""
    import threading

    import serial

    vp = fh_ports.new()
    release, closed = threading.Event(), threading.Event()
    real = serial.serial_for_url

    def slow_open(*args, **kwargs):
        release.wait(5)
        ser = real(*args, **kwargs)
        close = ser.close
        ser.close = lambda: (close(), closed.set())  # the test's own Serial: see it close
        return ser

    mocker.patch("serial.serial_for_url", side_effect=slow_open)

    async def main() -> None:
        opening = asyncio.ensure_future(SerialBackend()(vp.path, 9600))
        await asyncio.sleep(0)  # pyserial's open is under way in the executor
        if loop_ends:  # left pending: asyncio.run cancels it, then drains the executor
            threading.Timer(0.05, release.set).start()
            return
        opening.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await opening
        await asyncio.to_thread(closed.wait, 5)

    asyncio.run(main())
    assert closed.wait(5)


async def test_fake_port_and_opener():
    first = FakePort([b"a", PortClosed("unplugged")])
    opener = FakeOpener({"fake://x": [first, OSError("busy"), FakePort([b"b"])]})
    port = await opener("fake://x", 9600)
    assert await port.read() == b"a"
    with pytest.raises(PortClosed):
        await port.read()
    with pytest.raises(OSError):
        await opener("fake://x", 9600)
    port = await opener("fake://x", 9600)
    assert await port.read() == b"b"
    port.write(b"w")
    assert port.writes == [b"w"]
    with pytest.raises(PortClosed):
        await opener("fake://x", 9600)
    assert opener.opens["fake://x"] == 4


async def test_read_clock_wakes_waiters_together_and_idles_without_them():
    clock = ReadClock(0.01)
    assert not clock.scheduled  # nobody waits: no timer scheduled
    a, b, c = clock.tick(), clock.tick(), clock.tick()
    b.cancel()  # a reader that stops leaves the others waiting
    await a
    assert c.done() and not c.cancelled()  # the same tick completed both
    assert clock.waiting == 0 and not clock.scheduled


def test_a_backend_reused_by_a_later_event_loop_still_ticks(fh_ports):
    """The clock belongs to the backend, not to a loop: a backend whose first
    loop ended with a tick pending serves the next loop's ports."""
    backend = SerialBackend(read_coalesce=0.2)
    vp = fh_ports.new()

    async def read_twice() -> list[bytes]:
        port = await backend(vp.path, 115200)
        os.write(vp.master, b"a")
        got = [await port.read()]  # short: the next read waits for a tick
        waiting = asyncio.ensure_future(port.read())
        for _ in range(5):
            await asyncio.sleep(0)
        assert backend.clock.waiting == 1
        os.write(vp.master, b"b")
        got.append(await asyncio.wait_for(waiting, 5))
        reading = asyncio.ensure_future(port.read())  # left waiting for a tick as the loop ends
        await asyncio.sleep(0)
        reading.cancel()
        await port.close()
        return got

    assert asyncio.run(read_twice()) == [b"a", b"b"]
    assert asyncio.run(read_twice()) == [b"a", b"b"]


async def test_busy_ptys_are_read_once_per_tick(fh_ports):
    """Several busy ports read on their backend's one tick: each read returns
    what arrived since the last tick, and the reads of all ports land in the
    same loop iteration rather than one timer each."""
    # a long tick, so the later readers surely start waiting within the first one
    backend = SerialBackend(read_coalesce=0.5)
    vps = [fh_ports.new() for _ in range(3)]
    ports = [await backend(vp.path, 115200) for vp in vps]
    loop = asyncio.get_running_loop()

    async def timed_read(port) -> tuple[bytes, float]:
        data = await port.read()
        return data, loop.time()

    try:
        for vp in vps:
            await vp.write(b"x")
        firsts = [await p.read() for p in ports]  # each follows readiness at once
        assert firsts == [b"x"] * 3
        for vp in vps:  # bytes that arrive while the readers wait for the tick
            await vp.write(b"abc")
            await vp.write(b"def")
        first = asyncio.ensure_future(timed_read(ports[0]))
        await asyncio.sleep(0.04)  # the others start waiting later...
        got = await asyncio.gather(first, *(timed_read(p) for p in ports[1:]))
        assert [data for data, _ in got] == [b"abcdef"] * 3  # one read each, coalesced
        # ...and still wake on the first one's tick: timers of their own would
        # have read them 40 ms after it
        seen = [when for _, when in got]
        assert max(seen) - min(seen) < 0.03
    finally:
        for p in ports:
            await p.close()


@pytest.mark.parametrize("window", [0.0, 0.3])
async def test_read_coalesce_comes_from_the_config(fh_ports, fh_runtime, fh_jsonl, mocker, window):
    """``[serial] read_coalesce`` sets the shared tick: with 0.3 s, three frames
    that trickle in over 0.1 s are read at once on the next tick (one receive
    timestamp); with 0 a reader never waits for a tick."""
    from firmware_host import encode_packet
    from tests.conftest import read_jsonl

    ticks = mocker.spy(ReadClock, "tick")
    vp = fh_ports.new("d")
    config = {
        "serial": {"read_coalesce": window},
        "buffer": {"flush_interval": 0.05},
        "devices": [{"name": "d", "port": vp.path, "codec": "fh1"}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("d", "connected")
        await vp.write(encode_packet(0, 0, b"first"))  # read on readiness
        await rt.runtime.wait_until(lambda s: s["devices"]["d"]["frames"] == 1, 5)
        for seq in (1, 2, 3):
            await vp.write(encode_packet(0, seq, b"later"))
            await asyncio.sleep(0.05)  # the device's pace, not a synchronisation
        await rt.runtime.wait_until(lambda s: s["devices"]["d"]["frames"] == 4, 5)
        await rt.shutdown()
    stamps = [r["ts"] for r in read_jsonl(fh_jsonl)]
    assert len(stamps) == 4
    if window:
        assert len(set(stamps[1:])) == 1  # one read for the three
    else:
        assert ticks.call_count == 0 and len(set(stamps[1:])) == 3


@contextlib.contextmanager
def same_tty(vp) -> Iterator[int]:
    """A descriptor of our own on the tty the port reads (to watch its input)."""
    fd = os.open(vp.slave_name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        yield fd
    finally:
        os.close(fd)


async def tty_holds_input(fd: int) -> None:
    """Until the tty behind ``fd`` has bytes for its reader (a pty moves what
    the device side wrote in a kernel work item, not at once)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await asyncio.wait_for(fut, 5)
    finally:
        loop.remove_reader(fd)


async def test_close_keeps_what_the_tty_still_holds(fh_ports):
    """Bytes that arrived while the reader waited for its tick are not dropped
    with the file descriptor: close reads them, the pending read returns them
    at once (not a tick later), and only then the port reports closed."""
    backend = SerialBackend(read_coalesce=30.0)  # a tick that never comes in this test
    vp = fh_ports.new()
    port = await backend(vp.path, 115200)
    try:
        await vp.write(b"first")
        assert await port.read() == b"first"  # read on readiness; the next waits for the tick
        reading = asyncio.ensure_future(port.read())
        await asyncio.sleep(0)
        assert not reading.done() and backend.clock.waiting == 1
        await vp.write(b"arrived before the stop")
        with same_tty(vp) as fd:
            await tty_holds_input(fd)
        await port.close()
        assert await asyncio.wait_for(reading, 5) == b"arrived before the stop"
        with pytest.raises(PortClosed):
            await port.read()
    finally:
        await port.close()


async def test_close_wakes_a_reader_waiting_for_readiness(fh_ports):
    """A reader parked on readiness gets the bytes close() took at once, not
    after the queued downlink has drained (or timed out)."""
    vp = fh_ports.new()
    port = await open_serial(vp.path, 115200)
    try:
        reading = asyncio.ensure_future(port.read())
        for _ in range(10):  # a few loop iterations: it waits for readiness (the tty is empty)
            await asyncio.sleep(0)
        assert not reading.done()
        port.write(bytes(1 << 20))  # nobody reads the device side: most of this stays queued
        os.write(vp.master, b"late")  # no await: the loop must not see the tty readable
        # a blocking wait on purpose: the loop must not run the port's own
        # readiness callback before close() takes the bytes
        with same_tty(vp) as fd:
            assert select.select([fd], [], [], 5)[0]
        closing = asyncio.ensure_future(port.close())
        # the queued downlink keeps close() busy for CLOSE_TIMEOUT; the reader
        # must have its bytes well before that
        assert await asyncio.wait_for(asyncio.shield(reading), CLOSE_TIMEOUT / 2) == b"late"
        assert not closing.done()  # woken while the downlink was still draining
        await asyncio.wait_for(closing, CLOSE_TIMEOUT * 3)
    finally:
        await port.close()
