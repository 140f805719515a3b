"""The serial seam: pty ports and socket:// URLs through pyserial-asyncio,
open failures as PortClosed, and reads that fail on unplug."""

from __future__ import annotations

import asyncio
import os
import select

import pytest

from firmware_host import FakeOpener, FakePort, PortClosed
from firmware_host.transport.serial import open_serial

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


async def test_serial_exception_on_read_closes_port(mocker, fh_ports):
    """A device that errors mid-read (pyserial raises) ends the port, never the loop."""
    import serial

    vp = fh_ports.new()
    port = await open_serial(vp.path, 9600)
    ser = port._transport.serial
    mocker.patch.object(ser, "read", side_effect=serial.SerialException("device went away"))
    await vp.write(b"x")  # readiness makes the transport call read()
    with pytest.raises(PortClosed, match="device went away"):
        await port.read()
    await port.close()


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
    from firmware_host._sync import read_clock

    clock = read_clock(0.01)
    assert read_clock(0.01) is clock  # one clock per loop
    assert clock._timer is None  # nobody waits: no timer scheduled
    a, b, c = clock.tick(), clock.tick(), clock.tick()
    b.cancel()  # a reader that stops leaves the others waiting
    await a
    assert c.done() and not c.cancelled()  # the same tick completed both
    assert clock.waiting == 0 and clock._timer is None


def test_read_clocks_do_not_keep_closed_loops_alive():
    import gc
    import weakref

    from firmware_host import _sync as readclock

    async def tick_once() -> weakref.ref[asyncio.AbstractEventLoop]:
        await readclock.read_clock(0.001).tick()
        return weakref.ref(asyncio.get_running_loop())

    loops = [asyncio.run(tick_once()) for _ in range(3)]
    gc.collect()
    assert all(ref() is None for ref in loops)


async def test_busy_ptys_are_read_once_per_tick(fh_ports, mocker):
    """Several busy ports read on one shared tick: each read returns what
    arrived since the last tick, and the reads of all ports land in the same
    loop iteration rather than one timer each."""
    from firmware_host.transport import serial as transport

    # a long tick, so the later readers surely start waiting within the first one
    mocker.patch.object(transport, "READ_COALESCE", 0.5)
    vps = [fh_ports.new() for _ in range(3)]
    ports = [await open_serial(vp.path, 115200) for vp in vps]
    seen: list[float] = []
    real = transport.SerialPort._read_now

    def spy(self, woken):
        data = real(self, woken)
        if data:
            seen.append(asyncio.get_running_loop().time())
        return data

    mocker.patch.object(transport.SerialPort, "_read_now", spy)
    try:
        for vp in vps:
            await vp.write(b"x")
        firsts = [await p.read() for p in ports]  # each follows readiness at once
        assert firsts == [b"x"] * 3
        seen.clear()
        for vp in vps:  # bytes that arrive while the readers wait for the tick
            await vp.write(b"abc")
            await vp.write(b"def")
        first = asyncio.ensure_future(ports[0].read())
        await asyncio.sleep(0.04)  # the others start waiting later...
        got = await asyncio.gather(first, *(p.read() for p in ports[1:]))
        assert got == [b"abcdef"] * 3  # one read each, coalesced
        # ...and still wake on the first one's tick: timers of their own would
        # have read them 40 ms after it
        assert len(seen) == 3 and max(seen) - min(seen) < 0.03
    finally:
        for p in ports:
            await p.close()


@pytest.mark.parametrize("window", [0.0, 0.3])
async def test_read_coalesce_comes_from_the_config(fh_ports, fh_runtime, fh_jsonl, mocker, window):
    """``[serial] read_coalesce`` sets the shared tick: with 0.3 s, three frames
    that trickle in over 0.1 s are read at once on the next tick (one receive
    timestamp); with 0 a reader never waits for a tick."""
    from firmware_host import encode_packet
    from firmware_host._sync import ReadClock
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


async def test_close_keeps_what_the_tty_still_holds(fh_ports, mocker):
    """Bytes that arrived while the reader waited for its tick are not dropped
    with the file descriptor: close reads them, the pending read returns them
    at once (not a tick later), and only then the port reports closed."""
    from firmware_host.transport import serial as transport

    mocker.patch.object(transport, "READ_COALESCE", 30.0)  # a tick that never comes in this test
    vp = fh_ports.new()
    port = await open_serial(vp.path, 115200)
    try:
        await vp.write(b"first")
        assert await port.read() == b"first"  # read on readiness; the next waits for the tick
        reading = asyncio.ensure_future(port.read())
        await asyncio.sleep(0)
        assert not reading.done()
        await vp.write(b"arrived before the stop")
        await tty_holds_input(vp._slave)  # the same tty the port reads
        await port.close()
        assert await asyncio.wait_for(reading, 5) == b"arrived before the stop"
        with pytest.raises(PortClosed):
            await port.read()
    finally:
        await port.close()


async def test_close_wakes_a_reader_waiting_for_readiness(fh_ports):
    """A reader parked on readiness gets the bytes close() took at once, not
    after the queued downlink has drained and the transport reported lost."""
    vp = fh_ports.new()
    port = await open_serial(vp.path, 115200)
    try:
        reading = asyncio.ensure_future(port.read())
        for _ in range(10):  # a few loop iterations: until it waits for readiness (the tty is empty)
            await asyncio.sleep(0)
            if port._protocol._waiter is not None:
                break
        assert port._protocol._waiter is not None and not reading.done()
        port.write(bytes(1 << 20))  # nobody reads the device side: this stays queued
        os.write(vp.master, b"late")  # no await: the loop must not see the tty readable
        # a blocking wait on purpose: the loop must not run the port's own
        # readiness callback before close() takes the bytes
        assert select.select([vp._slave], [], [], 5)[0]
        lost_when_read: list[bool] = []
        reading.add_done_callback(lambda _: lost_when_read.append(port._protocol.lost.is_set()))
        await port.close()  # takes the bytes before the loop can see the tty readable
        assert reading.result() == b"late"
        assert lost_when_read == [False]  # woken while the downlink was still draining
    finally:
        await port.close()
