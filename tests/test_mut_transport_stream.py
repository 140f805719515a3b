"""``ChunkProtocol`` and ``StreamPort`` (``firmware_host/transport/stream.py``) on
real local TCP connections, and ``socket://`` URLs and connects (``tcp.py``)
(tests written from mutation testing, docs/testing-internals.md).

Where an exact number is the point (the read limit at which reading pauses,
the write limit at which a write is refused) a stand-in transport reports it;
everything else runs over sockets. Times on the virtual clock
(tests/virtual_time.py) are exact: closing waits 1 s (``CLOSE_TIMEOUT``) for
a peer that takes nothing, then aborts; a connect gives up after 5 s
(``CONNECT_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from firmware_host.errors import PortClosed
from firmware_host.transport.stream import ChunkProtocol, StreamPort
from firmware_host.transport.tcp import connect, is_socket_url, open_socket, parse_socket_url, split_host_url
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(20)

WRITE_LIMIT = 1 << 20
READ_LIMIT = 1 << 20


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


@asynccontextmanager
async def tcp_server(rcvbuf: int = 0) -> AsyncIterator[tuple[int, asyncio.Queue[Peer]]]:
    peers: asyncio.Queue[Peer] = asyncio.Queue()
    every: list[Peer] = []

    def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer = Peer(r, w)
        every.append(peer)
        peers.put_nowait(peer)

    listener = socket.socket()
    if rcvbuf:  # inherited by the accepted connection, before the window is advertised
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    listener.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(accept, sock=listener)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()
        for peer in every:
            peer.writer.close()
        await server.wait_closed()


async def connection(port_no: int, protocol: ChunkProtocol) -> asyncio.Transport:
    transport, _ = await asyncio.get_running_loop().create_connection(lambda: protocol, "127.0.0.1", port_no)
    return transport


class Stub:
    """A transport that reports a fixed write queue and records what it is told."""

    def __init__(self, queued: int = 0) -> None:
        self.queued = queued
        self.written: list[bytes] = []
        self.calls: list[str] = []
        self.reading = True

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.queued

    def close(self) -> None:
        self.calls.append("close")

    def abort(self) -> None:
        self.calls.append("abort")

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True


# -- ChunkProtocol ---------------------------------------------------------------------


async def test_reads_return_everything_since_the_last_in_one_piece():
    async with tcp_server() as (port_no, peers):
        protocol = ChunkProtocol()
        transport = await connection(port_no, protocol)
        peer = await peers.get()
        peer.writer.write(b"one")
        assert await asyncio.wait_for(protocol.read(), 5) == b"one"
        # several chunks: joined, in order
        protocol.data_received(b"a")
        protocol.data_received(b"bc")
        protocol.data_received(b"d")
        assert await protocol.read() == b"abcd"
        protocol.data_received(b"x")
        protocol.data_received(b"yz")
        assert await protocol.read() == b"xyz"
        assert protocol.lost() is None
        transport.close()
        await asyncio.wait_for(protocol.wait_lost(), 5)
        with pytest.raises(PortClosed, match=r"^port closed$"):
            await protocol.read()


async def test_a_parked_read_wakes_for_data_and_for_the_loss():
    protocol = ChunkProtocol()
    protocol.connection_made(Stub())  # type: ignore[arg-type]
    reading = asyncio.ensure_future(protocol.read())
    await asyncio.sleep(0)
    assert not reading.done()
    protocol.data_received(b"x")
    assert await asyncio.wait_for(reading, 5) == b"x"
    reading = asyncio.ensure_future(protocol.read())
    await asyncio.sleep(0)
    protocol.connection_lost(ConnectionResetError(errno.ECONNRESET, "reset by peer"))
    with pytest.raises(PortClosed, match=r"^\[Errno 104\] reset by peer$"):
        await asyncio.wait_for(reading, 5)


async def test_the_last_bytes_come_before_the_loss():
    protocol = ChunkProtocol()
    protocol.connection_made(Stub())  # type: ignore[arg-type]
    protocol.data_received(b"last")
    assert protocol.eof_received() is None
    protocol.connection_lost(None)
    assert await protocol.read() == b"last"
    with pytest.raises(PortClosed, match=r"^connection closed by the device$"):
        await protocol.read()
    assert str(protocol.lost()) == "connection closed by the device"


async def test_a_loss_without_words_is_named_by_its_type():
    protocol = ChunkProtocol()
    protocol.connection_lost(ConnectionAbortedError())
    assert str(protocol.lost()) == "ConnectionAbortedError"
    await asyncio.wait_for(protocol.wait_lost(), 1)


async def test_reading_pauses_past_the_limit_and_resumes_after_a_read():
    stub = Stub()
    protocol = ChunkProtocol(limit=10)
    protocol.connection_made(stub)  # type: ignore[arg-type]
    protocol.data_received(b"12345")
    protocol.data_received(b"67890")  # 10: at the limit, not past it
    assert stub.calls == []
    protocol.data_received(b"!")  # 11: past it
    assert stub.calls == ["pause"]
    protocol.data_received(b"?")  # paused already: not again
    assert stub.calls == ["pause"]
    assert await protocol.read() == b"1234567890!?"
    assert stub.calls == ["pause", "resume"]
    # the count starts again from nothing
    protocol.data_received(b"0123456789")
    assert stub.calls == ["pause", "resume"]
    assert await protocol.read() == b"0123456789"
    assert stub.calls == ["pause", "resume"]  # not paused: no resume either
    protocol.data_received(b"x" * 11)
    protocol.connection_lost(None)
    assert await protocol.read() == b"x" * 11
    assert stub.calls == ["pause", "resume", "pause"]  # lost: nothing to resume


async def test_the_default_limit_is_one_mebibyte():
    stub = Stub()
    protocol = ChunkProtocol()
    protocol.connection_made(stub)  # type: ignore[arg-type]
    protocol.data_received(bytes(READ_LIMIT))
    assert stub.calls == []
    protocol.data_received(b"x")
    assert stub.calls == ["pause"]


async def test_reading_pauses_on_a_real_connection():
    async with tcp_server() as (port_no, peers):
        protocol = ChunkProtocol(limit=100)
        transport = await connection(port_no, protocol)
        peer = await peers.get()
        peer.writer.write(bytes(1000))
        got = await asyncio.wait_for(protocol.read(), 5)
        while len(got) <= 100:
            got += await asyncio.wait_for(protocol.read(), 5)
        assert transport.is_reading()  # resumed by the read
        transport.close()


# -- StreamPort ------------------------------------------------------------------------


async def test_the_write_queue_holds_exactly_the_limit():
    stub = Stub(queued=WRITE_LIMIT - 10)
    port = StreamPort("s://x", stub, ChunkProtocol())
    port.write(b"0123456789")  # exactly the limit
    with pytest.raises(OSError) as info:
        port.write(b"0123456789!")
    assert info.value.errno == errno.ENOBUFS
    assert info.value.strerror == f"s://x: downlink not taken by the device ({WRITE_LIMIT - 10} bytes queued)"
    assert stub.written == [b"0123456789"]


async def test_writes_after_the_loss_or_the_close_are_refused():
    stub = Stub()
    protocol = ChunkProtocol()
    port = StreamPort("s://x", stub, protocol)
    protocol.connection_lost(OSError("gone away"))
    with pytest.raises(PortClosed, match=r"^gone away$"):
        port.write(b"x")
    assert stub.written == []


async def test_close_waits_for_the_loss_then_runs_on_closed():
    async with tcp_server() as (port_no, peers):
        protocol = ChunkProtocol()
        transport = await connection(port_no, protocol)
        peer = await peers.get()
        ran: list[bool] = []

        async def on_closed() -> None:
            ran.append(protocol.lost() is not None)

        port = StreamPort("s://x", transport, protocol, on_closed=on_closed)
        port.write(b"bye")
        await port.close()
        assert ran == [True]
        assert await asyncio.wait_for(peer.reader.read(), 5) == b"bye"  # written, then closed
        with pytest.raises(PortClosed, match=r"^port closed$"):
            port.write(b"x")
        await port.close()  # again: nothing more
        assert ran == [True]


def test_close_aborts_after_one_second_when_the_peer_takes_nothing():
    async def main() -> None:
        loop = virtual_loop()
        async with tcp_server(rcvbuf=4096) as (port_no, peers):
            protocol = ChunkProtocol()
            transport = await connection(port_no, protocol)
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            peer = await peers.get()
            peer.writer.transport.pause_reading()
            port = StreamPort("s://x", transport, protocol)
            # far more than the kernel's small buffers hold: the rest stays queued (the peer reads nothing)
            port.write(bytes(1 << 19))
            for _ in range(5):
                await asyncio.sleep(0)
            assert transport.get_write_buffer_size() > 0
            start = loop.time()
            await port.close()
            assert loop.time() - start == 1.0
            assert protocol.lost() is not None

    run_virtual(main())


async def test_a_write_while_closing_is_refused():
    stub = Stub()
    port = StreamPort("s://x", stub, ChunkProtocol())
    closing = asyncio.ensure_future(port.close())
    await asyncio.sleep(0)  # closing has begun; the transport has not reported the loss
    with pytest.raises(PortClosed) as info:
        port.write(b"x")
    assert str(info.value) == "port closed"
    assert stub.written == []
    closing.cancel()


def test_close_gives_up_after_two_seconds_when_the_loss_is_never_reported():
    """A transport that reports no loss even after abort (the bound is a guard):
    close waits 1 s, aborts, waits 1 s more, raises TimeoutError, and still runs on_closed."""

    async def main() -> None:
        loop = virtual_loop()
        stub = Stub()
        ran: list[float] = []

        async def on_closed() -> None:
            ran.append(loop.time())

        port = StreamPort("s://x", stub, ChunkProtocol(), on_closed=on_closed)
        with pytest.raises(TimeoutError):
            await port.close()
        assert loop.time() == 2.0
        assert stub.calls == ["close", "abort"]
        assert ran == [2.0]

    run_virtual(main())


async def test_a_cancelled_close_still_closes():
    stub = Stub()
    protocol = ChunkProtocol()
    port = StreamPort("s://x", stub, protocol)
    closing = asyncio.ensure_future(port.close())
    for _ in range(3):
        await asyncio.sleep(0)
    assert stub.calls == ["close"]
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    protocol.connection_lost(None)
    await asyncio.wait_for(port.close(), 5)
    assert stub.calls == ["close"]


async def test_reads_go_to_the_protocol():
    protocol = ChunkProtocol()
    port = StreamPort("s://x", Stub(), protocol)
    protocol.data_received(b"abc")
    assert await port.read() == b"abc"
    assert port.url == "s://x"


# -- tcp.py ----------------------------------------------------------------------------


def test_which_urls_are_sockets():
    assert is_socket_url("socket://h:1")
    assert is_socket_url("SOCKET://h:1")
    assert not is_socket_url("socket:/h:1")
    assert not is_socket_url("rfc2217://h:1")


def test_the_url_bound_is_300_characters():
    host = "h" * (300 - len("socket://") - len(":1"))
    assert parse_socket_url(f"socket://{host}:1") == (host, 1)
    with pytest.raises(ValueError) as info:
        parse_socket_url(f"socket://{host}h:1")
    assert str(info.value) == "expected socket://HOST:PORT of at most 300 characters"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("socket://h:1 ", "expected socket://HOST:PORT without spaces or control characters"),
        ("socket://h:1\x7f", "expected socket://HOST:PORT without spaces or control characters"),
        ("socket://u:p@h:1", "expected socket://HOST:PORT and nothing else"),
        ("socket://u@h:1", "expected socket://HOST:PORT and nothing else"),
        ("socket://:p@h:1", "expected socket://HOST:PORT and nothing else"),
        ("socket://h:1/x", "expected socket://HOST:PORT and nothing else"),
        ("socket://h:1#f", "expected socket://HOST:PORT and nothing else"),
        ("socket://h:0", "expected socket://HOST:PORT with a port from 1 to 65535"),
        ("socket://h:65536", "expected socket://HOST:PORT with a port from 1 to 65535"),
        ("socket://h:x", "expected socket://HOST:PORT with a port from 1 to 65535"),
        ("socket://h", "expected socket://HOST:PORT with a port from 1 to 65535"),
        ("socket://:5", "expected socket://HOST:PORT with a port from 1 to 65535"),
        ("socket://h:5?a=b", "options are not supported (?a=b); expected socket://HOST:PORT"),
    ],
)
def test_socket_url_mistakes_in_words(url, message):
    with pytest.raises(ValueError) as info:
        parse_socket_url(url)
    assert str(info.value) == message


def test_the_edges_of_the_port_range_and_a_trailing_slash():
    assert parse_socket_url("socket://h:1/") == ("h", 1)
    assert parse_socket_url("socket://h:65535") == ("h", 65535)
    assert split_host_url("x://h:2?q=1", "x") == ("h", 2, "q=1")


async def test_a_refused_connect_says_so_in_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port_no = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(PortClosed) as info:
            await open_socket(f"socket://127.0.0.1:{port_no}")
    assert str(info.value) == f"cannot open socket://127.0.0.1:{port_no}: [Errno 111] Connection refused"
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_a_bad_url_fails_the_open_in_one_line():
    with pytest.raises(PortClosed) as info:
        await open_socket("socket://h:1?x")
    assert str(info.value) == "cannot open socket://h:1?x: options are not supported (?x); expected socket://HOST:PORT"
    assert info.value.__suppress_context__


async def test_an_unknown_host_keeps_the_resolvers_words():
    with pytest.raises(PortClosed) as info:
        await open_socket("socket://no-such-host.invalid:7")
    message = str(info.value)
    assert message.startswith("cannot open socket://no-such-host.invalid:7: [Errno -")
    assert "Unknown error" not in message  # the resolver's words, not strerror of a negative number


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        # several addresses failed differently: asyncio's summary has no errno
        (
            OSError("Multiple exceptions: [Errno 111] a, [Errno 113] b"),
            "Multiple exceptions: [Errno 111] a, [Errno 113] b",
        ),
        (OSError(errno.EHOSTUNREACH, "Connect call failed ('10.0.0.9', 7)"), "[Errno 113] No route to host"),
        (OSError(0, "odd"), "[Errno 0] odd"),
    ],
)
async def test_a_failed_connect_is_said_by_its_errno_or_its_words(monkeypatch, error, reason):
    async def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", failing)
    with pytest.raises(PortClosed) as info:
        await connect("socket://h:7", "h", 7, ChunkProtocol())
    assert str(info.value) == f"cannot open socket://h:7: {reason}"


def test_a_connect_that_never_completes_gives_up_after_five_seconds():
    async def main() -> None:
        loop = virtual_loop()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port_no = listener.getsockname()[1]
            # fill the accept queue: further handshakes are not answered
            fillers = []
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port_no))
                fillers.append(s)
            try:
                start = loop.time()
                with pytest.raises(PortClosed) as info:
                    await connect("socket://x", "127.0.0.1", port_no, ChunkProtocol())
                assert str(info.value) == "cannot open socket://x: no connection within 5 s"
                assert loop.time() - start == 5.0
            finally:
                for s in fillers:
                    s.close()

    run_virtual(main())


async def test_open_socket_gives_a_port_that_reads_and_writes():
    async with tcp_server() as (port_no, peers):
        port = await open_socket(f"socket://127.0.0.1:{port_no}")
        peer = await peers.get()
        assert port.url == f"socket://127.0.0.1:{port_no}"
        peer.writer.write(b"hello")
        assert await asyncio.wait_for(port.read(), 5) == b"hello"
        port.write(b"back")
        assert await asyncio.wait_for(peer.reader.readexactly(4), 5) == b"back"
        sock = port._transport.get_extra_info("socket")  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        await port.close()
