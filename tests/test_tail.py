"""``tail`` over a real control socket, against emulated boards on ptys: the
jsonl record of every frame as it arrives, only the devices asked for, the
request validated like every other, the end when the runtime stops, nothing
left behind when the client leaves, and a client that stops reading ends
its stream without slowing anything (docs/control.md, ``tail``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from firmware_host.control.client import open_stream
from firmware_host.control.protocol import MAX_TAIL_DEVICES, MAX_TAIL_LIMIT
from firmware_host.control.server import ControlServer
from firmware_host.errors import ControlError
from firmware_host.tap import FrameTap
from firmware_host.testing.harness import RuntimeUnderTest
from tests.conftest import read_jsonl

pytestmark = pytest.mark.timeout(30)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}


@pytest.fixture
def sockdir() -> Iterator[str]:
    # short: the Unix socket path limit is 107 bytes
    d = tempfile.mkdtemp(prefix="fht")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class TailClient:
    """One control connection, read line by line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        self.writer.write(json.dumps(req).encode() + b"\n")
        await self.writer.drain()
        return await self.line()

    async def line(self, timeout: float = 10) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        assert raw.endswith(b"\n"), raw
        out: dict[str, Any] = json.loads(raw)
        return out

    async def records(self, n: int) -> list[dict[str, Any]]:
        return [await self.line() for _ in range(n)]

    async def eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""


