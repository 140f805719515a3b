"""Our RFC 2217 client (``firmware_host/transport/rfc2217.py``) against a peer on a
real local socket that speaks RFC 854/855/2217 byte for byte, scripted by each
test (tests written from mutation testing, docs/testing-internals.md).

The expected bytes are written out here from the RFCs: the client offers
``WILL COM-PORT-OPTION`` and BINARY and SGA both ways; once the server says
``DO COM-PORT-OPTION`` it sends SET-BAUDRATE (1), SET-DATASIZE (2), SET-PARITY
(3), SET-STOPSIZE (4), SET-CONTROL (5); the server acknowledges each with its
code + 100. To tell that the client sent *nothing* in answer to a command, the
peer follows it with ``DO 99`` (an option nobody offers), whose answer ``WONT
99`` must then be the very next thing that arrives (telnet is processed in order).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import time

import pytest

from firmware_host.errors import PortClosed
from firmware_host.transport.rfc2217 import (
    Rfc2217Protocol,
    ServerQuirks,
    is_rfc2217_url,
    line_settings,
    open_rfc2217,
    parse_rfc2217_url,
)
from firmware_host.transport.stream import ChunkProtocol

pytestmark = pytest.mark.timeout(20)

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
BINARY, ECHO, SGA, CPO = 0, 1, 3, 44
UNKNOWN = 99
LOGGER = "firmware_host.transport.rfc2217"


def cmd(command: int, option: int) -> bytes:
    return bytes([IAC, command, option])


def sub(*payload: int) -> bytes:
    return bytes([IAC, SB, CPO, *payload, IAC, SE])


#: what the client says as it connects (RFC 2217 section 2, RFC 856, RFC 858)
GREETING = cmd(WILL, CPO) + cmd(WILL, BINARY) + cmd(DO, BINARY) + cmd(WILL, SGA) + cmd(DO, SGA)


def settings_for(baud: int) -> bytes:
    # baud as 4 bytes big-endian (network order), then 8 data bits, no parity (1), 1 stop bit (1), no flow control (1)
    return sub(1, *baud.to_bytes(4, "big")) + sub(2, 8) + sub(3, 1) + sub(4, 1) + sub(5, 1)


def acks_for(baud: int) -> bytes:
    return sub(101, *baud.to_bytes(4, "big")) + sub(102, 8) + sub(103, 1) + sub(104, 1)


class Peer:
    """One accepted client connection of the scripted server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def expect(self, want: bytes) -> None:
        async with asyncio.timeout(5):
            got = await self.reader.readexactly(len(want))
        assert got == want

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer_to(self, data: bytes) -> bytes:
        """Send ``data`` and a marker; what the client sent before answering the marker."""
        self.send(data + cmd(DO, UNKNOWN))
        async with asyncio.timeout(5):
            got = await self.reader.readuntil(cmd(WONT, UNKNOWN))
        return got[:-3]

    async def ended(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.read()


class Server:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.all: list[Peer] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._accept, self.host, 0)
        self.url = f"rfc2217://{self.host}:{self.server.sockets[0].getsockname()[1]}"
        return self

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self.all.append(peer)
        self.peers.put_nowait(peer)

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for peer in self.all:
            peer.writer.close()
            try:
                await peer.writer.wait_closed()
            except OSError:
                pass
        await self.server.wait_closed()

    async def peer(self) -> Peer:
        async with asyncio.timeout(5):
            return await self.peers.get()


async def negotiated(server: Server, peer_reply: bytes = b"") -> Peer:
    """A peer that has seen the greeting, agreed to RFC 2217 and got the settings."""
    peer = await server.peer()
    await peer.expect(GREETING)
    peer.send(cmd(DO, CPO) + peer_reply)
    await peer.expect(settings_for(57600))
    return peer


async def connected_protocol(
    server: Server, skip: frozenset[int] = frozenset()
) -> tuple[Rfc2217Protocol, asyncio.Transport, Peer]:
    protocol = Rfc2217Protocol(line_settings(57600), ChunkProtocol(), skip=skip)
    loop = asyncio.get_running_loop()
    host, port = server.url.removeprefix("rfc2217://").split(":")
    transport, _ = await loop.create_connection(lambda: protocol, host, int(port))
    return protocol, transport, await server.peer()


