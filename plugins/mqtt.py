"""``mqtt`` sink plugin: publish frames to an MQTT broker with QoS 1 or 2.

Enable with ``[plugins.mqtt]`` (options below); needs the ``[mqtt]`` extra
(aiomqtt, on paho-mqtt 2.x). A batch counts as accepted only after the broker
acknowledged every message of it (PUBACK, or PUBCOMP for QoS 2), so a broker
that restarts or goes away leaves the frames in the runtime's buffer, where
drop-oldest bounds them, and the sink lane's retry with backoff doubles as the
reconnect loop.

Topic: ``<topic_prefix>/<gateway>/<device>``. Payload:

- ``json`` (default): one message per frame, the jsonl record;
- ``raw``: one message per frame, the frame's bytes, with device, seq, type
  and ts as MQTT 5 user properties;
- ``jsonl-batch``: one message per device per delivered batch, the jsonl
  records of that device's frames in the batch (whole lines, the jsonl sink's
  own bytes), split into several messages above ``max_message_bytes``. Its
  writes take up to ``JSONL_BATCH_SIZE`` frames (``batch_size`` to change):
  each write waits for its acknowledgements, so more per write is more per
  round trip.

Delivery is at least once: consumers de-duplicate on (device, seq, ts)
(``tools/mqtt_consume.py`` does).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from firmware_host import Frame, PluginContext, Sink, encode_records

log = logging.getLogger("firmware_host.plugins.mqtt")
# aiomqtt warns on every publish beyond a few in flight; a batch is hundreds by
# design, so its client logger stays at ERROR unless the user configures it
_client_log = logging.getLogger("firmware_host.plugins.mqtt.client")
if _client_log.level == logging.NOTSET:
    _client_log.setLevel(logging.ERROR)

PAYLOADS = ("json", "raw", "jsonl-batch")
#: MQTT's largest packet is 256 MiB; a message needs a little room for its header and topic
MAX_MESSAGE_BYTES = 256 * 1024 * 1024 - 65536

OPTIONS: dict[str, tuple[type, Any]] = {
    "host": (str, "localhost"),
    "port": (int, 1883),
    "gateway": (str, ""),  # default: this host's name
    "topic_prefix": (str, "firmware-host"),
    "payload": (str, "json"),
    "qos": (int, 1),
    "username": (str, ""),
    "password": (str, ""),
    "tls": (bool, False),
    "ca_file": (str, ""),
    "client_id": (str, ""),
    "keepalive": (int, 30),
    "timeout": (float, 10.0),  # seconds a batch may wait without any acknowledgement
    "max_inflight": (int, 100),
    "max_message_bytes": (int, 256 * 1024),  # jsonl-batch: the cap on one message's body
    "batch_size": (int, 0),  # the most frames per write; 0: JSONL_BATCH_SIZE for jsonl-batch, else the buffer's
}
#: jsonl-batch's frames per write by default. Each write waits for its PUBACKs
#: (one round trip) before the next: at the buffer's 1000 that round trip, not
#: the CPU, held 48 devices at 921600 baud below their rate (docs/scale-out.md).
JSONL_BATCH_SIZE = 5000
#: as [buffer] batch_size
MAX_BATCH_SIZE = 1_000_000


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, then the checks types alone cannot express
    (types are checked by ``ctx.take_options(OPTIONS)`` in ``setup``)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"sink 'mqtt': unknown option {unknown[0]!r} (known: {', '.join(sorted(OPTIONS))})")
    opts = {key: options.get(key, default) for key, (_, default) in OPTIONS.items()}
    if opts["payload"] not in PAYLOADS:
        raise ValueError('sink \'mqtt\': option \'payload\' must be "json", "raw" or "jsonl-batch"')
    if opts["qos"] not in (1, 2):
        raise ValueError("sink 'mqtt': option 'qos' must be 1 or 2 (QoS 0 has no acknowledgement)")
    if not 0 < opts["port"] < 65536:
        raise ValueError("sink 'mqtt': option 'port' must be 1..65535")
    if not 0 < opts["timeout"] <= 3600:
        raise ValueError("sink 'mqtt': option 'timeout' must be > 0 and at most 3600 seconds")
    # the CONNECT packet holds it in 16 bits; 0 turns the broker's liveness check off
    if not 0 <= opts["keepalive"] <= 65535:
        raise ValueError("sink 'mqtt': option 'keepalive' must be 0..65535 seconds (0: no keepalive)")
    # message ids are 16 bits: more in flight than that cannot be told apart
    if not 1 <= opts["max_inflight"] <= 65535:
        raise ValueError("sink 'mqtt': option 'max_inflight' must be 1..65535")
    if not 1024 <= opts["max_message_bytes"] <= MAX_MESSAGE_BYTES:
        raise ValueError(f"sink 'mqtt': option 'max_message_bytes' must be 1024..{MAX_MESSAGE_BYTES}")
    if not 0 <= opts["batch_size"] <= MAX_BATCH_SIZE:
        raise ValueError(f"sink 'mqtt': option 'batch_size' must be 0..{MAX_BATCH_SIZE} (0: the default)")
    opts["gateway"] = opts["gateway"] or socket.gethostname()
    for key in ("gateway", "topic_prefix"):
        if any(c in opts[key] for c in "+#/") or not opts[key]:
            raise ValueError(f"sink 'mqtt': option {key!r} must be a non-empty topic level without + # /")
    return opts


def split_lines(body: bytes, cap: int) -> list[bytes]:
    """``body`` (whole lines, each ending in a newline) cut into pieces of at
    most ``cap`` bytes at line ends; a single line longer than ``cap`` goes
    alone in its piece (a record is never cut)."""
    if len(body) <= cap:
        return [body]
    pieces: list[bytes] = []
    start, end = 0, len(body)
    while end - start > cap:
        cut = body.rfind(b"\n", start, start + cap)  # the last line end that fits
        if cut < 0:  # the first line alone is longer than cap
            cut = body.find(b"\n", start + cap)
            cut = end - 1 if cut < 0 else cut
        pieces.append(body[start : cut + 1])
        start = cut + 1
    if start < end:
        pieces.append(body[start:])
    return pieces


#: one MQTT message: topic, body, MQTT 5 properties (raw mode) or None
Message = tuple[str, bytes, Any]


@dataclass
class _Progress:
    """Acknowledgements counted by a batch's publishers, read by its watchdog."""

    acked: int = 0