@contextlib.asynccontextmanager
async def client(path: str) -> AsyncIterator[TailClient]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        yield TailClient(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def until_unsubscribed(rt: RuntimeUnderTest) -> None:
    """Await the server closing the tail's subscription (the board is silent,
    so ``wait`` returns only on the close)."""
    subs = list(rt.aggregator.tap.subscribers)
    for sub in subs:
        while not sub.closed:
            assert await sub.wait(10)
            sub.take()
    assert rt.aggregator.tap.subscribers == []


async def test_tail_sends_the_jsonl_record_of_each_frame_as_it_arrives(fh_board, fh_runtime, fh_jsonl, sockdir):
    board = fh_board("fh1")
    other = fh_board("fh1")
    path = os.path.join(sockdir, "ctl.sock")
    cfg = {
        "devices": [board.config("b", **FAST), other.config("o", **FAST)],
        "buffer": {"flush_interval": 0.02},
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(cfg, control_path=path) as rt:
        await rt.wait_state("b", "connected")
        await rt.wait_state("o", "connected")
        async with client(path) as c:
            assert await c.ask({"cmd": "tail", "devices": ["b"]}) == {
                "ok": True,
                "tail": {"devices": ["b"], "limit": 10_000},
            }
            await other.send_frames(5)  # not watched
            await board.send_frames(30, type=3, payload=lambda seq: bytes([seq]) * 3)
            got = await c.records(30)
            await rt.wait_flushed("b", 30)
            await rt.wait_flushed("o", 5)
        await until_unsubscribed(rt)
    # exactly the sink's records, in order: the same shape, the same frames
    in_sink = [r for r in read_jsonl(fh_jsonl) if r["device"] == "b"]
    assert got == in_sink
    assert [r["seq"] for r in got] == list(range(30))
    assert got[7]["type"] == 3 and base64.b64decode(got[7]["payload"]) == b"\x07\x07\x07"


async def test_tail_of_every_device_carries_text_and_decoded_fields(fh_board, fh_runtime, sockdir):
    gps = fh_board("nmea")
    env = fh_board("env-sensor")
    path = os.path.join(sockdir, "ctl.sock")
    cfg = {"devices": [gps.config("gps", **FAST), env.config("env", **FAST)], "buffer": {"flush_interval": 0.02}}
    async with fh_runtime(cfg, control_path=path) as rt:
        await rt.wait_state("gps", "connected")
        await rt.wait_state("env", "connected")
        async with client(path) as c:
            assert (await c.ask({"cmd": "tail", "limit": 50}))["tail"] == {"devices": None, "limit": 50}
            await gps.send_lines(["GPTXT,01,01,02,hello"])
            (text,) = await c.records(1)
            await env.send_frames(1)
            (env_rec,) = await c.records(1)
    assert text["device"] == "gps" and text["type"] is None and text["text"].startswith("$GPTXT,01,01,02,hello*")
    assert env_rec["device"] == "env" and set(env_rec["fields"]) == {"temperature", "humidity", "pressure"}


@pytest.mark.parametrize(
    ("req", "error"),
    [
        ({"devices": ["nope"]}, "unknown device 'nope' (known: b)"),
        ({"devices": ["b", "nope"]}, "unknown device 'nope'"),
        ({"devices": []}, "tail: 'devices' must be a non-empty list of device names"),
        ({"devices": "b"}, "tail: 'devices' must be a non-empty list of device names"),
        ({"devices": ["b", 3]}, "tail: 'devices' must hold device names"),
        ({"devices": [""]}, "tail: 'devices' must hold device names"),
        ({"devices": ["x" * 257]}, "tail: 'devices' must hold device names"),
        ({"devices": ["b"] * (MAX_TAIL_DEVICES + 1)}, f"names more than {MAX_TAIL_DEVICES} devices"),
        ({"limit": 0}, f"tail: 'limit' must be a whole number from 1 to {MAX_TAIL_LIMIT}"),
        ({"limit": MAX_TAIL_LIMIT + 1}, "'limit' must be a whole number"),
        ({"limit": True}, "'limit' must be a whole number"),
        ({"limit": 2.5}, "'limit' must be a whole number"),
        ({"limit": "10"}, "'limit' must be a whole number"),
        ({"devcies": ["b"]}, "tail: unknown argument 'devcies' (it takes: devices, limit)"),
    ],
)
async def test_tail_requests_are_validated_and_the_connection_stays_usable(fh_board, fh_runtime, sockdir, req, error):
    board = fh_board("fh1")
    path = os.path.join(sockdir, "ctl.sock")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=path) as rt:
        async with client(path) as c:
            reply = await c.ask({"cmd": "tail", **req})
            assert reply["ok"] is False and reply["code"] == 2
            assert error in reply["error"]
            assert rt.aggregator.tap.subscribers == []  # nothing subscribed for a refused request
            assert (await c.ask({"cmd": "ping"}))["pong"] is True


async def test_tail_ends_with_a_line_when_the_runtime_stops(fh_board, fh_runtime, sockdir):
    board = fh_board("fh1")
    path = os.path.join(sockdir, "ctl.sock")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=path) as rt:
        await rt.wait_state("b", "connected")
        async with client(path) as c:
            await c.ask({"cmd": "tail"})
            await board.send_frames(3)
            await rt.wait_frames("b", 3)
            await rt.shutdown()
            lines = [await c.line() for _ in range(4)]
            assert await c.eof()
    # what was held when the server closed still goes out, then the end
    assert [r.get("seq") for r in lines[:3]] == [0, 1, 2]
    assert lines[3] == {"end": "stopped"}


async def test_a_tail_asked_after_the_runtime_stopped_ends_at_once():
    """tap.py: a subscription made once the tap closed is closed too (it
    would otherwise wait for frames that can never come)."""
    tap = FrameTap()
    tap.close_all()
    sub = tap.subscribe()
    assert sub.closed and tap.subscribers == []
    assert await sub.wait(0.01)


async def test_a_client_that_leaves_takes_its_subscription_with_it(fh_board, fh_runtime, sockdir):
    board = fh_board("fh1")
    path = os.path.join(sockdir, "ctl.sock")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=path) as rt:
        await rt.wait_state("b", "connected")
        async with client(path) as c:
            await c.ask({"cmd": "tail", "devices": ["b"]})
            await board.send_frames(2)
            await c.records(2)
            (sub,) = rt.aggregator.tap.subscribers
            assert (await rt.status())["control"]["tails"] == 1
        # the board is silent: the server is waiting for frames when the client goes
        while not sub.closed:
            assert await sub.wait(10)
            sub.take()
        assert rt.aggregator.tap.subscribers == []
        status = await rt.status()
        assert status["control"]["connections"] == 0 and status["control"]["tails"] == 0


