"""The control server in-process: protocol, robustness against hostile clients, security.

No sleeps as synchronisation: runtime state is awaited with ``rt.wait_until``
and socket state with reads that return when the server acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from firmware_host import FakeOpener, FakePort, Frame, Runtime, Sink, config_from_dict, encode_packet
from firmware_host.control.client import request, request_sync
from firmware_host.control.server import ControlServer, Stream
from firmware_host.errors import ControlError, NoRuntime
from firmware_host.runtime import RuntimeFailure
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


class MemorySink(Sink):
    name = "memory"

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.frames.extend(frames)


@pytest.fixture
def sockdir() -> Iterator[str]:
    # not tmp_path: long test names would exceed the 107-byte Unix socket path limit
    d = tempfile.mkdtemp(prefix="fhc")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def packets(seqs: range, body: bytes = b"payload") -> bytes:
    return b"".join(encode_packet(0, s, body) for s in seqs)


@contextlib.asynccontextmanager
async def running(
    sockdir: str, devices: dict[str, list[FakePort]] | None = None, capacity: int = 1000
) -> AsyncIterator[tuple[Runtime, MemorySink, str]]:
    """A runtime with fake ports, a memory sink and its control socket."""
    devices = devices or {}
    cfg = config_from_dict(
        {
            "buffer": {"capacity": capacity, "flush_interval": 0},
            "devices": [{"name": n, "port": f"fake://{n}", "codec": "fh1"} for n in devices],
        }
    )
    sink = MemorySink()
    path = os.path.join(sockdir, "ctl.sock")
    opener = FakeOpener({f"fake://{n}": list(ports) for n, ports in devices.items()})
    rt = Runtime(cfg, opener=opener, sinks=[sink], control_path=path)
    await rt.start()
    try:
        yield rt, sink, path
    finally:
        await rt.shutdown()


async def raw(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path, limit=1 << 20)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> dict[str, Any]:
    writer.write(line)
    await writer.drain()
    reply = await reader.readline()
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    out: dict[str, Any] = json.loads(reply)
    return out


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """EOF, or a reset (closing with our unread bytes queued resets the connection)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


def law_holds(status: dict[str, Any]) -> bool:
    return all(d["frames"] == d["flushed"] + d["dropped"] + d["buffered"] for d in status["devices"].values())


# -- protocol ------------------------------------------------------------------------------


def test_status_buffers_ping_have_the_design_shapes(sockdir: str) -> None:
    async def main() -> None:
        port = FakePort([packets(range(5))])
        async with running(sockdir, {"imu0": [port]}) as (rt, _, path):
            await rt.wait_until(lambda s: s["devices"]["imu0"]["frames"] == 5, 5)
            status = await request(path, {"cmd": "status"})
            assert "ok" not in status
            assert {"uptime", "buffer", "devices"} <= status.keys()
            assert {"capacity", "depth", "bytes", "dropped"} <= status["buffer"].keys()
            dev = status["devices"]["imu0"]
            assert dev["frames"] == 5 and dev["buffered"] == 5 and dev["state"] == "connected"
            buffers = await request(path, {"cmd": "buffers"})
            assert {"capacity", "depth", "bytes", "dropped", "devices"} <= buffers.keys()
            assert buffers["depth"] == 5
            assert {"depth", "dropped", "oldest_age"} == buffers["devices"]["imu0"].keys()
            assert (await request(path, {"cmd": "ping"}))["pong"] is True

    asyncio.run(main())


