"""Fuzzing the control socket against a real, running runtime.

Every test function gets one runtime (a fake device streaming frames into a
small buffer, a periodic flusher, a memory sink, the real ``ControlServer``)
running on an event loop in a background thread for the whole test; the
hypothesis examples are plain synchronous code that talks to it over the
socket. So the runtime lives across examples, as a real one lives across
clients, and hypothesis never has to share an event loop with it.

What must hold for every example (docs/control.md, "Protocol" and "Limits"):

* every complete request line gets exactly one reply line, in order, that is
  a JSON object with a boolean ``"ok"`` (errors: one-line ``"error"``, ``"code"``
  1 or 2); a line longer than ``MAX_REQUEST`` gets ``request too long`` and the
  connection is closed; bytes after the last newline are never acted on;
* the server keeps serving: a fresh ``status`` request succeeds after each example;
* nothing a client sends is a handler bug (no ERROR log from the control server);
* the runtime's accounting law holds after each example and at shutdown.

``stop`` is left out of the generated commands: acting on it is correct and
would end the runtime under test (it is tested in tests/test_control.py, and
half a ``stop`` request, which must *not* be acted on, is generated here).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host import FakeOpener, FakePort, Frame, Runtime, Sink, config_from_dict, encode_packet
from firmware_host.control.client import request_sync
from firmware_host.control.protocol import MAX_REQUEST
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")

FUZZ_SETTINGS = settings(
    # FH_FUZZ_EXAMPLES=2000 for a long local run; CI keeps it to a few seconds
    max_examples=int(os.environ.get("FH_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# -- the runtime under fuzz ------------------------------------------------------------------


class CountingSink(Sink):
    """Keeps only a count and the keys it saw (for the duplicate check)."""

    name = "counting"

    def __init__(self) -> None:
        self.keys: list[tuple[str, int, float]] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.keys.extend((f.device, f.seq, f.ts) for f in frames)


class Served:
    """A runtime on an event loop in a background thread, with its control socket."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fhz")  # short: Unix socket paths are limited
        self.path = os.path.join(self.dir, "ctl.sock")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-runtime-loop", daemon=True)
        self.thread.start()
        self.sink = CountingSink()
        self.rt: Runtime | None = None
        self.fed = 0
        self._feeding = True
        self._feeder: asyncio.Task[None] | None = None
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        port = FakePort()
        cfg = config_from_dict(
            {
                # small: drop-oldest and the periodic flusher both move the accounts while we fuzz
                "buffer": {"capacity": 64, "batch_size": 16, "flush_interval": 0.05},
                "devices": [{"name": "dev0", "port": "fake://dev0", "codec": "fh1"}],
            }
        )
        self.rt = Runtime(cfg, opener=FakeOpener({"fake://dev0": [port]}), sinks=[self.sink], control_path=self.path)
        await self.rt.start()
        self._feeder = asyncio.create_task(self._feed(port))

    async def _feed(self, port: FakePort) -> None:
        # a device streaming 3 frames every 5 ms, bounded so a removed device
        # (devices.remove can be generated) does not queue without end
        while self._feeding and self.fed < 60_000:
            port.feed(b"".join(encode_packet(0, s, b"fuzz") for s in range(self.fed, self.fed + 3)))
            self.fed += 3
            await asyncio.sleep(0.005)

    def status(self) -> dict[str, Any]:
        """A valid request on a fresh connection, from this thread (a blocking client)."""
        return request_sync(self.path, {"cmd": "status"}, timeout=10)

    def finish(self) -> dict[str, Any]:
        """Stop feeding, shut down in order; returns the final status (law checked)."""

        async def stop() -> dict[str, Any]:
            self._feeding = False
            if self._feeder is not None:
                await self._feeder
            assert self.rt is not None
            summary = await self.rt.shutdown()
            return summary.status

        status = self.run(stop())
        assert_accounting(status)
        assert sum(d["lost"] for d in status["devices"].values()) == 0
        # one sink that never fails: nothing is delivered twice
        assert len(set(self.sink.keys)) == len(self.sink.keys)
        return status

    def close(self) -> None:
        try:
            if self.rt is not None and self.rt.summary is None:
                self.finish()  # the law, nothing lost, no duplicates: also after hypothesis tests
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    try:
        yield s
    finally:
        s.close()