async def test_a_client_that_stops_reading_is_let_go_after_the_idle_timeout(fh_board, fh_runtime, fh_jsonl, sockdir):
    """A write the client does not take within the idle timeout ends the
    stream; meanwhile the subscription sheds (counted) and the pipeline goes on."""
    board = fh_board("fh1", max_payload=1024)
    path = os.path.join(sockdir, "ctl.sock")
    cfg = {
        "devices": [board.config("b", **FAST)],
        "buffer": {"flush_interval": 0.02},
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(cfg) as rt:
        server = ControlServer(rt.runtime, path, idle_timeout=0.5)
        await server.start()
        try:
            await rt.wait_state("b", "connected")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, path)
            await loop.sock_sendall(sock, b'{"cmd": "tail", "limit": 100}\n')
            got = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
            assert got.startswith(b'{"ok":true,"tail":')
            (sub,) = rt.aggregator.tap.subscribers  # made before the reply
            # ~2 MB of records: far more than the socket buffers hold
            for _ in range(10):
                await board.send_frames(200, payload=b"z" * 700)
            await rt.wait_flushed("b", 2000)  # never held up by the client
            while not sub.closed:  # the server gives up on the write
                assert await sub.wait(10)
                sub.take()
            assert sub.lost > 0
            assert rt.aggregator.tap.subscribers == []
            sock.close()
        finally:
            await server.close()
    assert len(read_jsonl(fh_jsonl)) == 2000


async def test_a_tail_whose_reply_was_not_sent_leaves_no_subscription(fh_board, fh_runtime, sockdir):
    """The handler subscribes before its reply (so the stream has every frame
    after it); when the reply cannot be sent the stream never starts, and the
    server abandons it, which closes the subscription all the same."""
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        server = ControlServer(rt.runtime, os.path.join(sockdir, "ctl.sock"))
        tap = rt.aggregator.tap
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        # the reply failed: the server abandons the stream, never runs it
        reply, after, stream = await server.handle_line(b'{"cmd": "tail"}\n')
        assert reply["ok"] and len(tap.subscribers) == 1 and after is None and stream is not None
        assert server.stats()["tails"] == 1
        await server._hand_over(stream, False, reader, writer)
        assert tap.subscribers == [] and server.stats()["tails"] == 0
        # the reply went out: the stream runs and keeps it until it ends
        _, _, stream = await server.handle_line(b'{"cmd": "tail"}\n')
        assert stream is not None
        task = asyncio.ensure_future(server._hand_over(stream, True, reader, writer))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(tap.subscribers) == 1 and not task.done() and server._streams == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert tap.subscribers == [] and server.stats()["tails"] == 0
        writer.close()
        theirs.close()


def test_the_client_reads_the_reply_then_lines_and_says_when_none_came(sockdir):
    """``open_stream`` against a scripted server: the reply, lines split however
    the socket cut them, None while idle, the end at EOF; an error reply raises."""
    path = os.path.join(sockdir, "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(2)
    idle_seen = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b'{"ok": true, "tail": {"devices": null, "limit": 5}}\n{"a"')
            idle_seen.wait(10)
            conn.sendall(b': 1}\n{"b": 2}\n{"c": 3}\n{"half"')
        conn, _ = srv.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b'{"ok": false, "error": "unknown device \'x\'", "code": 2}\n')

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with open_stream(path, {"cmd": "tail"}, timeout=5) as stream:
            assert stream.reply == {"tail": {"devices": None, "limit": 5}}
            lines = stream.lines(0.05)
            assert next(lines) is None  # half a line so far: nothing whole
            idle_seen.set()
            got = [x for x in lines if x is not None]
        assert got == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']  # the half line at the close is no line
        with pytest.raises(ControlError) as info:
            open_stream(path, {"cmd": "tail", "devices": ["x"]}, timeout=5)
        assert info.value.exit_code == 2 and "unknown device" in str(info.value)
    finally:
        t.join(5)
        srv.close()


