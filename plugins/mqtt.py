"""``mqtt`` sink plugin: publish every frame to an MQTT broker with QoS 1.

Enable with ``[plugins.mqtt]`` (options below); needs the ``[mqtt]`` extra
(aiomqtt, on paho-mqtt 2.x). A batch counts as accepted only after the broker
acknowledged every message (PUBACK), so a broker that restarts or goes away
leaves the frames in the runtime's buffer, where drop-oldest bounds them, and
the flusher's retry with backoff doubles as the reconnect loop.

Topic: ``<topic_prefix>/<gateway>/<device>``. Payload: the jsonl record
(``payload = "json"``, default) or the raw frame bytes with device, seq,
type and ts as MQTT 5 user properties (``payload = "raw"``). Delivery is at
least once: consumers de-duplicate on (device, seq, ts).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from firmware_host import Frame, PluginContext, Sink, encode_records

log = logging.getLogger("firmware_host.plugins.mqtt")
# aiomqtt warns on every publish beyond a few in flight; a batch is hundreds by
# design, so its client logger stays at ERROR unless the user configures it
_client_log = logging.getLogger("firmware_host.plugins.mqtt.client")
if _client_log.level == logging.NOTSET:
    _client_log.setLevel(logging.ERROR)

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
    "timeout": (float, 10.0),  # seconds to wait for a batch's PUBACKs
    "max_inflight": (int, 1000),
}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, then the checks types alone cannot express
    (types are checked by ``ctx.take_options(OPTIONS)`` in ``setup``)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"sink 'mqtt': unknown option {unknown[0]!r} (known: {', '.join(sorted(OPTIONS))})")
    opts = {key: options.get(key, default) for key, (_, default) in OPTIONS.items()}
    if opts["payload"] not in ("json", "raw"):
        raise ValueError("sink 'mqtt': option 'payload' must be \"json\" or \"raw\"")
    if opts["qos"] not in (1, 2):
        raise ValueError("sink 'mqtt': option 'qos' must be 1 or 2 (QoS 0 has no acknowledgement)")
    if not 0 < opts["port"] < 65536:
        raise ValueError("sink 'mqtt': option 'port' must be 1..65535")
    opts["gateway"] = opts["gateway"] or socket.gethostname()
    for key in ("gateway", "topic_prefix"):
        if any(c in opts[key] for c in "+#/") or not opts[key]:
            raise ValueError(f"sink 'mqtt': option {key!r} must be a non-empty topic level without + # /")
    return opts


class MqttSink(Sink):
    name = "mqtt"

    def __init__(self, **options: Any) -> None:
        try:
            import aiomqtt  # noqa: F401  (fail at config time, not at the first flush)
        except ImportError as exc:
            raise ValueError("sink 'mqtt' needs the mqtt extra: pip install 'firmware-host[mqtt]'") from exc
        self.opts = check_options(options)
        # one write connects (if need be), publishes and waits for every PUBACK,
        # each wait bounded by the option: the write's own deadline must leave
        # room for that (a [[sinks]] timeout, when given, still decides)
        self.timeout = max(self.timeout, 2 * self.opts["timeout"])
        self._client: Any = None
        self._tls: ssl.SSLContext | None = None
        self.published = 0

    def topic(self, device: str) -> str:
        return f"{self.opts['topic_prefix']}/{self.opts['gateway']}/{device}"

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
        log.info("mqtt: connected to %s:%s", o["host"], o["port"])
        return client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.__aexit__(None, None, None), 5)
            except Exception:  # already broken: nothing more to release
                pass

    def _message(self, frame: Frame) -> tuple[bytes, Any]:
        if self.opts["payload"] == "json":
            return encode_records((frame,))[:-1], None  # the jsonl record, without its newline
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
        return body, props

    async def write(self, frames: Sequence[Frame]) -> None:
        client = self._client or await self._connect()
        qos, timeout = self.opts["qos"], self.opts["timeout"]
        publishes = []
        for frame in frames:
            body, props = self._message(frame)
            publishes.append(client.publish(self.topic(frame.device), body, qos=qos, properties=props, timeout=timeout))
        try:
            # accepted only when every PUBACK is in; any failure fails the batch
            await asyncio.gather(*publishes)
        except BaseException:
            await self._disconnect()
            raise
        self.published += len(frames)

    async def close(self) -> None:
        await self._disconnect()


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