class MqttSink(Sink):
    name = "mqtt"

    def __init__(self, **options: Any) -> None:
        try:
            import aiomqtt  # noqa: F401  (fail at config time, not at the first flush)
        except ImportError as exc:
            raise ValueError("sink 'mqtt' needs the mqtt extra: pip install 'firmware-host[mqtt]'") from exc
        self.opts = check_options(options)
        # one write connects (if need be), publishes and waits for every
        # acknowledgement, failing after `timeout` seconds without one: the
        # write's own deadline must leave room for that (a [[sinks]] timeout,
        # when given, still decides)
        self.timeout = max(self.timeout, 2 * self.opts["timeout"])
        if self.opts["batch_size"]:
            self.batch_size = self.opts["batch_size"]
        elif self.opts["payload"] == "jsonl-batch":
            self.batch_size = JSONL_BATCH_SIZE
        self._client: Any = None
        #: ends (with the reason) when the connection is lost: writes wait on it beside their acknowledgements
        self._watch: asyncio.Future[None] | None = None
        self._tls: ssl.SSLContext | None = None
        #: device -> its topic (device names are few; bounded like the jsonl sink's cache)
        self._topics: dict[str, str] = {}
        self.published = 0  # frames acknowledged
        self.messages = 0  # MQTT messages acknowledged

    def topic(self, device: str) -> str:
        topic = self._topics.get(device)
        if topic is None:
            if len(self._topics) >= 4096:
                self._topics.clear()
            topic = self._topics[device] = f"{self.opts['topic_prefix']}/{self.opts['gateway']}/{device}"
        return topic

    async def open(self) -> None:
        try:
            await self._connect()
        except Exception as exc:  # the broker may come later; writes retry with backoff
            log.warning("mqtt: broker %s:%s not reachable yet: %s", self.opts["host"], self.opts["port"], exc)

    async def _connect(self) -> Any:
        import aiomqtt

        o = self.opts
        if o["tls"] and self._tls is None:
            # reads the CA file: off the loop, and once, not at every reconnect
            self._tls = await asyncio.to_thread(ssl.create_default_context, cafile=o["ca_file"] or None)
        tls_context = self._tls
        client = aiomqtt.Client(
            o["host"],
            o["port"],
            username=o["username"] or None,
            password=o["password"] or None,
            identifier=o["client_id"] or None,
            keepalive=o["keepalive"],
            timeout=o["timeout"],
            tls_context=tls_context,
            max_inflight_messages=o["max_inflight"],
            logger=_client_log,
            protocol=aiomqtt.ProtocolVersion.V5 if o["payload"] == "raw" else aiomqtt.ProtocolVersion.V311,
        )
        await client.__aenter__()
        self._client = client
        self._watch = asyncio.ensure_future(_until_disconnected(client))
        log.info("mqtt: connected to %s:%s", o["host"], o["port"])
        return client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            watch.add_done_callback(_retrieve)
        if client is not None:
            try:
                await asyncio.wait_for(client.__aexit__(None, None, None), 5)
            except Exception:  # already broken: nothing more to release
                pass

    # -- messages ------------------------------------------------------------------------

    def messages_for(self, frames: Sequence[Frame]) -> list[Message]:
        """The MQTT messages that carry ``frames``, in the configured payload mode."""
        mode = self.opts["payload"]
        if mode == "jsonl-batch":
            return self._batch_messages(frames)
        if mode == "json":
            # one encode for the batch, then its lines: a record never holds a
            # raw newline (JSON escapes it), so line i is frame i's record
            lines = encode_records(frames).split(b"\n")
            topic = self.topic
            return [(topic(f.device), line, None) for f, line in zip(frames, lines)]
        return [self._raw_message(f) for f in frames]

    def _batch_messages(self, frames: Sequence[Frame]) -> list[Message]:
        by_device: dict[str, list[Frame]] = {}
        for f in frames:
            group = by_device.get(f.device)
            if group is None:
                group = by_device[f.device] = []
            group.append(f)
        cap = self.opts["max_message_bytes"]
        out: list[Message] = []
        for device, group in by_device.items():
            topic = self.topic(device)
            out.extend((topic, piece, None) for piece in split_lines(encode_records(group), cap))
        return out

    def _raw_message(self, frame: Frame) -> Message:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is partly typed
        props.UserProperty = [
            ("device", frame.device),
            ("seq", str(frame.seq)),
            ("type", "" if frame.type is None else str(frame.type)),
            ("ts", f"{frame.ts:.6f}"),
        ]
        body = frame.payload if frame.payload is not None else (frame.text or "").encode("utf-8")
        return self.topic(frame.device), body, props

    # -- publishing ----------------------------------------------------------------------

    async def write(self, frames: Sequence[Frame]) -> None:
        if self._watch is not None and self._watch.done():  # lost since the last write
            await self._disconnect()
        client = self._client or await self._connect()
        messages = self.messages_for(frames)
        try:
            await self._publish_all(client, messages)
        except BaseException:
            await self._disconnect()
            raise
        self.published += len(frames)
        self.messages += len(messages)

    async def _publish_all(self, client: Any, messages: list[Message]) -> None:
        """Publish ``messages`` with at most ``max_inflight`` unacknowledged,
        returning when every one is acknowledged; raises when one fails or no
        acknowledgement came for ``timeout`` seconds (the connection is gone)."""
        progress = _Progress()
        work = asyncio.ensure_future(self._pipeline(client, messages, progress))
        watch = self._watch
        assert watch is not None  # set by _connect with the client
        timeout = self.opts["timeout"]
        try:
            seen = 0
            while True:
                # one watchdog for the batch instead of a timer per message
                done, _ = await asyncio.wait((work, watch), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if work in done:
                    work.result()
                    return
                if watch in done:  # acknowledgements of a lost connection never come
                    raise ConnectionError("mqtt: connection to the broker lost") from watch.exception()
                if progress.acked == seen:
                    raise TimeoutError(f"mqtt: no acknowledgement from the broker for {timeout:g} s")
                seen = progress.acked
        finally:
            if not work.done():
                work.cancel()
                work.add_done_callback(_retrieve)

    async def _pipeline(self, client: Any, messages: list[Message], progress: _Progress) -> None:
        """``max_inflight`` publishers share the messages; each publishes its
        next one when the broker acknowledged its last (a sliding window, so
        the connection never idles while the batch lasts)."""
        qos = self.opts["qos"]
        queue = iter(messages)

        async def publisher() -> None:
            for topic, body, props in queue:
                # timeout inf: no timer per message, the batch's watchdog bounds the wait
                await client.publish(topic, body, qos=qos, properties=props, timeout=math.inf)
                progress.acked += 1

        # the window is also what aiomqtt scans on every publish (its pending
        # calls): more publishers than max_inflight would only queue in paho
        n = min(self.opts["max_inflight"], len(messages))
        publishers = [asyncio.ensure_future(publisher()) for _ in range(n)]
        try:
            await asyncio.gather(*publishers)  # the first failure fails the batch
        finally:
            for task in publishers:  # the rest are abandoned with it
                task.cancel()

    async def close(self) -> None:
        await self._disconnect()


async def _until_disconnected(client: Any) -> None:
    """Returns or raises when ``client``'s connection ends: aiomqtt's message
    iterator is its public way to await that (a publisher receives nothing)."""
    async for _ in client.messages:
        pass


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned batch's error is not logged as unhandled


def setup(ctx: PluginContext) -> None:
    """Plugin entry point: ``[plugins.mqtt]`` options become the sink's options;
    a bad option is a config error (exit 2), not a failed plugin."""
    opts = ctx.take_options(OPTIONS)
    try:
        sink = MqttSink(**opts)
    except ValueError as exc:
        key = next((k for k in OPTIONS if repr(k) in str(exc)), "mqtt")
        raise ctx.option_error(key, str(exc).removeprefix("sink 'mqtt': ")) from None
    ctx.add_sink(sink)
