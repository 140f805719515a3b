"""Issue 22: tools/mqtt_consume.py, the consumer on the other side of the mqtt sink.

Two consumers behind one MQTT 5 shared subscription split the gateway's
messages between them (both get some), and together they write exactly the
records the gateway's own jsonl sink wrote, in each of the three payload modes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_host import FakeOpener, FakePort, encode_packet
from firmware_host.sinks.jsonl import JsonlSink
from firmware_host.testing import assert_accounting
from tests.conftest import REPO
from tools.mosquitto import MOSQUITTO, Broker

aiomqtt = pytest.importorskip("aiomqtt", reason="the [mqtt] extra is not installed")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

from firmware_host_plugins.mqtt import MqttSink  # noqa: E402
from tools.mqtt_consume import Dedup, records  # noqa: E402


class ConsumerProc:
    """tools/mqtt_consume.py in a process of its own, ready once it printed so."""

    def __init__(self, proc: asyncio.subprocess.Process, out: Path) -> None:
        self.proc = proc
        self.out = out

    @classmethod
    async def start(cls, port: int, out: Path, group: str) -> ConsumerProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "tools" / "mqtt_consume.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--group",
            group,
            "--out",
            str(out),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert json.loads(line) == {"ready": True}, line
        return cls(proc, out)

    def lines(self) -> list[bytes]:
        return self.out.read_bytes().splitlines(keepends=True) if self.out.exists() else []

    async def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(self.proc.communicate(), 15)
        assert self.proc.returncode == 0, stderr.decode()
        return json.loads(stdout.splitlines()[-1])


@contextlib.asynccontextmanager
async def two_consumers(tmp_path: Path) -> AsyncIterator[tuple[Broker, list[ConsumerProc]]]:
    broker = Broker(tmp_path)
    await broker.start()
    consumers: list[ConsumerProc] = []
    try:
        for i in range(2):
            consumers.append(await ConsumerProc.start(broker.port, tmp_path / f"out{i}.jsonl", "storage"))
        yield broker, consumers
    finally:
        for c in consumers:
            if c.proc.returncode is None:
                c.proc.kill()
                await c.proc.wait()
        await broker.stop()


@pytest.mark.parametrize("payload", ["jsonl-batch", "json", "raw"])
async def test_two_shared_consumers_write_exactly_the_gateway_records(fh_runtime, tmp_path, payload):
    binary = [f"imu{i}" for i in range(3)]
    per_device = 400
    total = per_device * (len(binary) + 1)
    data = b"".join(encode_packet(s % 5, s, s.to_bytes(4, "little") * 4) for s in range(per_device))
    text = "".join(f"line {s} \u00e9\n" for s in range(per_device)).encode()  # a text device too
    scripts: dict[str, list[FakePort | BaseException]] = {
        f"fake://{n}": [FakePort([data[i : i + 1024] for i in range(0, len(data), 1024)])] for n in binary
    }
    scripts["fake://txt"] = [FakePort([text[i : i + 1000] for i in range(0, len(text), 1000)])]
    config = {
        "buffer": {"flush_interval": 0.05, "batch_size": 100, "capacity": total},
        "devices": [
            *({"name": n, "port": f"fake://{n}", "codec": "fh1"} for n in binary),
            {"name": "txt", "port": "fake://txt", "codec": "lines"},
        ],
    }
    async with two_consumers(tmp_path) as (broker, consumers):
        jsonl = JsonlSink(path=str(tmp_path / "gateway.jsonl"))
        mqtt = MqttSink(port=broker.port, gateway="gw1", payload=payload)
        async with fh_runtime(config, opener=FakeOpener(scripts), sinks=[jsonl, mqtt]) as rt:
            status = await rt.wait_until(
                lambda s: len(s["sinks"]) == 2 and all(x["delivered"] == total for x in s["sinks"]), 30
            )
            assert all(x["missed"] == 0 for x in status["sinks"])
            assert_accounting(status)
        # every message is acknowledged by the broker; the consumers write what
        # they get to files, which a test can only look at (bounded, 20 ms apart)
        async with asyncio.timeout(20):
            while sum(len(c.lines()) for c in consumers) < total:
                await asyncio.sleep(0.02)
        summaries = [await c.stop() for c in consumers]
    gateway = (tmp_path / "gateway.jsonl").read_bytes().splitlines(keepends=True)
    assert len(gateway) == total
    union = consumers[0].lines() + consumers[1].lines()
    assert collections.Counter(union) == collections.Counter(gateway)  # exactly, byte for byte
    assert all(c.lines() for c in consumers), "the shared subscription gave one consumer nothing"
    assert all(s["messages"] > 0 and s["duplicates"] == 0 for s in summaries)
    assert sum(s["records"] for s in summaries) == total


def test_repeats_are_dropped_on_device_seq_ts():
    dedup = Dedup(window=3)
    body = b'{"device": "a", "seq": 1, "type": 0, "ts": 5.000001, "payload": ""}\n'
    body += b'{"device": "a", "seq": 1, "type": 0, "ts": 6.000000, "payload": ""}\n'  # same seq, later: a new frame
    firsts = [dedup.first_time(d, s, ts) for d, s, ts, _ in records(body + body, None)]
    assert firsts == [True, True, False, False]
    for seq in range(2, 6):  # the window forgets the oldest keys
        assert dedup.first_time("a", seq, "1.000000")
    assert dedup.first_time("a", 1, "5.000001")


def test_bad_arguments_are_one_line(tmp_path):
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "mqtt_consume.py"), "--out", str(tmp_path / "o"), "--group", "a/b"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "--group" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "mqtt_consume.py"), "--out", str(tmp_path / "o"), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and "mqtt_consume:" in proc.stderr and "Traceback" not in proc.stderr
