"""``/metrics`` (Prometheus text format) and ``/healthz`` over HTTP, for a service.

Every scrape takes one ``status()`` snapshot on the event loop and builds the
metric families from it (:class:`StatusCollector`), so the numbers agree
exactly with ``status --json`` at the same moment and nothing is counted on
the data path. The text is rendered by ``prometheus_client.generate_latest``
in a worker thread (the process collector reads ``/proc``). The server is a
minimal asyncio HTTP/1.1 responder written for hostile peers: one GET per
connection, the request head bounded in size and in time, the connections
capped. Imported only when ``[metrics] listen`` is set (the optional
``[metrics]`` extra brings ``prometheus_client``); docs/service.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from firmware_host.errors import RuntimeFailure

__all__ = ["MetricsServer", "StatusCollector", "StatusSource", "health"]

log = logging.getLogger("firmware_host.metrics")

PREFIX = "firmware_host"
#: the longest request head (request line and headers) read, in bytes
MAX_HEAD = 8192
#: seconds a client has to send its request head (a slowloris is dropped then)
HEAD_TIMEOUT = 5.0
#: seconds a reply may take to be written to a slow reader
WRITE_TIMEOUT = 5.0
#: seconds the status snapshot of one request may take
STATUS_TIMEOUT = 5.0
#: connections served at once; more are closed at once
MAX_CONNECTIONS = 16

#: per-device counters of ``status["devices"][name]`` (monotonic for a run)
DEVICE_COUNTERS = (
    "frames",
    "rejected",
    "gaps",
    "undecoded",
    "reconnects",
    "flushed",
    "dropped",
    "bytes",
    "filtered",
)
#: per-device levels
DEVICE_GAUGES = ("buffered",)
SINK_COUNTERS = ("delivered", "missed", "failures", "batches", "written")
SINK_GAUGES = ("pending",)
PLUGIN_TASK_COUNTERS = ("runs", "failures", "overruns", "missed")


class StatusSource(Protocol):
    """What the server needs of a runtime (``Runtime`` is one)."""

    @property
    def stopped(self) -> asyncio.Event:
        """Set once a stop was requested (the runtime is shutting down)."""
        ...

    async def status(self) -> dict[str, Any]: ...


# -- metrics ---------------------------------------------------------------------------


class StatusCollector(Collector):
    """The metric families of one ``status()`` snapshot (taken before, on the loop)."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        st = self.status
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the runtime started", value=st["uptime"])
        yield from self._buffer(st["buffer"])
        yield from self._devices(st["devices"])
        yield from self._sinks(st.get("sinks") or [])
        yield from self._tasks(st.get("tasks") or {})
        plugins = st.get("plugins")
        if isinstance(plugins, list):  # (a plugin status bug shows as {"error": ...})
            yield from self._plugin_tasks(plugins)

    def _buffer(self, buf: Mapping[str, Any]) -> Iterator[Metric]:
        for key, what in (
            ("depth", "Frames in the shared buffer"),
            ("bytes", "Payload bytes in the shared buffer"),
            ("capacity", "Frames the shared buffer holds"),
            ("max_bytes", "Payload bytes the shared buffer holds (0: no byte bound)"),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_buffer_{key}", what, value=buf[key])
        yield CounterMetricFamily(f"{PREFIX}_buffer_dropped", "Frames dropped by the full buffer", value=buf["dropped"])

    def _devices(self, devices: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        for key in DEVICE_COUNTERS:
            c = CounterMetricFamily(f"{PREFIX}_device_{key}", f"status devices.*.{key}", labels=["device"])
            for name, d in devices.items():
                c.add_metric([name], d[key])
            yield c
        for key in DEVICE_GAUGES:
            g = GaugeMetricFamily(f"{PREFIX}_device_{key}", f"status devices.*.{key}", labels=["device"])
            for name, d in devices.items():
                g.add_metric([name], d[key])
            yield g
        state = GaugeMetricFamily(
            f"{PREFIX}_device_state", "1 for the device's current reader state", labels=["device", "state"]
        )
        for name, d in devices.items():
            state.add_metric([name, d["state"]], 1)
        yield state

    def _sinks(self, sinks: list[Mapping[str, Any]]) -> Iterator[Metric]:
        # two sinks of one type share a name: the index in status["sinks"] tells them apart
        labels = ["sink", "index"]
        for key in SINK_COUNTERS:
            c = CounterMetricFamily(f"{PREFIX}_sink_{key}", f"status sinks[].{key}", labels=labels)
            for i, s in enumerate(sinks):
                c.add_metric([s["name"], str(i)], s[key])
            yield c
        for key in SINK_GAUGES:
            g = GaugeMetricFamily(f"{PREFIX}_sink_{key}", f"status sinks[].{key}", labels=labels)
            for i, s in enumerate(sinks):
                g.add_metric([s["name"], str(i)], s[key])
            yield g
        state = GaugeMetricFamily(
            f"{PREFIX}_sink_state", "1 for the sink's current state (ok, retrying, closed)", labels=[*labels, "state"]
        )
        for i, s in enumerate(sinks):
            state.add_metric([s["name"], str(i), s["state"]], 1)
        yield state

    def _tasks(self, tasks: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        restarts = CounterMetricFamily(f"{PREFIX}_task_restarts", "Restarts of a supervised task", labels=["task"])
        state = GaugeMetricFamily(
            f"{PREFIX}_task_state", "1 for a supervised task's current state", labels=["task", "state"]
        )
        for name, t in tasks.items():
            restarts.add_metric([name], t["restarts"])
            state.add_metric([name, t["state"]], 1)
        yield restarts
        yield state

    def _plugin_tasks(self, plugins: list[Mapping[str, Any]]) -> Iterator[Metric]:
        families = {
            key: CounterMetricFamily(
                f"{PREFIX}_plugin_task_{key}", f"status plugins[].tasks[].{key}", labels=["plugin", "task"]
            )
            for key in PLUGIN_TASK_COUNTERS
        }
        for p in plugins:
            for t in p.get("tasks") or []:
                for key, family in families.items():
                    family.add_metric([p["name"], t["name"]], t[key])
        yield from families.values()


def render(status: Mapping[str, Any]) -> bytes:
    """The Prometheus text of ``status`` and of this process (reads /proc: call off the loop)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(StatusCollector(status))
    return generate_latest(registry)


# -- health ----------------------------------------------------------------------------


def health(status: Mapping[str, Any], stopping: bool) -> tuple[bool, list[str]]:
    """Healthy, and the reasons it is not (docs/service.md, "Health").

    Unhealthy while: the runtime is shutting down; a sink is ``retrying``
    (its last write failed: deliveries to it are not happening); every sink
    is ``closed``; a supervised task has ``failed`` (given up).
    """
    why: list[str] = []
    if stopping:
        why.append("the runtime is shutting down")
    sinks = status.get("sinks") or []
    for s in sinks:
        if s["state"] == "retrying":
            why.append(f"sink {s['name']} is retrying after {s['failures']} failures: {s['last_error']}")
    if sinks and all(s["state"] == "closed" for s in sinks):
        why.append("every sink has closed")
    for name, t in (status.get("tasks") or {}).items():
        if t["state"] == "failed":
            why.append(f"task {name} has failed: {t['last_error']}")
    return not why, why


# -- the server ------------------------------------------------------------------------


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` for ``runtime`` on ``host:port``."""

    def __init__(
        self,
        runtime: StatusSource,
        host: str,
        port: int,
        *,
        head_timeout: float = HEAD_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.runtime = runtime
        self.host = host
        self.port = port
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when asked for port 0)."""
        assert self._server is not None and self._server.sockets
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._conns)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=MAX_HEAD)
        except OSError as exc:
            raise RuntimeFailure(f"[metrics] listen {self.host}:{self.port}: {exc.strerror or exc}") from None
        host, port = self.address
        log.info("metrics and health on http://%s:%d/metrics and /healthz", host, port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_connections:
            writer.transport.abort()  # over the cap: closed at once, no reply
            return
        task = asyncio.current_task()
        assert task is not None  # start_server runs each connection in its own task
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._conns.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(self.head_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return  # too slow, too long or gone: dropped without a word
            status, ctype, body = await self._respond(head)
            reply = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\nCache-Control: no-store\r\n\r\n"
            ).encode("ascii")
            if not head.startswith(b"HEAD "):
                reply += body
            writer.write(reply)
            writer.close()  # one request per connection; close() sends what is buffered first
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # a bug here must never reach the runtime
            log.exception("metrics request failed")
        finally:
            writer.transport.abort()  # a no-op once closed; else drops a stuck reader

    async def _respond(self, head: bytes) -> tuple[str, str, bytes]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "400 Bad Request", "text/plain; charset=utf-8", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain; charset=utf-8", b"only GET and HEAD\n"
        if target == "/metrics":
            status = await self._status()
            text = await asyncio.get_running_loop().run_in_executor(None, render, status)
            return "200 OK", CONTENT_TYPE_LATEST, text
        if target == "/healthz":
            status = await self._status()
            ok, why = health(status, self.runtime.stopped.is_set())
            body = json.dumps({"healthy": ok, "reasons": why}).encode() + b"\n"
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        return "404 Not Found", "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"

    async def _status(self) -> dict[str, Any]:
        async with asyncio.timeout(STATUS_TIMEOUT):
            return await self.runtime.status()
