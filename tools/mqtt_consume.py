"""The other side of the mqtt sink: subscribe, de-duplicate, write jsonl.

    python tools/mqtt_consume.py --out FILE [--host localhost] [--port 1883]
        [--topic-prefix firmware-host] [--group GROUP] [--client-id ID] [--window 10000]

Subscribes to ``$share/GROUP/<topic_prefix>/#`` (an MQTT 5 shared
subscription: every consumer started with the same ``--group`` gets its share
of the messages, so adding consumers splits the load), QoS 1. Accepts the
three payload modes of the mqtt sink: ``json`` (one record), ``jsonl-batch``
(records, one per line) and ``raw`` (the frame's bytes with device, seq, type
and ts as user properties), and appends to ``--out`` the records the gateway's
own jsonl sink writes, byte for byte.

Delivery from the gateway is at least once (a batch whose acknowledgement was
lost is published again), so each consumer drops a record whose
``(device, seq, ts)`` it saw among the last ``--window`` records of that
device. Behind one shared subscription a repeated message may go to another
consumer than the first copy did; a store that keys on ``(device, seq, ts)``
removes those.

Prints ``{"ready": true}`` once subscribed, and on SIGTERM or SIGINT a JSON
summary (messages, records written, duplicates dropped), then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_host import Frame, encode_records

TOPIC_LEVEL_FORBIDDEN = "+#/"


class Dedup:
    """The last ``window`` (seq, ts) keys of each device: a record seen among
    them is a repeat. Bounded: at most ``window`` keys per device, and at
    most ``max_devices`` devices (the oldest device's keys go first)."""

    def __init__(self, window: int, max_devices: int = 4096) -> None:
        self.window = window
        self.max_devices = max_devices
        self._seen: dict[str, tuple[set[tuple[int, str]], collections.deque[tuple[int, str]]]] = {}

    def first_time(self, device: str, seq: int, ts: str) -> bool:
        entry = self._seen.get(device)
        if entry is None:
            if len(self._seen) >= self.max_devices:
                del self._seen[next(iter(self._seen))]
            entry = self._seen[device] = (set(), collections.deque())
        keys, order = entry
        key = (seq, ts)
        if key in keys:
            return False
        keys.add(key)
        order.append(key)
        if len(order) > self.window:
            keys.discard(order.popleft())
        return True


def raw_record(body: bytes, props: dict[str, str]) -> bytes:
    """The jsonl record of a ``raw`` message (user properties device, seq, type, ts)."""
    ftype = props["type"]
    ts = float(props["ts"])
    if ftype == "":  # a text frame: the body is its UTF-8 line
        frame = Frame(props["device"], int(props["seq"]), None, ts, text=body.decode("utf-8", "replace"))
    else:
        frame = Frame(props["device"], int(props["seq"]), int(ftype), ts, payload=body)
    return encode_records((frame,))


def records(body: bytes, props: dict[str, str] | None) -> Iterator[tuple[str, int, str, bytes]]:
    """(device, seq, ts, the record's line with its newline) for each record of a message."""
    if props is not None and {"device", "seq", "type", "ts"} <= props.keys():
        line = raw_record(body, props)
        yield props["device"], int(props["seq"]), props["ts"], line
        return
    # json (one record, no newline) and jsonl-batch (records, each ending in one)
    for line in body.split(b"\n"):
        if line:
            rec = json.loads(line)
            # ts as the gateway wrote it (%.6f): the key does not depend on float parsing
            yield rec["device"], rec["seq"], f"{rec['ts']:.6f}", line + b"\n"


class Output:
    """Appends to the output file off the event loop: records gather while
    one write runs, and the next write takes them all."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._closing = False

    def add(self, line: bytes) -> None:
        self._pending.append(line)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            chunk, self._pending = b"".join(self._pending), []
            if chunk:
                await asyncio.to_thread(_write_all, self.fd, chunk)
            if self._closing and not self._pending:
                return

    async def close(self, task: asyncio.Task[None]) -> None:
        self._closing = True
        self._wake.set()
        await asyncio.wait_for(task, 30)
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    connect_props = None
    if args.client_id:  # a named consumer keeps its session (and its queued messages) for an hour
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_props.SessionExpiryInterval = 3600
    client = aiomqtt.Client(
        args.host,
        args.port,
        identifier=args.client_id or None,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not args.client_id,
        properties=connect_props,
        max_queued_incoming_messages=0,
    )
    out = Output(args.out)
    writer = asyncio.ensure_future(out.run())
    dedup = Dedup(args.window)
    stats = {"messages": 0, "records": 0, "duplicates": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def receive() -> None:
        ready = False
        while True:  # one client across reconnects (aiomqtt allows it); a broker restart is waited out
            try:
                async with client:
                    await client.subscribe(f"$share/{args.group}/{args.topic_prefix}/#", qos=1)
                    if not ready:
                        ready = True
                        print(json.dumps({"ready": True}), flush=True)
                    async for msg in client.messages:
                        handle(msg)
            except aiomqtt.MqttError as exc:
                if not ready:
                    raise  # never connected: a wrong host or port is the user's error, not a restart
                print(f"mqtt_consume: {exc}; reconnecting", file=sys.stderr, flush=True)
                await asyncio.sleep(1.0)

    def handle(msg: aiomqtt.Message) -> None:
        stats["messages"] += 1
        body = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        # json(): only the properties the message carries (raw mode: its user properties)
        user = msg.properties.json().get("UserProperty") if msg.properties is not None else None  # type: ignore[no-untyped-call]
        props = dict(user) if user else None
        for device, seq, ts, line in records(body, props):
            if dedup.first_time(device, seq, ts):
                out.add(line)
                stats["records"] += 1
            else:
                stats["duplicates"] += 1

    task = asyncio.ensure_future(receive())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await out.close(writer)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise SystemExit(f"mqtt_consume: {task.exception()}")
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="jsonl file to append the records to")
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--topic-prefix", default="firmware-host")
    ap.add_argument("--group", default="firmware-host", help="shared subscription group (default firmware-host)")
    ap.add_argument("--client-id", default="", help="a persistent session under this id (default: none)")
    ap.add_argument("--window", type=int, default=10000, help="records remembered per device for de-duplication")
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        ap.error("--port must be 1..65535")
    for name in ("topic_prefix", "group"):
        value = getattr(args, name)
        if not value or any(c in value for c in TOPIC_LEVEL_FORBIDDEN):
            ap.error(f"--{name.replace('_', '-')} must be a non-empty topic level without + # /")
    if not 1 <= args.window <= 10_000_000:
        ap.error("--window must be 1..10000000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stats = asyncio.run(consume(args))
    except OSError as exc:
        print(f"mqtt_consume: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
