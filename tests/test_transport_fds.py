"""Descriptors: a ``socket://`` device whose socket is descriptor >= 1024
delivers every frame (pyserial's socket handler used ``select()``, which
cannot take it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
from collections.abc import Iterator

import pytest

from firmware_host import encode_packet
from firmware_host.testing import assert_accounting
from tests.conftest import read_jsonl

HIGH = 1024  # select()'s FD_SETSIZE: the first descriptor it cannot take

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


@contextlib.contextmanager
def soft_nofile_at_least(wanted: int) -> Iterator[None]:
    """The soft RLIMIT_NOFILE raised to ``wanted`` (within the hard limit), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def descriptors_below_taken(high: int) -> Iterator[None]:
    """Every descriptor below ``high`` in use, so the next one opened is >= ``high``."""
    base = os.open(os.devnull, os.O_RDONLY)
    held = [base]
    try:
        while held[-1] < high - 1:
            held.append(os.dup(base))
        yield
    finally:
        for fd in held:
            os.close(fd)


def socket_fd_bound_to(address: tuple[str, int]) -> int | None:
    """The descriptor of this process's socket whose local address is ``address``."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family == socket.AF_INET and sock.getsockname() == address:
                return fd
        except OSError:
            pass
        finally:
            sock.detach()  # the descriptor stays its owner's
    return None


@needs_proc
@pytest.mark.timeout(30)
async def test_socket_device_on_a_descriptor_above_1024_delivers_every_frame(fh_runtime, fh_jsonl):
    n = 500
    packets = [encode_packet(1, seq, seq.to_bytes(4, "little") * 8) for seq in range(n)]
    peer: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.set_result(writer.get_extra_info("peername"))
        for i in range(0, n, 50):  # in bursts, as a device streams
            writer.write(b"".join(packets[i : i + 50]))
            await writer.drain()
        await reader.read()  # until the host closes
        writer.close()

    with soft_nofile_at_least(4096), descriptors_below_taken(HIGH):
        server = await asyncio.start_server(device, "127.0.0.1", 0)
        port_no = server.sockets[0].getsockname()[1]
        config = {
            "buffer": {"flush_interval": 0.02},
            "devices": [{"name": "tcp", "port": f"socket://127.0.0.1:{port_no}", "codec": "fh1"}],
            "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
        }
        try:
            async with fh_runtime(config) as rt:
                fd = socket_fd_bound_to(await asyncio.wait_for(peer, 10))
                assert fd is not None and fd >= HIGH  # the case select() cannot serve
                status = await rt.wait_flushed("tcp", n, timeout=20)
                assert status["devices"]["tcp"]["reconnects"] == 0
                summary = await rt.shutdown()
        finally:
            server.close()
            await server.wait_closed()
    assert_accounting(summary.status)
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(n))