async def test_a_half_close_ends_a_tail_that_always_has_frames() -> None:
    """The client's end is noticed between writes too, not only when a take
    comes back empty (a busy fleet never leaves one empty)."""
    from firmware_host.control.server import tail_stream
    from firmware_host.frames import Frame

    tap = FrameTap()
    sub = tap.subscribe(None, 10_000)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    stream = asyncio.ensure_future(tail_stream(sub, reader, writer, 30.0, asyncio.Event()))
    loop = asyncio.get_running_loop()

    async def feed() -> None:
        seq = 0
        while True:  # a frame every loop turn
            tap.publish("d", [Frame("d", seq, 1, 0.0, b"x")])
            seq += 1
            await asyncio.sleep(0)

    async def drain() -> None:  # the client still reads what it was sent
        while await loop.sock_recv(theirs, 65536):
            pass

    feeding, draining = asyncio.ensure_future(feed()), asyncio.ensure_future(drain())
    try:
        theirs.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(stream, 5)
    finally:
        for task in (feeding, draining, stream):
            task.cancel()
        writer.close()
        theirs.close()


async def test_open_streams_leave_room_for_stop_and_status(fh_board: Any, fh_runtime: Any) -> None:
    """A screen of tails (or recordings) fills the stream cap, never the connection cap:
    stop and status still get in."""
    from firmware_host.control.client import request
    from firmware_host.control.protocol import MAX_CONNECTIONS, MAX_STREAMS

    assert MAX_STREAMS < MAX_CONNECTIONS
    board = fh_board("fh1")
    with tempfile.TemporaryDirectory(prefix="fh-") as short:  # a socket path within 107 bytes
        sock = os.path.join(short, "ctl.sock")
        async with fh_runtime({"devices": [board.config("b")]}, control_path=sock) as rt:
            await rt.wait_state("b", "connected")
            rt._control.max_streams = 3
            held = []
            for _ in range(3):
                r, w = await asyncio.open_unix_connection(sock)
                w.write(b'{"cmd": "tail"}\n')
                assert json.loads(await r.readline())["ok"]
                held.append(w)
            await rt.wait_until(lambda s: s["control"]["tails"] == 3, 5)
            with pytest.raises(ControlError, match="too many streams open") as info:
                await request(sock, {"cmd": "tail"}, timeout=5)
            assert info.value.exit_code == 1
            assert "uptime" in await request(sock, {"cmd": "status"}, timeout=5)
            for w in held:
                w.close()


@pytest.mark.parametrize("cmd", ["tail", "record"])
async def test_a_stream_whose_reply_is_cut_by_the_close_is_released(fh_board, fh_runtime, sockdir, monkeypatch, cmd):
    """The server closes (its connections cancelled) while a stream's reply is
    still going out to a client slow to read: neither run nor the failed-send
    path is reached, so the subscription (or the recording) is released there."""
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        path = os.path.join(sockdir, "ctl.sock")
        server = ControlServer(rt.runtime, path)
        await server.start()
        real_send = server._send
        draining = asyncio.Event()

        async def slow_send(writer, reply):  # the reply's drain in progress
            if "tail" in reply or "recording" in reply:
                draining.set()
                await asyncio.Event().wait()
            return await real_send(writer, reply)

        monkeypatch.setattr(server, "_send", slow_send)
        _reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"cmd": "tail"}\n' if cmd == "tail" else b'{"cmd": "record", "device": "b"}\n')
        await writer.drain()
        await asyncio.wait_for(draining.wait(), 5)
        await asyncio.wait_for(server.close(), 5)  # cancels the connection inside its send
        writer.close()
        if cmd == "tail":
            assert rt.aggregator.tap.subscribers == [] and server.stats()["tails"] == 0
        else:
            assert all(sub.closed for sub in rt.runtime.devices["b"].raw.subscribers)
