"""Against a real ser2net serving a pty: ``socket://`` (its ``tcp`` accepter)
and the plain ``rfc2217://`` URL (its ``telnet(rfc2217)`` accepter) deliver
every frame in order, set (rfc2217) the far end's baudrate, and reconnect
when ser2net is killed and comes back."""

from __future__ import annotations

import termios

import pytest

from firmware_host import encode_packet
from tests.conftest import read_jsonl
from tests.remote_serial import SER2NET, SKIP_NO_SER2NET, Pty, Ser2net

pytestmark = [pytest.mark.timeout(30), pytest.mark.skipif(SER2NET is None, reason=SKIP_NO_SER2NET)]

FAST = {"backoff_initial": 0.02, "backoff_max": 0.1}
ACCEPTERS = {"socket": "tcp", "rfc2217": "telnet(rfc2217),tcp"}


def frames(first: int, count: int) -> bytes:
    return b"".join(
        encode_packet(0, seq, seq.to_bytes(4, "little") * 8 + bytes([0xFF, 0x0D, 0x0A]))
        for seq in range(first, first + count)
    )


@pytest.fixture
def pty():
    pair = Pty()
    yield pair
    pair.close()


@pytest.fixture
def ser2net_for(tmp_path, pty):
    started: list[Ser2net] = []

    def make(scheme: str) -> Ser2net:
        server = Ser2net(tmp_path, pty.name, ACCEPTERS[scheme])
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.mark.parametrize("scheme", sorted(ACCEPTERS))
async def test_every_frame_arrives_in_order_and_after_a_ser2net_restart(scheme, pty, ser2net_for, fh_runtime, fh_jsonl):
    server = ser2net_for(scheme)
    config = {
        "buffer": {"flush_interval": 0.02},
        "devices": [
            {"name": "d", "port": f"{scheme}://127.0.0.1:{server.port}", "codec": "fh1", "baudrate": 57600, **FAST}
        ],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("d", "connected")
        pty.wait_slave_open()
        pty.write(frames(0, 200))
        await rt.wait_flushed("d", 200)

        server.stop()  # killed mid-stream: the connection drops without a word
        await rt.wait_until(lambda s: s["devices"]["d"]["state"] != "connected", 10)
        server.start()
        await rt.wait_counter("d", "reconnects", 1)
        await rt.wait_state("d", "connected")
        pty.wait_slave_open()
        pty.write(frames(200, 200))
        status = await rt.wait_flushed("d", 400)
        device = status["devices"]["d"]
        assert device["reconnects"] == 1 and device["rejected"] == 0 and device["gaps"] == 0
        assert device["last_error"]  # why it reconnected
        await rt.shutdown()
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(400))


async def test_rfc2217_sets_the_baudrate_of_the_far_end(pty, ser2net_for, fh_runtime):
    """ser2net's line is 9600 baud; the device's 57600 is set through RFC 2217
    before the port counts as open (the open waits for ser2net's acknowledgement)."""
    server = ser2net_for("rfc2217")
    config = {
        "devices": [{"name": "d", "port": f"rfc2217://127.0.0.1:{server.port}", "codec": "fh1", "baudrate": 57600}]
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("d", "connected")
        assert pty.speed() == termios.B57600
        await rt.shutdown()


async def test_socket_leaves_the_far_end_as_ser2net_set_it(pty, ser2net_for, fh_runtime):
    """A raw TCP port has no way to set the line: ser2net's own 9600 stands."""
    server = ser2net_for("socket")
    config = {
        "devices": [{"name": "d", "port": f"socket://127.0.0.1:{server.port}", "codec": "fh1", "baudrate": 57600}]
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("d", "connected")
        pty.wait_slave_open()
        assert pty.speed() == termios.B9600
        await rt.shutdown()