def test_flush_all_and_one_device_and_unknown_device(sockdir: str) -> None:
    async def main() -> None:
        a, b = FakePort([packets(range(3))]), FakePort([packets(range(4))])
        async with running(sockdir, {"a": [a], "b": [b]}) as (rt, sink, path):
            await rt.wait_until(lambda s: s["buffer"]["depth"] == 7, 5)
            got = await request(path, {"cmd": "flush", "device": "b"})
            memory = [{"name": "memory", "sent": 4, "done": True}]
            assert got == {"flushed": 4, "devices": {"b": 4}, "sinks": memory, "incomplete": False}
            got = await request(path, {"cmd": "flush", "timeout": 5})
            memory = [{"name": "memory", "sent": 3, "done": True}]
            assert got == {"flushed": 3, "devices": {"a": 3}, "sinks": memory, "incomplete": False}
            assert len(sink.frames) == 7
            with pytest.raises(ControlError) as err:
                await request(path, {"cmd": "flush", "device": "nope"})
            assert err.value.exit_code == 2 and "unknown device 'nope'" in str(err.value)

    asyncio.run(main())


BAD_LINES = [
    b"not json\n",
    b"[1, 2]\n",
    b'"status"\n',
    b"{}\n",
    b'{"cmd": 5}\n',
    b'{"cmd": "nope"}\n',
    b'{"cmd": "status", "verbose": true}\n',
    b'{"cmd": "flush", "timeout": "soon"}\n',
    b'{"cmd": "flush", "timeout": -1}\n',
    b'{"cmd": "flush", "timeout": true}\n',
    b'{"cmd": "flush", "device": 3}\n',
    b'{"cmd": "devices.add", "name": "x"}\n',
    b'{"cmd": "devices.add", "name": ["x"], "port": "p"}\n',
    b'{"cmd": "devices.remove"}\n',
    b"\xff\xfe\x00garbage\n",
    b"[" * 60000 + b"\n",
]


