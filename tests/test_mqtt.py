"""Issue 9: the mqtt sink against a real Mosquitto broker on a loopback port.

Frames flow into a subscriber; a broker restart mid-stream loses nothing
(frames stay buffered until PUBACK); a broker down for longer than the buffer
lasts is counted as drop-oldest and recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from firmware_host import FakeOpener, FakePort, encode_packet
from firmware_host.testing import assert_accounting
from tools.mosquitto import MOSQUITTO, Broker

aiomqtt = pytest.importorskip("aiomqtt", reason="the [mqtt] extra is not installed")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

from firmware_host_plugins.mqtt import MqttSink  # noqa: E402


class Subscriber:
    """Collects everything under firmware-host/#, reconnecting across broker restarts
    with a persistent session (QoS 1, clean_session false) so nothing is missed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.records: list[dict] = []
        self.raw: list[tuple[bytes, dict]] = []
        self.changed = asyncio.Event()
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        # one client object across reconnects: messages it already acknowledged
        # but we have not consumed yet stay in its queue instead of being lost
        client = aiomqtt.Client(
            "127.0.0.1", self.port, identifier="fh-test-sub", clean_session=False, protocol=aiomqtt.ProtocolVersion.V311
        )
        while True:
            try:
                async with client:
                    await client.subscribe("firmware-host/#", qos=1)
                    self.subscribed.set()
                    async for msg in client.messages:
                        self.records.append(json.loads(msg.payload))
                        self.changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def keys(self) -> set[tuple[str, int]]:
        return {(r["device"], r["seq"]) for r in self.records}

    async def wait_for(self, keys: set[tuple[str, int]], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not keys <= self.keys():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def broker_and_subscriber(
    tmp_path: Path, subscriber: Callable[[int], Any] = Subscriber
) -> AsyncIterator[tuple[Broker, Any]]:
    """A broker on a free port and ``subscriber(port)`` subscribed to it (its
    ``run()`` a task, its ``subscribed`` set); both stopped after."""
    broker = Broker(tmp_path)
    await broker.start()
    sub = subscriber(broker.port)
    task = asyncio.ensure_future(sub.run())
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 10)
        yield broker, sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await broker.stop()


def packets(seqs: range) -> bytes:
    return b"".join(encode_packet(0, s, s.to_bytes(4, "little")) for s in seqs)


async def test_frames_flow_end_to_end(fh_runtime, tmp_path):
    async with broker_and_subscriber(tmp_path) as (broker, sub):
        sink = MqttSink(port=broker.port, gateway="gw1")
        port = FakePort([packets(range(1000))])
        config = {
            "buffer": {"flush_interval": 0.05, "batch_size": 200},
            "devices": [{"name": "imu0", "port": "fake://a", "codec": "fh1"}],
        }
        async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
            await rt.wait_until(lambda s: s["devices"]["imu0"]["flushed"] == 1000, 20)
        await sub.wait_for({("imu0", s) for s in range(1000)})
        assert sink.published == 1000
        record = next(r for r in sub.records if r["seq"] == 7)
        assert record["payload"] == "BwAAAA==" and record["type"] == 0


async def test_broker_restart_mid_stream_loses_nothing(fh_runtime, tmp_path):
    async with broker_and_subscriber(tmp_path) as (broker, sub):
        sink = MqttSink(port=broker.port, gateway="gw1", timeout=2.0)
        port = FakePort()
        config = {
            "buffer": {"flush_interval": 0.05, "batch_size": 100},
            "devices": [{"name": "d", "port": "fake://a", "codec": "fh1"}],
        }
        async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
            port.feed(packets(range(500)))
            await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 500, 20)
            await broker.stop()
            port.feed(packets(range(500, 1500)))  # arrives while the broker is down
            await rt.wait_frames("d", 1500)
            status = await rt.wait_until(lambda s: s["sinks"][0]["failures"] > 0, 20)
            assert status["devices"]["d"]["buffered"] > 0  # held, not lost
            await broker.start()
            await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 1500, 30)
        await sub.wait_for({("d", s) for s in range(1500)})


