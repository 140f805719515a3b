"""Issue 22: the mqtt sink at fleet rate, against a real Mosquitto on a loopback port.

``payload = "jsonl-batch"`` carries exactly the jsonl sink's records (whole
lines, one device per message, split under ``max_message_bytes``); a broker
restart mid-stream at a high rate loses nothing (per-sink counters: every
frame delivered, none missed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from pathlib import Path

import pytest

from firmware_host import FakeOpener, FakePort, encode_packet
from firmware_host.sinks.jsonl import JsonlSink
from firmware_host.testing import assert_accounting
from tools.mosquitto import MOSQUITTO, Broker

aiomqtt = pytest.importorskip("aiomqtt", reason="the [mqtt] extra is not installed")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

from firmware_host_plugins.mqtt import MqttSink, split_lines  # noqa: E402
from tests.test_mqtt import broker_and_subscriber as shared_broker_and_subscriber  # noqa: E402


class LineSubscriber:
    """Every message under firmware-host/# as (topic, body); a persistent
    session (clean_session false, one client object across reconnects), so a
    broker restart loses none of what was published to it."""

    def __init__(self, port: int, ident: str) -> None:
        self.port = port
        self.ident = ident
        self.messages: list[tuple[str, bytes]] = []
        self.keys: set[tuple[str, int]] = set()
        self.changed = asyncio.Event()
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        client = aiomqtt.Client(
            "127.0.0.1", self.port, identifier=self.ident, clean_session=False, protocol=aiomqtt.ProtocolVersion.V311
        )
        while True:
            try:
                async with client:
                    await client.subscribe("firmware-host/#", qos=1)
                    self.subscribed.set()
                    async for msg in client.messages:
                        assert isinstance(msg.payload, bytes)
                        self.messages.append((str(msg.topic), msg.payload))
                        for line in msg.payload.split(b"\n"):
                            if line:
                                record = json.loads(line)
                                self.keys.add((record["device"], record["seq"]))
                        self.changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # the broker is restarting: try again

    def records(self) -> list[bytes]:
        """Every record line received (with its newline), in arrival order."""
        return [line + b"\n" for _, body in self.messages for line in body.split(b"\n") if line]

    async def wait_records(self, count: int, timeout: float = 30) -> None:
        """Until ``count`` distinct (device, seq) arrived (a repeat counts once)."""
        async with asyncio.timeout(timeout):
            while len(self.keys) < count:
                self.changed.clear()
                await self.changed.wait()


def broker_and_subscriber(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[tuple[Broker, LineSubscriber]]:
    return shared_broker_and_subscriber(tmp_path, lambda port: LineSubscriber(port, f"fh-rate-{tmp_path.name}"))


def packets(seqs: range, size: int = 16) -> bytes:
    return b"".join(encode_packet(s % 7, s, s.to_bytes(4, "little") * (size // 4)) for s in seqs)


def sink_status(status: dict, name: str) -> dict:
    return next(s for s in status["sinks"] if s["name"] == name)


async def test_jsonl_batch_end_to_end_matches_the_jsonl_sink(fh_runtime, tmp_path):
    names = [f"dev{i}" for i in range(4)]
    per_device = 3000
    total = per_device * len(names)
    cap = 4096
    async with broker_and_subscriber(tmp_path) as (broker, sub):
        mqtt = MqttSink(port=broker.port, gateway="gw1", payload="jsonl-batch", max_message_bytes=cap)
        jsonl = JsonlSink(path=str(tmp_path / "frames.jsonl"))
        data = packets(range(per_device))
        opener = FakeOpener(
            {f"fake://{n}": [FakePort([data[i : i + 2048] for i in range(0, len(data), 2048)])] for n in names}
        )
        config = {
            "buffer": {"flush_interval": 0.05, "batch_size": 500, "capacity": total},
            "devices": [{"name": n, "port": f"fake://{n}", "codec": "fh1"} for n in names],
        }
        async with fh_runtime(config, opener=opener, sinks=[jsonl, mqtt]) as rt:
            status = await rt.wait_until(
                lambda s: all(x["delivered"] == total for x in s["sinks"]) and len(s["sinks"]) == 2, 30
            )
            assert_accounting(status)
            m = sink_status(status, "mqtt")
            assert m["missed"] == 0 and m["pending"] == 0 and m["failures"] == 0
        await sub.wait_records(total)
    written = (tmp_path / "frames.jsonl").read_bytes().splitlines(keepends=True)
    received = sub.records()
    assert len(written) == total
    # exactly the jsonl sink's records, byte for byte, none missing, none twice
    assert collections.Counter(received) == collections.Counter(written)
    # per device, in the order the jsonl sink wrote them
    for name in names:
        mine = [r for r in received if json.loads(r)["device"] == name]
        assert mine == [r for r in written if json.loads(r)["device"] == name]
    # one device per message, whole lines, under the cap; the batches of 500 were split
    for topic, body in sub.messages:
        device = topic.rsplit("/", 1)[1]
        assert topic == f"firmware-host/gw1/{device}" and body.endswith(b"\n") and len(body) <= cap
        assert {json.loads(line)["device"] for line in body.splitlines()} == {device}
    assert mqtt.published == total and mqtt.messages == len(sub.messages) > total // 500


@pytest.mark.parametrize("payload", ["jsonl-batch", "json"])
async def test_broker_restart_at_rate_loses_nothing(fh_runtime, tmp_path, payload):
    """Eight devices fed at about 40,000 frames/s; the broker stops mid-stream
    and comes back: every frame reaches the subscriber (duplicates allowed),
    and the sink's own counters say delivered == frames, missed == 0."""
    names = [f"d{i}" for i in range(8)]
    chunk, rounds = 50, 60 if payload == "jsonl-batch" else 25  # json: per-frame publishing is slower
    total = chunk * rounds * len(names)
    async with broker_and_subscriber(tmp_path) as (broker, sub):
        mqtt = MqttSink(port=broker.port, gateway="gw1", payload=payload, timeout=1.0)
        ports = {n: FakePort() for n in names}
        config = {
            "buffer": {"flush_interval": 0.05, "batch_size": 1000, "capacity": total},
            "devices": [{"name": n, "port": f"fake://{n}", "codec": "fh1"} for n in names],
        }
        opener = FakeOpener({f"fake://{n}": [p] for n, p in ports.items()})
        async with fh_runtime(config, opener=opener, sinks=[mqtt]) as rt:

            async def feed() -> None:
                for r in range(rounds):
                    for port in ports.values():
                        port.feed(packets(range(r * chunk, (r + 1) * chunk)))
                    await asyncio.sleep(0.01)  # pacing, not synchronisation: ~40k frames/s

            feeding = asyncio.ensure_future(feed())
            try:
                await rt.wait_until(lambda s: s["sinks"] and s["sinks"][0]["delivered"] >= total // 5, 20)
                await broker.stop()  # mid-stream
                await rt.wait_until(lambda s: s["sinks"][0]["failures"] > 0, 20)
                await broker.start()
                await feeding
            finally:
                feeding.cancel()
            status = await rt.wait_until(lambda s: s["sinks"][0]["delivered"] == total, 40)
            m = status["sinks"][0]
            assert m["missed"] == 0 and m["pending"] == 0 and m["failures"] > 0
            assert all(d["dropped"] == 0 for d in status["devices"].values())
            assert_accounting(status)
        await sub.wait_records(total)
    got = {(r["device"], r["seq"], r["ts"]) for r in map(json.loads, sub.records())}
    assert {(d, s) for d, s, _ in got} == {(n, s) for n in names for s in range(chunk * rounds)}
    assert len(got) == total  # a repeat is the same (device, seq, ts): de-duplicating on it is exact


def test_split_lines_keeps_whole_lines_under_the_cap():
    body = b"".join(b"%d:" % i + b"x" * (i % 13) + b"\n" for i in range(500))
    pieces = split_lines(body, 64)
    assert b"".join(pieces) == body
    assert all(p.endswith(b"\n") and len(p) <= 64 for p in pieces)
    assert split_lines(body, len(body)) == [body]
    # a line longer than the cap goes alone, uncut
    big = b"a\n" + b"b" * 100 + b"\n" + b"c\n"
    assert split_lines(big, 10) == [b"a\n", b"b" * 100 + b"\n", b"c\n"]


def test_new_options_are_validated():
    with pytest.raises(ValueError, match="max_message_bytes"):
        MqttSink(payload="jsonl-batch", max_message_bytes=100)
    with pytest.raises(ValueError, match="max_inflight"):
        MqttSink(max_inflight=0)
    with pytest.raises(ValueError, match="max_inflight"):
        MqttSink(max_inflight=70000)
    with pytest.raises(ValueError, match="timeout"):
        MqttSink(timeout=0)
    for keepalive in (-1, 65536):  # sent in 16 bits: refused here, not at each connect
        with pytest.raises(ValueError, match="keepalive"):
            MqttSink(keepalive=keepalive)
    assert MqttSink(keepalive=0).opts["keepalive"] == 0
    assert MqttSink(payload="jsonl-batch").opts["max_message_bytes"] == 256 * 1024
    with pytest.raises(ValueError, match="batch_size"):
        MqttSink(batch_size=-1)
    with pytest.raises(ValueError, match="batch_size"):
        MqttSink(batch_size=1_000_001)


def test_batch_size_defaults_to_larger_writes_for_jsonl_batch():
    # each write waits for its PUBACKs: jsonl-batch takes 5000 frames per write
    # unless told otherwise; the per-frame modes take the buffer's batch_size
    assert MqttSink(payload="jsonl-batch").batch_size == 5000
    assert MqttSink(payload="jsonl-batch", batch_size=800).batch_size == 800
    assert MqttSink(payload="json").batch_size is None
    assert MqttSink(payload="raw", batch_size=300).batch_size == 300


def test_cli_bad_max_message_bytes_is_exit_2(tmp_path):
    from tests.conftest import cli

    cfg = tmp_path / "gw.toml"
    cfg.write_text('[plugins.mqtt]\npayload = "jsonl-batch"\nmax_message_bytes = 10\n')
    result = cli("run", "-c", str(cfg), "--duration", "0", "--control", str(tmp_path / "c.sock"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "plugins.mqtt.max_message_bytes" in result.stderr and "Traceback" not in result.stderr