# -- URLs --------------------------------------------------------------------------


def test_which_urls_are_rfc2217():
    assert is_rfc2217_url("rfc2217://h:1")
    assert is_rfc2217_url("RFC2217://h:1")
    assert not is_rfc2217_url("socket://h:1")
    assert not is_rfc2217_url("rfc2217:/h:1")
    assert not is_rfc2217_url("/dev/ttyUSB0")


def test_parse_gives_host_port_and_the_default_timeout():
    assert parse_rfc2217_url("rfc2217://dev.example:4001") == ("dev.example", 4001, 3.0)
    assert parse_rfc2217_url("rfc2217://h:7?ign_set_control") == ("h", 7, 3.0)
    assert parse_rfc2217_url("rfc2217://h:7?timeout=0.5") == ("h", 7, 0.5)
    assert parse_rfc2217_url("rfc2217://h:7?timeout=60") == ("h", 7, 60.0)
    assert parse_rfc2217_url("rfc2217://h:7?ign_set_control&timeout=2") == ("h", 7, 2.0)
    assert parse_rfc2217_url("rfc2217://h:7?timeout=2&ign_set_control") == ("h", 7, 2.0)


@pytest.mark.parametrize("value", ["0", "-1", "60.5", "nan", "x", "", "1=2"])
def test_a_bad_timeout_is_refused_in_words(value):
    with pytest.raises(ValueError) as info:
        parse_rfc2217_url(f"rfc2217://h:7?timeout={value}")
    assert str(info.value) == f"expected timeout=SECONDS from 0 to 60, got {value!r}"


@pytest.mark.parametrize("item", ["ign_set_control=1", "timeout", "logging=debug", "x"])
@pytest.mark.parametrize("before", ["", "timeout=1&", "ign_set_control&"])
def test_an_unknown_option_is_refused_in_words(item, before):
    with pytest.raises(ValueError) as info:
        parse_rfc2217_url(f"rfc2217://h:7?{before}{item}")
    assert str(info.value) == (
        f"option {item!r} is not supported (rfc2217:// takes timeout=SECONDS and ign_set_control)"
    )


def test_the_shape_error_names_the_scheme():
    with pytest.raises(ValueError, match=r"rfc2217://HOST:PORT"):
        parse_rfc2217_url("rfc2217://h")


async def test_a_bad_url_fails_the_open_in_one_line():
    with pytest.raises(PortClosed) as info:
        await open_rfc2217("rfc2217://h:7?timeout=0", 9600, ServerQuirks())
    assert str(info.value) == "cannot open rfc2217://h:7?timeout=0: expected timeout=SECONDS from 0 to 60, got '0'"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_the_baudrate_is_an_unsigned_32_bit_number():
    assert line_settings(0x80000000)[1] == b"\x80\x00\x00\x00"
    assert line_settings(0xFFFFFFFF)[1] == b"\xff\xff\xff\xff"


def test_line_settings_are_8n1_without_flow_control():
    assert line_settings(115200) == {
        1: bytes([0, 1, 0xC2, 0x00]),
        2: b"\x08",
        3: b"\x01",
        4: b"\x01",
        5: b"\x01",
    }


# -- ServerQuirks ------------------------------------------------------------------------


def test_quirks_remember_per_url_and_say_each_once_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    quirks = ServerQuirks()
    assert quirks.ignored("u") == frozenset()
    quirks.ignore("u", frozenset({4, 1}), 0.5)
    quirks.ignore("u", frozenset({1}), 0.5)  # nothing new: not said again
    quirks.ignore("u", frozenset({1, 5}), 2)
    quirks.ignore("u", frozenset(), 2)
    assert quirks.ignored("u") == frozenset({1, 4, 5})
    assert quirks.ignored("v") == frozenset()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.DEBUG,
            "u: the server did not acknowledge SET-BAUDRATE, SET-STOPSIZE within 0.5 s; not waiting for it again",
        ),
        (logging.DEBUG, "u: the server did not acknowledge SET-CONTROL within 2 s; not waiting for it again"),
    ]