def test_bad_requests_get_one_line_error_replies_and_the_connection_survives(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (_, _, path):
            reader, writer = await raw(path)
            for line in BAD_LINES:
                reply = await exchange(reader, writer, line)
                assert reply["ok"] is False and reply["code"] == 2, (line[:40], reply)
                assert reply["error"] and "\n" not in reply["error"]
            # same connection, still served
            reply = await exchange(reader, writer, b'{"cmd": "ping"}\n')
            assert reply["ok"] is True
            writer.close()

    asyncio.run(main())


def test_handler_exception_becomes_an_error_reply(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (rt, _, path):

            async def broken() -> dict[str, Any]:
                raise RuntimeError("boom\nsecond line")

            rt.buffers = broken  # type: ignore[method-assign]
            with pytest.raises(ControlError) as err:
                await request(path, {"cmd": "buffers"})
            assert err.value.exit_code == 1 and "boom second line" in str(err.value)
            assert "uptime" in await request(path, {"cmd": "status"})

    asyncio.run(main())


def test_stop_replies_first_then_stops(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (rt, _, path):
            assert await request(path, {"cmd": "stop"}) == {"stopping": True}
            await asyncio.wait_for(rt.stopped.wait(), 5)
            assert rt.stop_reason == "control stop"

    asyncio.run(main())


def test_devices_add_remove_readd(sockdir: str) -> None:
    async def main() -> None:
        first, second = FakePort([packets(range(3))]), FakePort()
        async with running(sockdir) as (rt, sink, path):
            rt.opener = FakeOpener({"fake://d1": [first, second]})
            got = await request(
                path, {"cmd": "devices.add", "name": "d1", "port": "fake://d1", "codec": "fh1", "baudrate": 9600}
            )
            assert got["device"]["name"] == "d1" and got["device"]["baudrate"] == 9600
            await rt.wait_until(lambda s: s["devices"]["d1"]["frames"] == 3, 5)
            with pytest.raises(ControlError) as err:
                await request(path, {"cmd": "devices.add", "name": "d1", "port": "fake://d1", "codec": "fh1"})
            assert err.value.exit_code == 2 and "already exists" in str(err.value)
            assert await request(path, {"cmd": "devices.remove", "name": "d1"}) == {"removed": "d1"}
            status = await request(path, {"cmd": "status"})
            assert status["devices"]["d1"]["removed"] is True and status["devices"]["d1"]["buffered"] == 3
            with pytest.raises(ControlError) as err:
                await request(path, {"cmd": "devices.remove", "name": "d1"})
            assert err.value.exit_code == 2
            # re-adding the name works and keeps counting
            await request(path, {"cmd": "devices.add", "name": "d1", "port": "fake://d1", "codec": "fh1"})
            await rt.wait_until(lambda s: s["devices"]["d1"]["state"] == "connected", 5)
            second.feed(packets(range(3, 5)))
            await rt.wait_until(lambda s: s["devices"]["d1"]["frames"] == 5, 5)
        assert sorted(f.seq for f in sink.frames) == [0, 1, 2, 3, 4]
        assert rt.summary is not None and law_holds(rt.summary.status)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"codec": "bogus"}, "devices add: codec: unknown codec 'bogus' (known: fh1, lines, nmea, ubx)"),
        (
            {"codec": "fh1", "baudrate": "fast"},
            'devices add: baudrate: expected an integer from 50 to 4000000, got "fast"',
        ),
        ({"codec": "fh1", "baudrate": 0}, "devices add: baudrate: expected an integer from 50 to 4000000, got 0"),
        ({"codec": "fh1", "name": "bad name"}, "devices add: name: expected a device name"),
        ({}, "devices add: codec: required when no 'board' is given"),
        ({"board": "no-such-board"}, "devices add: board: unknown board 'no-such-board'"),
        ({"codec": "fh1", "speed": 1}, "devices.add: unknown argument 'speed'"),
    ],
)
def test_devices_add_validates_like_the_config_loader(sockdir: str, args: dict[str, Any], expected: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (rt, _, path):
            req = {"cmd": "devices.add", "name": "d9", "port": "fake://d9", **args}
            with pytest.raises(ControlError) as err:
                await request(path, req)
            assert err.value.exit_code == 2
            assert str(err.value).startswith(expected), str(err.value)
            assert "d9" not in rt.devices

    asyncio.run(main())


def test_devices_add_reads_a_board_file_off_the_loop(
    sockdir: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A board given as a file's path is read in a worker thread, not on the
    event loop (a slow disk or network mount would stall every reader)."""
    import threading

    from firmware_host.config import boards as boards_module

    readers: list[int] = []
    load = boards_module.load_board_file

    def recording_load(path: str) -> Any:
        readers.append(threading.get_ident())
        return load(path)

    monkeypatch.setattr(boards_module, "load_board_file", recording_load)
    board = tmp_path / "mine.toml"
    board.write_text((REPO / "boards" / "env-sensor.toml").read_text().replace('name = "env-sensor"', 'name = "mine"'))

    async def main() -> None:
        async with running(sockdir) as (rt, _, path):
            rt.opener = FakeOpener({"fake://d7": [FakePort()]})
            got = await request(path, {"cmd": "devices.add", "name": "d7", "port": "fake://d7", "board": str(board)})
            assert got["device"]["board"] == str(board)
            assert readers and threading.get_ident() not in readers

    asyncio.run(main())


# -- hostile clients --------------------------------------------------------------------------


def test_a_10mb_line_is_refused_without_buffering_it(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (_rt, _, path):
            reader, writer = await raw(path)

            async def flood() -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(b"x" * (10 * 1024 * 1024) + b"\n")
                    await writer.drain()

            sender = asyncio.create_task(flood())
            reply = json.loads(await reader.readline())
            assert reply == {"ok": False, "error": "request too long (max 65536 bytes)", "code": 2}
            assert await closed_by_server(reader)  # then the server closes the connection
            writer.transport.abort()
            await sender
            assert "uptime" in await request(path, {"cmd": "status"})

    asyncio.run(main())


def test_random_bytes_and_half_requests_do_not_disturb_the_runtime(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        port = FakePort()
        async with running(sockdir, {"d": [port]}) as (rt, sink, path):
            await rt.wait_until(lambda s: s["devices"]["d"]["state"] == "connected", 5)
            port.feed(packets(range(10)))
            # random bytes, then a disconnect
            reader, writer = await raw(path)
            writer.write(os.urandom(200_000))
            await writer.drain()
            writer.close()
            # half a request, then a disconnect: must not be acted on
            reader, writer = await raw(path)
            writer.write(b'{"cmd": "stop"')
            await writer.drain()
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            port.feed(packets(range(10, 20)))
            status = await rt.wait_until(lambda s: s["devices"]["d"]["frames"] == 20, 5)
            assert not rt.stopped.is_set() and status["devices"]["d"]["rejected"] == 0
        assert sorted(f.seq for f in sink.frames) == list(range(20))
        assert not [r for r in caplog.records if r.name == "firmware_host.control" and r.levelname == "ERROR"]

    asyncio.run(main())


def test_a_hundred_concurrent_clients(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir, {"d": [FakePort([packets(range(7))])]}) as (rt, _, path):
            await rt.wait_until(lambda s: s["devices"]["d"]["frames"] == 7, 5)

            async def client() -> dict[str, Any]:
                reader, writer = await raw(path)
                try:
                    return await exchange(reader, writer, b'{"cmd": "status"}\n')
                finally:
                    writer.close()

            replies = await asyncio.gather(*(client() for _ in range(100)))
            ok = [r for r in replies if r["ok"]]
            busy = [r for r in replies if not r["ok"]]
            assert len(ok) >= 64  # the first 64 are always admitted
            assert all(r["devices"]["d"]["frames"] == 7 for r in ok)
            assert all("too many control connections" in r["error"] and r["code"] == 1 for r in busy)
            status = await request(path, {"cmd": "status"})
            assert status["devices"]["d"]["frames"] == 7
            assert status["control"]["refused"] == len(busy) and status["control"]["socket"] == path

    asyncio.run(main())


def test_connection_cap(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (rt, _, _):
            path = os.path.join(sockdir, "other.sock")
            server = ControlServer(rt, path, max_connections=2)
            await server.start()
            try:
                held = [await raw(path) for _ in range(2)]
                for reader, writer in held:  # both admitted and served
                    assert (await exchange(reader, writer, b'{"cmd": "ping"}\n'))["ok"]
                reader, writer = await raw(path)
                reply = json.loads(await reader.readline())
                assert reply == {"ok": False, "error": "too many control connections (2); try again", "code": 1}
                assert await closed_by_server(reader)
                writer.close()
                held.pop()[1].close()
                # a freed slot is served again (the server notices the close asynchronously)
                while True:
                    reader, writer = await raw(path)
                    reply = await exchange(reader, writer, b'{"cmd": "ping"}\n')
                    writer.close()
                    if reply["ok"]:
                        break
                for _, writer in held:
                    writer.close()
            finally:
                await server.close()
            assert not os.path.exists(path)

    asyncio.run(main())


def test_idle_connections_are_closed(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (rt, _, _):
            path = os.path.join(sockdir, "other.sock")
            server = ControlServer(rt, path, idle_timeout=0.2)
            await server.start()
            try:
                reader, writer = await raw(path)
                assert (await exchange(reader, writer, b'{"cmd": "ping"}\n'))["ok"]
                assert await closed_by_server(reader)  # the server ends it; we never sleep
                writer.close()
            finally:
                await server.close()

    asyncio.run(main())


def test_close_is_bounded_by_a_stream_that_missed_its_cancel(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that swallows the cancel (as a wait_for finishing at the same moment can on
    Python 3.11) must not hold the close, and so the runtime's shutdown, for ever."""
    import firmware_host.control.server as server_module

    monkeypatch.setattr(server_module, "CLOSE_TIMEOUT", 0.2)

    async def main() -> None:
        release = asyncio.Event()

        async def stubborn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await release.wait()  # the cancel swallowed: it goes on until released

        async def handler(req: dict[str, Any]) -> dict[str, Any]:
            return {"_stream": Stream(stubborn)}

        async with running(sockdir) as (rt, _, _):
            path = os.path.join(sockdir, "other.sock")
            server = ControlServer(rt, path)
            server._handlers["stubborn"] = handler
            await server.start()
            reader, writer = await raw(path)
            assert (await exchange(reader, writer, b'{"cmd": "stubborn"}\n'))["ok"]
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(server.close(), 5)
            assert loop.time() - started < 2  # about CLOSE_TIMEOUT, not the stream's hour
            release.set()
            writer.close()

    asyncio.run(main())


# -- security and lifecycle ----------------------------------------------------------------------


def test_socket_is_0600_and_removed_on_close(sockdir: str) -> None:
    async def main() -> str:
        async with running(sockdir) as (_, _, path):
            st = os.lstat(path)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        return path

    path = asyncio.run(main())
    assert not os.path.lexists(path)


def test_missing_directory_is_created_0700(sockdir: str) -> None:
    async def main() -> None:
        rt = Runtime(config_from_dict({}), sinks=[MemorySink()])
        await rt.start()
        path = os.path.join(sockdir, "sub", "ctl.sock")
        server = ControlServer(rt, path)
        await server.start()
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        await server.close()
        await rt.shutdown()

    asyncio.run(main())


async def start_fails(sockdir: str, path: str) -> str:
    rt = Runtime(config_from_dict({}), sinks=[MemorySink()], control_path=path)
    with pytest.raises(RuntimeFailure) as err:
        await rt.start()
    return str(err.value)


def test_symlink_or_regular_file_at_the_socket_path_is_refused(sockdir: str) -> None:
    path = os.path.join(sockdir, "ctl.sock")
    target = os.path.join(sockdir, "target")
    os.symlink(target, path)
    msg = asyncio.run(start_fails(sockdir, path))
    assert msg == f"refusing the control socket {path}: it is a symlink"
    assert os.path.islink(path) and not os.path.exists(target)
    os.unlink(path)
    with open(path, "w") as f:
        f.write("precious")
    msg = asyncio.run(start_fails(sockdir, path))
    assert "not a socket" in msg
    with open(path) as f:
        assert f.read() == "precious"


def test_group_writable_directory_is_refused_unless_sticky(sockdir: str) -> None:
    shared = os.path.join(sockdir, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    path = os.path.join(shared, "ctl.sock")
    assert "writable by other users" in asyncio.run(start_fails(sockdir, path))
    os.chmod(shared, 0o1777)  # like /tmp: others cannot remove or rename our socket

    async def main() -> None:
        async with running(shared):
            pass

    asyncio.run(main())


def test_stale_socket_is_replaced_and_live_socket_refused(sockdir: str) -> None:
    path = os.path.join(sockdir, "ctl.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on: what a killed runtime leaves

    async def main() -> None:
        async with running(sockdir) as (_, _, p):
            assert p == path
            assert (await request(path, {"cmd": "ping"}))["pong"]
            msg = await start_fails(sockdir, path)
            assert msg == f"another runtime is already listening on {path}"
            assert (await request(path, {"cmd": "ping"}))["pong"]  # the first one is untouched

    asyncio.run(main())


def test_close_leaves_a_socket_that_is_no_longer_ours(sockdir: str) -> None:
    async def main() -> None:
        async with running(sockdir) as (_, _, path):
            os.unlink(path)
            other = socket.socket(socket.AF_UNIX)
            other.bind(path)
            other.close()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)

    asyncio.run(main())


def test_client_reports_no_runtime(sockdir: str) -> None:
    path = os.path.join(sockdir, "ctl.sock")
    for setup in ("missing", "stale", "file"):
        if setup == "stale":
            s = socket.socket(socket.AF_UNIX)
            s.bind(path)
            s.close()
        elif setup == "file":
            os.unlink(path)
            open(path, "w").close()
        with pytest.raises(NoRuntime) as err:
            request_sync(path, {"cmd": "status"}, timeout=5)
        assert err.value.exit_code == 3 and path in str(err.value)