def control_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records of the control server: a handler bug or a crashed connection."""
    return [r.getMessage() for r in caplog.records if r.name == "firmware_host.control" and r.levelno >= logging.ERROR]


# -- one conversation -------------------------------------------------------------------------


async def converse(path: str, chunks: list[bytes], end: str) -> list[bytes] | None:
    """Write ``chunks`` (one write each) while reading replies.

    ``end="eof"``: half-close after the last chunk and read until the server
    closes; returns the reply lines. ``end="abort"``: drop the connection right
    after writing, without reading anything (returns None).
    """
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)

    async def send() -> None:
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
            if end == "abort":
                writer.transport.abort()
            else:
                writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server closed a refused connection while we were still writing

    sender = asyncio.create_task(send())
    if end == "abort":
        await sender
        return None
    replies: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while line := await reader.readline():
                replies.append(line)
    finally:
        await sender
        writer.close()
    return replies


def expected_replies(data: bytes) -> tuple[int, bool]:
    """(reply count, refused): one per complete line, up to the first line longer
    than MAX_REQUEST (bytes before its newline), which gets the one refusal."""
    *complete, tail = data.split(b"\n")
    for i, line in enumerate(complete):
        if len(line) > MAX_REQUEST:
            return i + 1, True
    if len(tail) > MAX_REQUEST:
        return len(complete) + 1, True
    return len(complete), False


def check_reply(raw: bytes) -> dict[str, Any]:
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw[:200]
    reply = json.loads(raw)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), raw[:200]
    if not reply["ok"]:
        assert set(reply) == {"ok", "error", "code"}, reply
        assert isinstance(reply["error"], str) and reply["error"] and "\n" not in reply["error"]
        assert reply["code"] in (1, 2), reply
    return reply


# -- strategies -------------------------------------------------------------------------------

EDGE_NUMBERS = [
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63),
    10**30,
    10**400,
    1e308,
    -0.0,
    1e-300,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(EDGE_NUMBERS)
    | st.text(max_size=20)
    | st.sampled_from(
        ["", "\x00", "dev0", "fh1", "nmea", "lines", "x" * 300, "nucleo-imu", "fake://dev0", "\ud800", "../../etc"]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

# every command but "stop" (see the module docstring), plus near misses
COMMANDS = ["ping", "status", "buffers", "flush", "devices.add", "devices.remove"]
ARG_KEYS = ["device", "timeout", "name", "port", "codec", "board", "baudrate"]


def dumps(value: object, ascii_only: bool) -> bytes:
    # surrogatepass: a lone surrogate becomes invalid UTF-8 on the wire, as a buggy client would send
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# mostly real commands, so the argument checks (not just the dispatch) get fuzzed
commands = st.integers(0, 9).flatmap(
    lambda k: (
        st.sampled_from(COMMANDS)
        if k < 7
        else st.sampled_from(["Status", "stop ", "devices", "devices.", "", "ping\n"])
        if k < 8
        else json_values
    )
)
# plausible values too, so some requests get past the type checks and act
arg_values = json_values | st.sampled_from(["dev0", "gps9", "fake://gps9", "fh1", "nmea", "nucleo-imu", 9600, 0.5])
requests_ = st.builds(
    lambda cmd, args, ascii_only: dumps({**args, "cmd": cmd}, ascii_only),
    cmd=commands,
    args=st.dictionaries(st.sampled_from(ARG_KEYS) | st.text(max_size=10), arg_values, max_size=4),
    ascii_only=st.booleans(),
)

VALID = [
    b'{"cmd": "ping"}',
    b'{"cmd":"status"}',
    b'{"cmd": "buffers"}',
    b'{"cmd": "flush", "timeout": 5}',
    b'{"cmd": "flush", "device": "dev0"}',
    b'  {"cmd": "ping"}\r',
    b'{"cmd": "ping"}\t ',
]
valid_requests = st.sampled_from(VALID)


def _padded_ping(n: int) -> bytes:
    head = b'{"cmd": "ping", "pad": "'
    return head + b"p" * (n - len(head) - 2) + b'"}'


line_kinds = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    json_values.map(lambda v: dumps(v, True)),
    requests_,
    valid_requests,
    st.just(b""),
    # just under and just over the bound, and far over it
    st.integers(MAX_REQUEST - 300, MAX_REQUEST).map(_padded_ping),
    st.integers(MAX_REQUEST + 1, MAX_REQUEST + 300).map(_padded_ping),
    st.integers(MAX_REQUEST + 1, 4 * MAX_REQUEST).map(lambda n: b"x" * n),
)

# half a request at the end, then the disconnect: never acted on
tails = st.one_of(
    st.just(b""),
    st.binary(max_size=100).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b'{"cmd": "stop"}', b'{"cmd": "devices.remove", "name": "dev0"}', b'{"cmd": "flush"}']).flatmap(
        lambda req: st.integers(1, len(req)).map(lambda k: req[:k])
    ),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


# -- the properties --------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(
    lines=st.lists(line_kinds, min_size=1, max_size=25),
    tail=tails,
    cuts=st.lists(st.integers(0, 5 * MAX_REQUEST), max_size=8),
)
def test_every_complete_line_gets_exactly_one_json_reply(
    served: Served, caplog: pytest.LogCaptureFixture, lines: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    data = b"\n".join(lines) + b"\n" + tail
    count, refused = expected_replies(data)
    before = served.status()["control"]
    raws = served.run(converse(served.path, split(data, cuts), "eof"))
    assert raws is not None
    assert len(raws) == count, (len(raws), count, [r[:80] for r in raws[-3:]])
    replies = [check_reply(r) for r in raws]
    for line, reply in zip(lines, replies):
        if line in VALID:
            assert reply["ok"] is True, (line, reply)
        elif len(line) <= MAX_REQUEST and not (line.strip().startswith(b"{") and b'"cmd"' in line):
            assert reply["ok"] is False and reply["code"] == 2, (line[:80], reply)
    if refused:
        assert replies[-1] == {"ok": False, "error": f"request too long (max {MAX_REQUEST} bytes)", "code": 2}
    after = served.status()
    # the server acted on exactly the complete lines it answered (a refusal is not a request),
    # plus our status request
    assert after["control"]["requests"] - before["requests"] == count - refused + 1
    assert served.rt is not None and not served.rt.stopped.is_set()
    assert_accounting(after)
    assert not control_errors(caplog)


@FUZZ_SETTINGS
@given(lines=st.lists(line_kinds, max_size=10), tail=tails, cuts=st.lists(st.integers(0, 3 * MAX_REQUEST), max_size=5))
def test_clients_that_vanish_mid_conversation(
    served: Served, caplog: pytest.LogCaptureFixture, lines: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    data = b"\n".join(lines) + (b"\n" if lines else b"") + tail
    served.run(converse(served.path, split(data, cuts), "abort"))
    status = served.status()  # still serving, whatever the last client did
    assert served.rt is not None and not served.rt.stopped.is_set()
    assert_accounting(status)
    assert not control_errors(caplog)


def test_many_requests_in_one_write_are_answered_in_order(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    kinds = [b'{"cmd": "ping"}', b'{"cmd": "buffers"}', b"nope", b'{"cmd": "flush"}', b'{"cmd": "status"}']
    lines = [kinds[i % len(kinds)] for i in range(3000)]
    raws = served.run(converse(served.path, [b"\n".join(lines) + b"\n"], "eof"))
    assert raws is not None and len(raws) == len(lines)
    for line, raw in zip(lines, raws):
        reply = check_reply(raw)
        if line == b'{"cmd": "ping"}':
            assert reply["pong"] is True
        elif line == b"nope":
            assert reply["ok"] is False and reply["code"] == 2
        elif line == b'{"cmd": "buffers"}':
            assert reply["ok"] and "capacity" in reply
        elif line == b'{"cmd": "flush"}':
            assert reply["ok"] and reply["incomplete"] is False
        else:
            assert reply["ok"] and "devices" in reply
    final = served.finish()
    assert final["devices"]["dev0"]["frames"] > 0
    assert not control_errors(caplog)


def test_fuzzed_runtime_drains_in_order(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """After a burst of garbage on many connections at once, the runtime still
    drains in order: accounting exact, nothing lost, nothing delivered twice."""
    junk = [
        os.urandom(5000),
        b"[" * 70000 + b"\n",
        b'{"cmd": "flush", "timeout": 1e400}\n' * 50,
        b'{"cmd": "devices.add", "name": "x", "port": "fake://none", "codec": "fh1", "baudrate": 1e9}\n',
        b'{"cmd": "buffers"}\n' * 200,
        b"\xff\xfe\n" * 100,
    ]

    async def storm() -> None:
        await asyncio.gather(
            *(converse(served.path, [junk[i % len(junk)]], "eof" if i % 2 else "abort") for i in range(40))
        )

    served.run(storm())
    assert "uptime" in served.status()
    final = served.finish()
    assert (
        final["devices"]["dev0"]["frames"] == final["devices"]["dev0"]["flushed"] + final["devices"]["dev0"]["dropped"]
    )
    assert not control_errors(caplog)


def test_flush_timeout_beyond_the_float_range_is_capped(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """An integer timeout beyond the float range is finite: it is capped like
    any long timeout, not an overflow inside the handler."""
    line = b'{"cmd": "flush", "timeout": 1' + b"0" * 400 + b"}\n"
    raws = served.run(converse(served.path, [line], "eof"))
    assert raws is not None and len(raws) == 1
    reply = check_reply(raws[0])
    assert reply["ok"] is True and reply["flushed"] >= 0, reply
    assert not control_errors(caplog)