def test_quirks_warn_when_the_server_never_agreed(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    quirks = ServerQuirks()
    quirks.ignore("u", frozenset({44, 1, 2}), 1.5)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "u: the server did not agree to RFC 2217 within 1.5 s: its serial line is not set"),
    ]
    assert quirks.ignored("u") == frozenset({1, 2, 44})


def test_quirks_name_an_unknown_option_by_number(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    ServerQuirks().ignore("u", frozenset({2, 3, 77}), 1)
    assert caplog.records[0].getMessage() == (
        "u: the server did not acknowledge SET-DATASIZE, SET-PARITY, 77 within 1 s; not waiting for it again"
    )


def test_quirks_forget_the_least_recently_noted_url_past_the_limit():
    quirks = ServerQuirks(limit=2)
    quirks.ignore("a", frozenset({1}), 1)
    quirks.ignore("b", frozenset({1}), 1)
    quirks.ignore("a", frozenset({2}), 1)  # a is now the newest
    quirks.ignore("c", frozenset({1}), 1)  # b goes
    assert quirks.ignored("a") == frozenset({1, 2})
    assert quirks.ignored("b") == frozenset()
    assert quirks.ignored("c") == frozenset({1})


def test_quirks_keep_1024_urls_by_default():
    quirks = ServerQuirks()
    for i in range(1025):
        quirks.ignore(f"u{i}", frozenset({1}), 1)
    assert quirks.ignored("u0") == frozenset()
    assert quirks.ignored("u1") == frozenset({1})
    assert quirks.ignored("u1024") == frozenset({1})


# -- the open, against the scripted peer --------------------------------------------------


async def test_the_open_negotiates_waits_for_the_acks_and_passes_data_both_ways(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 57600, ServerQuirks()))
        peer = await negotiated(server)
        # the open waits for all four acknowledgements; SET-CONTROL's is not needed
        peer.send(acks_for(57600)[:-7])
        assert await peer.answer_to(b"") == b""
        assert not opening.done()
        peer.send(acks_for(57600)[-7:])
        port = await asyncio.wait_for(opening, 5)
        assert port.url == server.url
        # data: 255 doubled on the way out, undoubled on the way in
        port.write(b"a\xffb")
        await peer.expect(b"a\xff\xffb")
        peer.send(b"x\xff\xffy")
        assert await asyncio.wait_for(port.read(), 5) == b"x\xffy"
        await port.close()
        assert await peer.ended() == b""
    assert caplog.records == []


async def test_the_agreement_may_come_before_the_greeting_is_read():
    """``DO COM-PORT-OPTION`` answers our WILL: no second WILL is sent."""
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 9600, ServerQuirks()))
        peer = await server.peer()
        peer.send(cmd(DO, CPO) + acks_for(9600))
        await peer.expect(GREETING + settings_for(9600))
        port = await asyncio.wait_for(opening, 5)
        assert await peer.answer_to(b"") == b""
        await port.close()


async def test_a_second_agreement_sends_nothing_and_the_settings_go_once():
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 57600, ServerQuirks()))
        peer = await negotiated(server)
        assert await peer.answer_to(cmd(DO, CPO)) == b""
        peer.send(acks_for(57600))
        port = await asyncio.wait_for(opening, 5)
        await port.close()


