"""Frames per second through a local Mosquitto broker with the mqtt sink.

    python tools/bench_mqtt.py [--frames 50000] [--batch 1000]

Starts mosquitto on a free loopback port, feeds fh1 frames from a scripted
port into a runtime whose only sink is the mqtt plugin (QoS 1, every PUBACK
awaited), and a QoS 1 subscriber counts what arrives. Prints JSON.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_host import FakeOpener, FakePort, encode_packet
from firmware_host.testing import running_runtime


async def main(frames: int, batch: int) -> dict[str, object]:
    import aiomqtt

    from firmware_host_plugins.mqtt import MqttSink
    from tools.mosquitto import Broker

    broker = Broker(Path(tempfile.mkdtemp(prefix="fh-mqtt-")))
    await broker.start()
    received = 0
    done = asyncio.Event()

    async def subscribe(ready: asyncio.Event) -> None:
        nonlocal received
        async with aiomqtt.Client("127.0.0.1", broker.port, max_queued_incoming_messages=0) as client:
            await client.subscribe("firmware-host/#", qos=1)
            ready.set()
            async for _ in client.messages:
                received += 1
                if received >= frames:
                    done.set()
                    return

    ready = asyncio.Event()
    sub = asyncio.ensure_future(subscribe(ready))
    await ready.wait()
    payload = bytes(64)
    data = b"".join(encode_packet(0, s, payload) for s in range(frames))
    port = FakePort([data[i : i + 65536] for i in range(0, len(data), 65536)])
    sink = MqttSink(port=broker.port, gateway="bench")
    config = {
        "buffer": {"capacity": frames, "flush_interval": 0.05, "batch_size": batch},
        "devices": [{"name": "d", "port": "fake://d", "codec": "fh1"}],
    }
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with running_runtime(config, opener=FakeOpener({"fake://d": [port]}), sinks=[sink]) as rt:
        await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == frames, 300)
        t_acked = time.perf_counter() - t0
    await asyncio.wait_for(done.wait(), 60)
    t_all = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    sub.cancel()
    await broker.stop()
    return {
        "frames": frames,
        "batch_size": batch,
        "seconds_to_all_pubacks": round(t_acked, 3),
        "frames_per_s_acked": round(frames / t_acked),
        "seconds_to_subscriber": round(t_all, 3),
        "process_cpu_s (runtime + subscriber)": round(cpu, 3),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.frames, args.batch)), indent=2))