async def test_broker_down_longer_than_buffer_drops_oldest_and_recovers(fh_runtime, tmp_path):
    async with broker_and_subscriber(tmp_path) as (broker, sub):
        sink = MqttSink(port=broker.port, gateway="gw1", timeout=1.0)
        port = FakePort()
        config = {
            "buffer": {"capacity": 100, "flush_interval": 0.05, "batch_size": 50},
            "devices": [{"name": "d", "port": "fake://a", "codec": "fh1"}],
        }
        async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
            await broker.stop()
            for start in range(0, 1000, 50):
                port.feed(packets(range(start, start + 50)))
            await rt.wait_frames("d", 1000)
            buffers = await rt.buffers()
            assert buffers["depth"] <= 100 and buffers["dropped"] >= 900
            await broker.start()
            status = await rt.wait_until(lambda s: s["devices"]["d"]["buffered"] == 0, 30)
            assert_accounting(status)
            d = status["devices"]["d"]
            assert d["flushed"] + d["dropped"] == 1000 and d["flushed"] >= 1
        await sub.wait_for({("d", 999)})  # the newest frames got through after recovery


async def test_raw_payload_with_user_properties(fh_runtime, tmp_path):
    broker = Broker(tmp_path)
    await broker.start()
    try:
        got: list[tuple[bytes, dict]] = []
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe("firmware-host/gw9/#", qos=1)
            sink = MqttSink(port=broker.port, gateway="gw9", payload="raw")
            port = FakePort([packets(range(3))])
            config = {
                "buffer": {"flush_interval": 0.05},
                "devices": [{"name": "x", "port": "fake://a", "codec": "fh1"}],
            }
            async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
                await rt.wait_until(lambda s: s["devices"]["x"]["flushed"] == 3, 20)
            async with asyncio.timeout(10):
                async for msg in client.messages:
                    got.append((msg.payload, dict(msg.properties.UserProperty)))
                    assert str(msg.topic) == "firmware-host/gw9/x"
                    if len(got) == 3:
                        break
        assert [p for p, _ in got] == [s.to_bytes(4, "little") for s in range(3)]
        assert [props["seq"] for _, props in got] == ["0", "1", "2"]
        assert got[0][1]["device"] == "x" and got[0][1]["type"] == "0"
    finally:
        await broker.stop()


def test_options_are_validated():
    with pytest.raises(ValueError, match="qos"):
        MqttSink(qos=0)
    with pytest.raises(ValueError, match="payload"):
        MqttSink(payload="xml")
    with pytest.raises(ValueError, match="unknown option"):
        MqttSink(hots="x")


async def test_cli_run_with_mqtt_plugin(tmp_path):
    """As a user runs it: `firmware-host run` with [plugins.mqtt] on emulated boards."""
    from tests.conftest import cli

    async with broker_and_subscriber(tmp_path) as (broker, sub):
        cfg = tmp_path / "gw.toml"
        cfg.write_text(f'[plugins.mqtt]\nport = {broker.port}\nhost = "127.0.0.1"\ngateway = "gw7"\n')
        result = await asyncio.to_thread(
            cli,
            "run",
            "-c",
            str(cfg),
            "--emulate",
            "env-sensor:1",
            "--duration",
            "1.5",
            "-q",
            "--control",
            str(tmp_path / "c.sock"),
            "--summary",
            str(tmp_path / "s.json"),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        final = json.loads((tmp_path / "s.json").read_text())
        assert_accounting(final)
        flushed = final["devices"]["env-sensor-0"]["flushed"]
        assert flushed > 0
        await sub.wait_for({("env-sensor-0", s) for s in range(flushed)})
        assert all(r["device"] == "env-sensor-0" for r in sub.records)


def test_cli_bad_mqtt_option_is_exit_2(tmp_path):
    from tests.conftest import cli

    cfg = tmp_path / "gw.toml"
    cfg.write_text("[plugins.mqtt]\nqos = 0\n")
    result = cli("run", "-c", str(cfg), "--duration", "0", "--control", str(tmp_path / "c.sock"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "plugins.mqtt.qos" in result.stderr and "Traceback" not in result.stderr