async def test_the_client_refuses_options_it_does_not_perform_and_takes_its_own():
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 57600, ServerQuirks()))
        peer = await negotiated(server, acks_for(57600))
        port = await asyncio.wait_for(opening, 5)
        # DO of something not ours: WONT; DO of ours already offered: nothing
        assert await peer.answer_to(cmd(DO, ECHO)) == cmd(WONT, ECHO)
        assert await peer.answer_to(cmd(DO, BINARY)) == b""
        assert await peer.answer_to(cmd(DO, BINARY)) == b""
        # DONT of an agreed option: WONT, once; then a fresh DO is agreed with WILL
        assert await peer.answer_to(cmd(DONT, BINARY)) == cmd(WONT, BINARY)
        assert await peer.answer_to(cmd(DONT, BINARY)) == b""
        assert await peer.answer_to(cmd(DO, BINARY)) == cmd(WILL, BINARY)
        assert await peer.answer_to(cmd(DO, BINARY)) == b""
        # DONT of something never agreed: nothing
        assert await peer.answer_to(cmd(DONT, ECHO)) == b""
        # the server's side: WILL of something not ours is refused with DONT
        assert await peer.answer_to(cmd(WILL, ECHO)) == cmd(DONT, ECHO)
        # WILL answering our DO: nothing; again: nothing
        assert await peer.answer_to(cmd(WILL, SGA)) == b""
        assert await peer.answer_to(cmd(WILL, SGA)) == b""
        # WILL of ours that we did not ask for: DO
        assert await peer.answer_to(cmd(WILL, CPO)) == cmd(DO, CPO)
        # WONT of an agreed option: DONT, once; then WILL again is asked for with DO
        assert await peer.answer_to(cmd(WONT, SGA)) == cmd(DONT, SGA)
        assert await peer.answer_to(cmd(WONT, SGA)) == b""
        assert await peer.answer_to(cmd(WILL, SGA)) == cmd(DO, SGA)
        # WONT of something never agreed: nothing
        assert await peer.answer_to(cmd(WONT, ECHO)) == b""
        # DONT COM-PORT-OPTION after the settings went: not a refusal, just WONT
        assert await peer.answer_to(cmd(DONT, CPO)) == cmd(WONT, CPO)
        port.write(b"ok")
        await peer.expect(b"ok")
        await port.close()


async def test_a_server_that_refuses_rfc2217_fails_the_open_and_is_dropped():
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url + "?timeout=10", 9600, ServerQuirks()))
        peer = await server.peer()
        await peer.expect(GREETING)
        peer.send(cmd(DONT, CPO))
        with pytest.raises(PortClosed) as info:
            await asyncio.wait_for(opening, 5)
        assert str(info.value) == (
            f"cannot open {server.url}?timeout=10: the server refused RFC 2217 (DONT COM-PORT-OPTION):"
            " is it a telnet(rfc2217) port?"
        )
        assert info.value.__cause__ is None and info.value.__suppress_context__
        assert await peer.ended() == b""  # the connection is gone (aborted)


async def test_a_server_that_hangs_up_while_negotiating_fails_the_open():
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url + "?timeout=10", 9600, ServerQuirks()))
        peer = await server.peer()
        await peer.expect(GREETING)
        peer.writer.close()
        with pytest.raises(PortClosed) as info:
            await asyncio.wait_for(opening, 5)
        assert str(info.value) == f"cannot open {server.url}?timeout=10: connection closed by the device"


async def test_a_cancelled_open_drops_the_connection():
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url + "?timeout=10", 9600, ServerQuirks()))
        peer = await server.peer()
        await peer.expect(GREETING)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert await peer.ended() == b""


async def test_unacknowledged_settings_are_waited_for_once_per_url(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    quirks = ServerQuirks()
    async with Server() as server:
        url = server.url + "?timeout=0.2"
        opening = asyncio.ensure_future(open_rfc2217(url, 57600, quirks))
        peer = await negotiated(server, sub(101, *(57600).to_bytes(4, "big")) + sub(103, 1))
        start = time.monotonic()
        port = await asyncio.wait_for(opening, 5)
        assert time.monotonic() - start >= 0.15  # it waited its timeout
        await port.close()
        assert quirks.ignored(url) == frozenset({2, 4})
        # the next open waits only for what was acknowledged before
        opening = asyncio.ensure_future(open_rfc2217(url, 57600, quirks))
        peer = await negotiated(server)
        assert await peer.answer_to(b"") == b""
        assert not opening.done()
        peer.send(sub(101, *(57600).to_bytes(4, "big")) + sub(103, 1))
        port = await asyncio.wait_for(opening, 5)
        await port.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"{url}: the server did not acknowledge SET-DATASIZE, SET-STOPSIZE within 0.2 s; not waiting for it again"
    ]


