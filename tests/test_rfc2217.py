"""``rfc2217://`` against pyserial's own RFC 2217 server (``PortManager``)
over a pty, and against servers that do not acknowledge or refuse: the
line is set, data passes both ways with 255 escaped, and a server's silence
costs one wait, said once at debug level, not a failed device."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import struct
import termios

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_host import PortClosed, encode_packet
from firmware_host.transport.serial import SerialBackend, open_serial
from firmware_host.transport.telnet import COM_PORT_OPTION, DO, DONT, IAC, SB, SE, WILL, TelnetParser, escape
from tests.conftest import read_jsonl
from tests.remote_serial import Pty, PyserialRfc2217Server
from tests.test_transport_fds import HIGH, descriptors_below_taken, socket_fd_bound_to, soft_nofile_at_least

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def pty():
    pair = Pty()
    yield pair
    pair.close()


@pytest.fixture
def pyserial_server(pty):
    server = PyserialRfc2217Server(pty.name)
    yield server
    server.close()


async def test_frames_arrive_and_the_line_is_set_by_pyserials_server(pty, pyserial_server, fh_runtime, fh_jsonl):
    config = {
        "buffer": {"flush_interval": 0.02},
        "devices": [{"name": "d", "port": pyserial_server.url, "codec": "fh1", "baudrate": 57600}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("d", "connected")
        # the open waited for the server's acknowledgement, sent once it had set its port
        assert pyserial_server.serial.baudrate == 57600
        assert pty.speed() == termios.B57600
        pty.write(b"".join(encode_packet(0, seq, bytes([0xFF]) * seq) for seq in range(100)))
        await rt.wait_flushed("d", 100)
        await rt.shutdown()
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(100))


async def test_downlink_255_is_escaped(pty, pyserial_server):
    port = await open_serial(pyserial_server.url, 115200)
    try:
        port.write(b"\xff\x00\xff\xff!")
        got = bytearray()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            while len(got) < 5:
                ready = asyncio.Event()
                loop.add_reader(pty.master, ready.set)
                try:
                    await ready.wait()
                finally:
                    loop.remove_reader(pty.master)
                got += os.read(pty.master, 64)
        assert bytes(got) == b"\xff\x00\xff\xff!"
    finally:
        await port.close()


class _Server:
    """A telnet peer on a real socket that sends ``reply`` to each client and
    then only collects what it gets (``ended`` is set when a client leaves)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.received = bytearray()
        self.ended = asyncio.Event()
        self.url = ""
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> _Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"rfc2217://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.reply)
        while data := await reader.read(1024):
            self.received += data
        writer.close()
        self.ended.set()


async def test_a_server_that_never_acknowledges_is_waited_for_once(caplog):
    """It agrees to RFC 2217 but never answers a setting: the first open waits
    its timeout and goes on, saying so once at debug level; the next open of
    the same URL does not wait again."""
    caplog.set_level(logging.DEBUG, logger="firmware_host.transport.rfc2217")
    backend = SerialBackend()
    async with _Server(bytes([IAC, DO, COM_PORT_OPTION])) as server:
        url = server.url + "?timeout=0.3"
        first = await asyncio.wait_for(backend(url, 57600), 5)
        await first.close()
        second = await asyncio.wait_for(backend(url, 57600), 0.25)  # no second wait of 0.3 s
        await second.close()
    notes = [r.getMessage() for r in caplog.records if "did not acknowledge" in r.getMessage()]
    assert notes == [
        (
            f"{url}: the server did not acknowledge SET-BAUDRATE, SET-DATASIZE, SET-PARITY, SET-STOPSIZE within 0.3 s;"
            " not waiting for it again"
        )
    ]


async def test_the_settings_go_out_once_the_server_agrees():
    async with _Server(bytes([IAC, DO, COM_PORT_OPTION])) as server:
        port = await open_serial(server.url + "?timeout=0.1", 57600)
        await port.close()
        await asyncio.wait_for(server.ended.wait(), 5)
    # SET-BAUDRATE 57600, 8 data bits, no parity, 1 stop bit, no flow control
    sub, end = bytes([IAC, SB, COM_PORT_OPTION]), bytes([IAC, SE])
    expected = (
        sub + b"\x01" + struct.pack("!I", 57600) + end
        + sub + b"\x02\x08" + end
        + sub + b"\x03\x01" + end
        + sub + b"\x04\x01" + end
        + sub + b"\x05\x01" + end
    )  # fmt: skip
    assert bytes([IAC, WILL, COM_PORT_OPTION]) in server.received
    assert expected in server.received


async def test_a_server_that_refuses_rfc2217_fails_the_open_in_words():
    async with _Server(bytes([IAC, DONT, COM_PORT_OPTION])) as server:
        with pytest.raises(PortClosed, match=r"the server refused RFC 2217 \(DONT COM-PORT-OPTION\)"):
            await asyncio.wait_for(open_serial(server.url, 9600), 5)


class _Commands:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, bytes]] = []

    def negotiation(self, command: int, option: int) -> None:
        self.seen.append(("neg", command, bytes([option])))

    def subnegotiation(self, option: int, payload: bytes) -> None:
        self.seen.append(("sub", option, payload))


STREAM = (
    b"ab"
    + bytes([IAC, IAC])
    + bytes([IAC, WILL, COM_PORT_OPTION])
    + b"c"
    + bytes([IAC, SB, COM_PORT_OPTION, 101, 0, 0, IAC, IAC, 0, IAC, SE])
    + bytes([IAC, 241])  # NOP
    + b"d\xff\xff"
)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_the_telnet_parser_is_the_same_however_the_stream_is_cut(cuts):
    handler = _Commands()
    parser = TelnetParser(handler)
    bounds = [0, *sorted(cuts), len(STREAM)]
    data = b"".join(parser.feed(STREAM[a:b]) for a, b in itertools.pairwise(bounds))
    assert data == b"ab\xffcd\xff"
    assert handler.seen == [
        ("neg", WILL, bytes([COM_PORT_OPTION])),
        ("sub", COM_PORT_OPTION, bytes([101, 0, 0, 255, 0])),
    ]


def test_a_long_subnegotiation_is_dropped_and_the_data_after_it_kept():
    handler = _Commands()
    parser = TelnetParser(handler)
    assert parser.feed(bytes([IAC, SB, COM_PORT_OPTION]) + b"x" * 10_000 + bytes([IAC, SE]) + b"data") == b"data"
    assert handler.seen == []


@given(st.binary(max_size=64))
def test_escape_round_trips(data):
    assert TelnetParser(_Commands()).feed(escape(data)) == data


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_an_rfc2217_device_on_a_descriptor_above_1024(pty, pyserial_server, fh_runtime, fh_jsonl):
    """pyserial's RFC 2217 client waits with select(), which cannot take a
    descriptor >= 1024; ours is in the event loop's selector."""
    config = {
        "buffer": {"flush_interval": 0.02},
        "devices": [{"name": "d", "port": pyserial_server.url, "codec": "fh1", "baudrate": 57600}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    with soft_nofile_at_least(4096), descriptors_below_taken(HIGH):
        async with fh_runtime(config) as rt:
            await rt.wait_state("d", "connected")
            fd = socket_fd_bound_to(pyserial_server.peer)
            assert fd is not None and fd >= HIGH  # the case select() cannot serve
            assert pyserial_server.serial.baudrate == 57600
            pty.write(b"".join(encode_packet(0, seq, bytes([0xFF]) * 8) for seq in range(300)))
            await rt.wait_flushed("d", 300)
            await rt.shutdown()
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(300))
