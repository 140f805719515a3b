"""Frames per second through a local Mosquitto broker with the mqtt sink.

    python tools/bench_mqtt.py [--frames 50000] [--batch 1000] [--payload json] [--devices 1]
                               [--max-inflight N]

Starts mosquitto on a free loopback port, feeds fh1 frames from scripted ports
(``--devices`` of them, ``--frames`` in all) into a runtime whose only sink is
the mqtt plugin (QoS 1, every PUBACK awaited), and a QoS 1 subscriber in this
process counts the frames that arrive (the lines of a ``jsonl-batch`` message).
Prints JSON; ``frames_per_s_acked`` is frames over the time until the runtime
had every frame acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_host import FakeOpener, FakePort, encode_packet
from firmware_host.testing import running_runtime


async def main(frames: int, batch: int, payload: str, devices: int, max_inflight: int | None) -> dict[str, Any]:
    import aiomqtt

    from firmware_host_plugins.mqtt import MqttSink
    from tools.mosquitto import Broker

    broker = Broker(Path(tempfile.mkdtemp(prefix="fh-mqtt-")))
    await broker.start()
    received = 0
    done = asyncio.Event()
    per_device = frames // devices
    frames = per_device * devices

    async def subscribe(ready: asyncio.Event) -> None:
        nonlocal received
        protocol = aiomqtt.ProtocolVersion.V5 if payload == "raw" else aiomqtt.ProtocolVersion.V311
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, max_queued_incoming_messages=0, protocol=protocol
        ) as client:
            await client.subscribe("firmware-host/#", qos=1)
            ready.set()
            async for msg in client.messages:
                body = msg.payload
                received += body.count(b"\n") if payload == "jsonl-batch" and isinstance(body, bytes) else 1
                if received >= frames:
                    done.set()
                    return

    ready = asyncio.Event()
    sub = asyncio.ensure_future(subscribe(ready))
    await ready.wait()
    data = b"".join(encode_packet(0, s, bytes(64)) for s in range(per_device))
    names = [f"d{i:02d}" for i in range(devices)]
    opener = FakeOpener(
        {f"fake://{n}": [FakePort([data[i : i + 4096] for i in range(0, len(data), 4096)])] for n in names}
    )
    options: dict[str, Any] = {"port": broker.port, "gateway": "bench", "payload": payload}
    if max_inflight:
        options["max_inflight"] = max_inflight
    sink = MqttSink(**options)
    config = {
        "buffer": {"capacity": frames, "flush_interval": 0.05, "batch_size": batch},
        "devices": [{"name": n, "port": f"fake://{n}", "codec": "fh1"} for n in names],
    }
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with running_runtime(config, opener=opener, sinks=[sink]) as rt:
        await rt.wait_until(lambda s: sum(d["flushed"] for d in s["devices"].values()) == frames, 300)
        t_acked = time.perf_counter() - t0
    await asyncio.wait_for(done.wait(), 60)
    t_all = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    sub.cancel()
    await broker.stop()
    return {
        "frames": frames,
        "devices": devices,
        "payload": payload,
        "batch_size": batch,
        "max_inflight": sink.opts["max_inflight"],
        "messages": sink.messages,
        "seconds_to_all_pubacks": round(t_acked, 3),
        "frames_per_s_acked": round(frames / t_acked),
        "seconds_to_subscriber": round(t_all, 3),
        "frames_at_subscriber": received,
        "process_cpu_s (runtime + subscriber)": round(cpu, 3),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--payload", choices=("json", "raw", "jsonl-batch"), default="json")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--max-inflight", type=int, default=None, help="default: the sink's own")
    args = parser.parse_args()
    result = asyncio.run(main(args.frames, args.batch, args.payload, args.devices, args.max_inflight))
    print(json.dumps(result, indent=2))