async def test_a_server_that_never_agrees_is_not_waited_for_again(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    quirks = ServerQuirks()
    async with Server() as server:
        url = server.url + "?timeout=0.2"
        opening = asyncio.ensure_future(open_rfc2217(url, 9600, quirks))
        peer = await server.peer()
        await peer.expect(GREETING)
        port = await asyncio.wait_for(opening, 5)
        await port.close()
        assert quirks.ignored(url) == frozenset({1, 2, 3, 4, 44})
        # nothing is awaited now: the open returns at once (well inside a 10 s timeout)
        url10 = url  # same URL, so the same quirks
        opening = asyncio.ensure_future(open_rfc2217(url10, 9600, quirks))
        peer = await server.peer()
        await peer.expect(GREETING)
        port = await asyncio.wait_for(opening, 2)
        # the agreement still gets the settings sent
        peer.send(cmd(DO, CPO))
        await peer.expect(settings_for(9600))
        await port.close()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"{url}: the server did not agree to RFC 2217 within 0.2 s: its serial line is not set")
    ]


async def test_a_skipped_agreement_does_not_wait_even_with_a_long_timeout():
    quirks = ServerQuirks()
    async with Server() as server:
        url = server.url + "?timeout=10"
        quirks.ignore(url, frozenset({1, 2, 3, 4, 44}), 10)
        opening = asyncio.ensure_future(open_rfc2217(url, 9600, quirks))
        peer = await server.peer()
        port = await asyncio.wait_for(opening, 3)
        await peer.expect(GREETING)
        await port.close()


async def test_a_different_baudrate_in_the_ack_is_warned_about(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 57600, ServerQuirks()))
        await negotiated(server, acks_for(38400))
        port = await asyncio.wait_for(opening, 5)
        await port.close()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"{server.url}: the server set 38400 baud, not 57600")
    ]


async def test_an_acknowledged_baudrate_is_read_unsigned(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 57600, ServerQuirks()))
        await negotiated(server, sub(101, 0x80, 0, 0, 0) + acks_for(57600)[10:])
        port = await asyncio.wait_for(opening, 5)
        await port.close()
    assert [r.getMessage() for r in caplog.records] == [f"{server.url}: the server set 2147483648 baud, not 57600"]


async def test_a_short_baudrate_ack_is_not_read_as_a_rate(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 57600, ServerQuirks()))
        await negotiated(server, sub(101, 0, 0, 1) + acks_for(57600)[10:])
        port = await asyncio.wait_for(opening, 5)
        await port.close()
    assert caplog.records == []


# -- the protocol's state, on a real connection --------------------------------------------


async def test_acknowledgements_are_kept_and_other_notifications_ignored():
    async with Server() as server:
        protocol, transport, peer = await connected_protocol(server)
        await peer.expect(GREETING)
        assert protocol.unsettled() == frozenset({1, 2, 3, 4, 44})
        peer.send(cmd(DO, CPO))
        await peer.expect(settings_for(57600))
        assert protocol.unsettled() == frozenset({1, 2, 3, 4})
        # NOTIFY-LINESTATE (106), an empty subnegotiation, another option's: nothing
        other = bytes([IAC, SB, 5, 101, 0, 0, 0, 1, IAC, SE])
        await peer.answer_to(sub(106, 0) + sub() + other + sub(105, 1) + sub(102, 7))
        assert protocol.acknowledged == {5: b"\x01", 2: b"\x07"}
        assert protocol.unsettled() == frozenset({1, 3, 4})
        peer.send(sub(101, 0, 0, 0x96, 0) + sub(103, 1) + sub(104, 1))
        await asyncio.wait_for(protocol.wait_settled(), 5)
        assert protocol.unsettled() == frozenset()
        assert protocol.acknowledged == {5: b"\x01", 2: b"\x07", 1: b"\x00\x00\x96\x00", 3: b"\x01", 4: b"\x01"}
        transport.close()


