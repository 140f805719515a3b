"""``socket://`` devices, connected by asyncio: the URL is checked at open,
the device's first bytes are kept, a closed connection is PortClosed, and a
device whose server goes away reconnects when it comes back."""

from __future__ import annotations

import asyncio
import socket

import pytest

from firmware_host import PortClosed, encode_packet
from firmware_host.transport.serial import open_serial
from firmware_host.transport.tcp import parse_socket_url
from tests.conftest import read_jsonl

pytestmark = pytest.mark.timeout(20)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("socket://127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("socket://[::1]:7000", ("::1", 7000)),
        ("SOCKET://gateway.local:1/", ("gateway.local", 1)),
        ("socket://[fe80::1]:65535", ("fe80::1", 65535)),
    ],
)
def test_socket_urls_parse(url, expected):
    assert parse_socket_url(url) == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("socket://host", "with a port from 1 to 65535"),
        ("socket://host:0", "with a port from 1 to 65535"),
        ("socket://host:70000", "with a port from 1 to 65535"),
        ("socket://host:http", "with a port from 1 to 65535"),
        ("socket://:7000", "with a port from 1 to 65535"),
        ("socket://host:7000?logging=debug", "options are not supported (?logging=debug)"),
        ("socket://user@host:7000", "and nothing else"),
        ("socket://host:7000/path", "and nothing else"),
        ("socket://host:7000#x", "and nothing else"),
        ("socket://[::1:7000", "IPv6"),
        ("socket://ho st:7000", "without spaces or control characters"),
        ("socket://host:7000\n", "without spaces or control characters"),
        ("socket://" + "h" * 400 + ":1", "at most 300 characters"),
    ],
)
async def test_socket_urls_we_cannot_honour_fail_at_open(url, error):
    with pytest.raises(ValueError) as parsed:
        parse_socket_url(url)
    assert error in str(parsed.value)
    with pytest.raises(PortClosed) as opened:
        await open_serial(url, 9600)
    message = str(opened.value)
    assert message.startswith(f"cannot open {url}: ") and error in message


async def test_socket_keeps_what_the_device_sends_on_connect():
    """A device that greets as soon as it accepts: the greeting is the first read
    (pyserial flushed it with the input buffer as it opened the port)."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HELLO v1.2\n")
        await writer.drain()
        await reader.read()  # until the host closes
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port_no = server.sockets[0].getsockname()[1]
    port = await open_serial(f"socket://127.0.0.1:{port_no}", 115200)
    try:
        got = b""
        while len(got) < 11:
            got += await asyncio.wait_for(port.read(), 5)
        assert got == b"HELLO v1.2\n"
    finally:
        await port.close()
        server.close()
        await server.wait_closed()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
async def test_socket_over_ipv6():
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "::1", 0)
    port_no = server.sockets[0].getsockname()[1]
    port = await open_serial(f"socket://[::1]:{port_no}", 115200)
    try:
        port.write(b"ping")
        assert await asyncio.wait_for(port.read(), 5) == b"ping"
    finally:
        await port.close()
        server.close()
        await server.wait_closed()


async def test_socket_closed_by_the_device_is_portclosed_after_its_last_bytes():
    async def last_words(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(last_words, "127.0.0.1", 0)
    port_no = server.sockets[0].getsockname()[1]
    port = await open_serial(f"socket://127.0.0.1:{port_no}", 115200)
    try:
        got = b""
        with pytest.raises(PortClosed, match="closed by the device"):
            while True:
                got += await asyncio.wait_for(port.read(), 5)
        assert got == b"bye"
        with pytest.raises(PortClosed):
            port.write(b"too late")
    finally:
        await port.close()
        server.close()
        await server.wait_closed()


async def test_socket_refused_is_portclosed():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port_no = s.getsockname()[1]
    with pytest.raises(PortClosed, match=r"cannot open socket://127\.0\.0\.1:\d+: \[Errno \d+\] Connection refused$"):
        await open_serial(f"socket://127.0.0.1:{port_no}", 9600)


async def test_socket_device_reconnects_when_its_server_returns(fh_runtime, fh_jsonl):
    """The server drops the connection mid-frame and stops listening: the
    device backs off (connection refused), reconnects once the server accepts
    again, and the frames sent after that arrive; the cut frame is rejected."""
    packets = [encode_packet(0, seq, seq.to_bytes(4, "little") * 4) for seq in range(20)]
    first_done = asyncio.get_running_loop().create_future()

    async def first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # stop listening before the connection ends: the device's reconnects
        # are refused until the second server comes (no second greeting here)
        server.close()
        writer.write(b"".join(packets[:10]) + packets[10][:7])  # frame 10 cut in half
        await writer.drain()
        writer.close()
        first_done.set_result(None)

    async def second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(packets[10:]))  # the device starts frame 10 over
        await writer.drain()
        await reader.read()  # until the host closes
        writer.close()

    server = await asyncio.start_server(first, "127.0.0.1", 0)
    port_no = server.sockets[0].getsockname()[1]
    config = {
        "buffer": {"flush_interval": 0.02},
        "devices": [{"name": "tcp", "port": f"socket://127.0.0.1:{port_no}", "codec": "fh1", **FAST}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_flushed("tcp", 10)
        await asyncio.wait_for(first_done, 5)
        await server.wait_closed()
        await rt.runtime.wait_until(lambda s: "refused" in (s["devices"]["tcp"]["last_error"] or ""), 10)
        server = await asyncio.start_server(second, "127.0.0.1", port_no)
        status = await rt.wait_flushed("tcp", 20)
        assert status["devices"]["tcp"]["reconnects"] >= 1
        assert status["devices"]["tcp"]["rejected"] == 1  # the half frame
        await rt.shutdown()
    server.close()
    await server.wait_closed()
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(20))


@pytest.mark.parametrize("scheme", ["socket", "rfc2217"])
async def test_connections_are_kept_alive(scheme):
    """TCP keepalive is on, so a network that drops without a word ends the
    connection (and the device reconnects) instead of reading nothing forever."""
    from firmware_host.transport.limits import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL
    from firmware_host.transport.tcp import connect

    accepted = asyncio.get_running_loop().create_future()
    done = asyncio.get_running_loop().create_future()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(None)
        await reader.read()  # until the host closes
        writer.close()
        await writer.wait_closed()
        done.set_result(None)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port_no = server.sockets[0].getsockname()[1]
    transport = await connect(f"{scheme}://127.0.0.1:{port_no}", "127.0.0.1", port_no, asyncio.Protocol())
    try:
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
        await asyncio.wait_for(accepted, 5)
    finally:
        transport.close()
        await asyncio.wait_for(done, 5)
        server.close()
        await server.wait_closed()