async def test_skipped_settings_are_not_awaited():
    async with Server() as server:
        protocol, transport, peer = await connected_protocol(server, skip=frozenset({1, 3}))
        await peer.expect(GREETING)
        assert protocol.unsettled() == frozenset({2, 4, 44})
        peer.send(cmd(DO, CPO))
        await peer.expect(settings_for(57600))  # skipped ones are still sent
        peer.send(sub(102, 8) + sub(104, 1))
        await asyncio.wait_for(protocol.wait_settled(), 5)
        transport.close()


async def test_nothing_is_sent_once_the_connection_is_closing():
    async with Server() as server:
        protocol, transport, peer = await connected_protocol(server)
        await peer.expect(GREETING)
        transport.close()
        protocol.negotiation(DO, ECHO)  # would answer WONT on a live connection
        assert await peer.ended() == b""


async def test_the_writer_reports_the_transports_queue(monkeypatch):
    from firmware_host.transport import stream

    # close() gives the queue nobody reads CLOSE_TIMEOUT (1 s) to drain: not what this tests
    monkeypatch.setattr(stream, "CLOSE_TIMEOUT", 0.1)
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url, 57600, ServerQuirks()))
        await negotiated(server, acks_for(57600))
        port = await asyncio.wait_for(opening, 5)
        # the peer reads nothing more: the kernel's buffers fill, then the transport's, then writes are refused
        chunk = b"\x00" * (1 << 18)
        with pytest.raises(OSError) as info:
            for _ in range(400):
                port.write(chunk)
                await asyncio.sleep(0)
        assert info.value.errno == errno.ENOBUFS
        await port.close()


async def test_a_refused_connect_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port_no = s.getsockname()[1]  # bound, not listening: refused
        url = f"rfc2217://127.0.0.1:{port_no}"
        with pytest.raises(PortClosed) as info:
            await open_rfc2217(url, 9600, ServerQuirks())
    assert str(info.value) == f"cannot open {url}: [Errno 111] Connection refused"


async def test_the_connection_goes_to_the_host_in_the_url():
    async with Server("127.0.0.2") as server:  # all of 127/8 is loopback on Linux
        opening = asyncio.ensure_future(open_rfc2217(server.url, 9600, ServerQuirks()))
        peer = await server.peer()
        await peer.expect(GREETING)
        peer.send(cmd(DO, CPO) + acks_for(9600))
        port = await asyncio.wait_for(opening, 5)
        await port.close()


async def test_a_reset_while_negotiating_fails_the_open_with_the_reason():
    async with Server() as server:
        opening = asyncio.ensure_future(open_rfc2217(server.url + "?timeout=10", 9600, ServerQuirks()))
        peer = await server.peer()
        await peer.expect(GREETING)
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        peer.writer.transport.abort()
        with pytest.raises(PortClosed) as info:
            await asyncio.wait_for(opening, 5)
        assert str(info.value) == f"cannot open {server.url}?timeout=10: [Errno 104] Connection reset by peer"


async def test_writes_on_a_closing_connection_are_not_attempted(caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    async with Server() as server:
        protocol, transport, peer = await connected_protocol(server)
        await peer.expect(GREETING)
        transport.close()
        for _ in range(8):  # asyncio warns from the fifth write to a closed connection
            protocol.negotiation(DO, ECHO)
        assert await peer.ended() == b""
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_reading_pauses_when_a_mebibyte_is_unread():
    async with Server() as server:
        protocol, transport, peer = await connected_protocol(server)
        await peer.expect(GREETING)
        peer.send(bytes(1 << 20) + b"!")
        await peer.writer.drain()
        async with asyncio.timeout(5):
            while transport.is_reading():
                await asyncio.sleep(0.01)  # no event says "paused": the transport is polled, with a deadline
        data = await protocol.chunks.read()
        assert data[-1:] == b"!" and len(data) == (1 << 20) + 1
        assert transport.is_reading()
        transport.close()
