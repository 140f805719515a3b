"""Runtime: wires config into tasks under one token tree and drains in order.

Shutdown order (why): stop the readers first so no new frames arrive; then
the plugin tasks; then stop the periodic flusher and run the final drain
until the buffer is empty or ``grace`` runs out; close the sinks; stop the
aggregator last so every message sent before it is served; the control
socket stays up throughout so ``status`` works during a long drain. No step
waits on a sink beyond the grace: writes are abandoned at the deadline and
sinks close by it plus ``CLOSE_MARGIN`` (docs/reliability.md, section 5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware_host._sync import Changes
from firmware_host.aggregator import Aggregator, BufferSnapshot, DeviceAccount, LaneAccount, oldest_age
from firmware_host.cancel import CancellationToken, reap
from firmware_host.codecs import BUILTIN_CODECS, CodecFactory, make_codec
from firmware_host.codecs.fh1 import TYPE_COMMAND
from firmware_host.config import Config, ConfigError, DeviceConfig
from firmware_host.config.boards import Board
from firmware_host.control.server import ControlServer
from firmware_host.errors import DeviceExists, RuntimeFailure, ShuttingDown, SpoolBusy, SpoolError
from firmware_host.flusher import BatchSource, Flusher, FlushResult
from firmware_host.frames import Frame
from firmware_host.recorder import DEFAULT_BUFFER, RawSubscription, RawTap
from firmware_host.recordfile import Header
from firmware_host.request import DEFAULT_BACKOFF, DEFAULT_RETRIES, DEFAULT_TIMEOUT, Requester
from firmware_host.sinklane import SinkLane
from firmware_host.sinks import BUILTIN_SINKS, Sink, SinkFactory
from firmware_host.spool import Spool, Spooler
from firmware_host.supervise import Supervisor
from firmware_host.tap import DEFAULT_LIMIT, Subscription
from firmware_host.templates import TemplateWatcher, watcher_for
from firmware_host.transport.base import PortOpener, UrlResolver
from firmware_host.transport.ports import PortLister
from firmware_host.transport.serial import SerialBackend
from firmware_host.uplink import Processor, UplinkReader, apply_processors, fixed_url
from firmware_host.values.decoder import decoder_for

if TYPE_CHECKING:
    from firmware_host.control.http import MetricsServer

log = logging.getLogger("firmware_host.runtime")

#: seconds beyond the grace deadline that closing the sinks may take
CLOSE_MARGIN = 0.5

#: how a device with ``match`` (USB ids) becomes a URL; set by the boards module
MatchResolver = Callable[[Mapping[str, object]], UrlResolver]


@dataclass
class DeviceEntry:
    config: DeviceConfig
    reader: UplinkReader
    token: CancellationToken
    task: asyncio.Task[None]
    removed: bool = False
    #: an earlier reader of this name (before a remove and re-add) connected
    connected_before: bool = False
    #: recordings of the reader's raw bytes (``Runtime.record``)
    raw: RawTap | None = None


@dataclass
class Summary:
    """What ``run`` reports at exit (the ``status --json`` shape)."""

    status: dict[str, Any]
    lost: int = 0
    drained: bool = True
    aborted: bool = False
    flush: FlushResult = field(default_factory=FlushResult)
    #: why the runtime stopped on its own because a task could not continue (exit 1)
    failure: str | None = None


class Runtime:
    """The runtime. ``await rt.start()``, then ``await rt.shutdown()``;
    or ``await rt.run(duration)`` for both with stop-request handling."""

    def __init__(
        self,
        config: Config,
        *,
        opener: PortOpener | None = None,
        codecs: Mapping[str, CodecFactory] | None = None,
        sink_types: Mapping[str, SinkFactory] | None = None,
        sinks: list[Sink] | None = None,
        processors: list[Processor] | None = None,
        match_resolver: MatchResolver | None = None,
        control_path: str | None = None,
        boards: Mapping[str, Board] | None = None,
        ports: PortLister | None = None,
    ) -> None:
        self.config = config
        # the real backend owns the read tick its busy ttys share
        self.opener: PortOpener = opener or SerialBackend(read_coalesce=config.serial.read_coalesce)
        self.codecs: dict[str, CodecFactory] = {**BUILTIN_CODECS, **(codecs or {})}
        # codecs whose missing value decoder was reported (once per runtime)
        self._undecoded_codecs: set[str] = set()
        self.sink_types: dict[str, SinkFactory] = {**BUILTIN_SINKS, **(sink_types or {})}
        self.sinks: list[Sink] = list(sinks or [])
        self.processors: list[Processor] = list(processors or [])
        self.match_resolver = match_resolver
        self.control_path = control_path
        #: board definitions (with the user's --boards-dir), for `devices add --board`
        self.boards = boards
        self.token = CancellationToken()
        self.readers_token = self.token.child_token()
        self.tasks_token = self.token.child_token()
        self.flusher_token = self.token.child_token()
        self.control_token = self.token.child_token()
        self._agg_token = CancellationToken()  # not under root: stops last, explicitly
        self._abort = CancellationToken()
        #: poked on every buffer change and reader event; ``wait_until`` awaits it
        self.changes = Changes()
        #: restarts the actor, the flusher and the spooler when they fail (``status["tasks"]``)
        self.supervisor = Supervisor(self._task_gave_up, changes=self.changes)
        #: set when a supervised task could not continue: the runtime stops, exit 1
        self.failure: str | None = None
        self.aggregator = Aggregator(
            config.buffer.capacity, config.buffer.max_bytes, config.buffer.batch_size, changes=self.changes
        )
        self.flusher: Flusher | None = None
        self.devices: dict[str, DeviceEntry] = {}
        self.started_at: float | None = None
        self.stopped = asyncio.Event()
        self.stop_reason: str | None = None
        self.summary: Summary | None = None
        #: hooks run after start / before the readers stop (plugins, control)
        self.on_start: list[Callable[[Runtime], Awaitable[None]]] = []
        self.on_stop: list[Callable[[Runtime], Awaitable[None]]] = []
        #: extra status sections, e.g. ``{"plugins": fn}``
        self.status_sections: dict[str, Callable[[], Any]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._agg_task: asyncio.Task[None] | None = None
        #: one delivery task per sink (its lane), each supervised on its own
        self._lane_tasks: list[asyncio.Task[None]] = []
        #: with ``[buffer] spool``: memory → Spooler → spool → flusher → sinks
        self.spool: Spool | None = None
        self.spooler: Spooler | None = None
        self._spooler_task: asyncio.Task[None] | None = None
        self._control: ControlServer | None = None
        #: ``/metrics`` and ``/healthz`` with ``[metrics] listen`` (firmware_host.control.http)
        self.metrics: MetricsServer | None = None
        #: where device templates find ports (None: this host's); tests present ptys
        self.ports = ports
        #: makes and removes the devices of ``[[devices]]`` templates (None without any)
        self.hotplug: TemplateWatcher | None = None
        self._shutdown_lock = asyncio.Lock()
        #: commands and their acks (``request``); owns each device's command seq
        self.requester = Requester(self)

    # -- start ------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.started_at = time.monotonic()
        self.metrics = self._metrics_server()  # before any task: a missing extra leaves nothing running
        self.hotplug = watcher_for(self, cfg, self.ports, self.changes)  # likewise ([serial] hotplug = "udev")
        self.sinks.extend(self.build_sinks())  # before any task: a config error leaves nothing running
        self._agg_task = self.supervisor.start("aggregator", self.aggregator.run, self._agg_token)
        opened: list[Sink] = []
        for sink in self.sinks:
            try:
                await asyncio.wait_for(sink.open(), sink.timeout)
            except Exception as exc:
                await self._close_sinks(opened)
                await self._stop_aggregator()
                why = f"timed out after {sink.timeout:g}s" if isinstance(exc, TimeoutError) else str(exc)
                raise RuntimeFailure(f"sink {sink.name!r} cannot open: {why}") from exc
            opened.append(sink)
        source: BatchSource = self.aggregator.handle
        if cfg.buffer.spool:
            source = await self._open_spool(opened)
        self.flusher = Flusher(
            source,
            self.sinks,
            interval=cfg.buffer.flush_interval,
            batch_size=cfg.buffer.batch_size,
            # memory holds at most capacity frames: no lane's batch is larger
            max_batch=None if cfg.buffer.spool else cfg.buffer.capacity,
            changes=self.changes,
            on_all_closed=self._all_sinks_closed,
            abort=self._abort,
        )
        try:
            await self.flusher.attach()  # before any device: each sink's counters start with theirs
        except Exception:
            await self._abandon_start()
            raise
        names: set[str] = set()
        for lane in self.flusher.lanes:
            name = f"sink {lane.sink.name}"
            while name in names:  # two sinks of one type: tell their tasks apart
                name += "'"
            names.add(name)
            self._lane_tasks.append(self.supervisor.start(name, lane.run, self.flusher_token))
        if not self.flusher.lanes:  # no sink (a library use): the flusher's own loop
            self._lane_tasks.append(self.supervisor.start("flusher", self.flusher.run, self.flusher_token))
        if self.control_path:
            ctl = self.config.control
            self._control = ControlServer(self, self.control_path, mode=ctl.mode_bits, group=ctl.group)
            try:
                await self._control.start()
            except Exception:
                await self._abandon_start()
                raise
        if self.metrics is not None:
            try:
                await self.metrics.start()
            except Exception:
                if self._control is not None:
                    await self._control.close()
                await self._abandon_start()
                raise
        try:
            for dc in cfg.devices:
                await self.add_device(dc)
            if self.hotplug is not None:  # after the plain devices: their names and ports are theirs
                await self.hotplug.start()
            for hook in self.on_start:
                await hook(self)
        except BaseException:
            # readers, flusher and control are running: stop them in order
            await self.shutdown(grace=0)
            raise

    def _metrics_server(self) -> MetricsServer | None:
        address = self.config.metrics.address
        if address is None:
            return None
        try:  # only now: prometheus_client is the optional extra [metrics]
            from firmware_host.control.http import MetricsServer
        except ImportError as exc:
            raise ConfigError(
                f"[metrics] listen needs prometheus_client ({exc}): pip install 'firmware-host[metrics]'",
                source=self.config.source,
                key="metrics.listen",
            ) from None
        return MetricsServer(self, *address)

    async def _open_spool(self, opened: list[Sink]) -> Spool:
        cfg = self.config.buffer
        assert cfg.spool is not None
        spool = Spool(
            cfg.spool,
            max_bytes=cfg.spool_max_bytes,
            sync=cfg.spool_sync,
            batch_size=cfg.batch_size,
            changes=self.changes,
        )
        try:
            await spool.open()
        except (SpoolBusy, SpoolError, OSError) as exc:
            await spool.close()  # its thread: a spool refused at start holds none
            await self._close_sinks(opened)
            await self._stop_aggregator()
            raise RuntimeFailure(f"spool: {exc}") from None
        self.spool = spool
        self.spooler = Spooler(
            self.aggregator.handle, spool, interval=cfg.spool_interval, batch_size=cfg.batch_size, changes=self.changes
        )
        self._spooler_task = self.supervisor.start("spooler", self.spooler.run, self.flusher_token)
        return spool

    def build_sinks(self) -> list[Sink]:
        """Sinks from ``[[sinks]]``; a bad option is a config error (exit 2)."""
        sinks = []
        for i, sc in enumerate(self.config.sinks):
            factory = self.sink_types.get(sc.type)
            try:
                if factory is None:
                    raise ValueError(f"unknown sink type {sc.type!r} (known: {', '.join(sorted(self.sink_types))})")
                sink = factory(**sc.options)
            except (ValueError, TypeError) as exc:
                raise ConfigError(str(exc), source=self.config.source, key=f"sinks[{i}]") from None
            sink.timeout = sc.timeout
            if sc.batch_size is not None:
                sink.batch_size = sc.batch_size
            sinks.append(sink)
        return sinks

    def _all_sinks_closed(self) -> None:
        # like a Unix filter whose reader left (`run ... | head -2`): stop;
        # with no sink left open, the drain has nowhere to wait for
        self.request_stop("every sink has closed")

    async def _close_sinks(self, sinks: list[Sink], deadline: float | None = None) -> None:
        """Close ``sinks`` side by side, each within its ``timeout`` and by ``deadline``."""

        async def close(sink: Sink) -> None:
            limit = sink.timeout if deadline is None else min(sink.timeout, max(0.0, deadline - time.monotonic()))
            # a task of its own, given up at the limit without awaiting its
            # cancel (wait_for would): a close that swallows it cannot hold the shutdown
            closing = asyncio.ensure_future(sink.close())
            try:
                await asyncio.wait((closing,), timeout=limit)
            finally:
                if not closing.done():
                    closing.cancel()
                    closing.add_done_callback(_retrieve)
            if not closing.done():
                log.warning("sink %s did not close within %.1fs: left as it is", sink.name, limit)
            elif closing.cancelled():
                log.warning("sink %s did not close cleanly: cancelled", sink.name)
            elif (exc := closing.exception()) is not None:  # one sink's failure must not skip the others
                log.warning("sink %s did not close cleanly: %s", sink.name, exc)

        await asyncio.gather(*(close(s) for s in sinks))

    async def _abandon_start(self) -> None:
        self.flusher_token.cancel()
        for task in (*self._lane_tasks, self._spooler_task):
            if task:
                await task
        await self._close_sinks(self.sinks)
        if self.spool is not None:
            await self.spool.close()
        await self._stop_aggregator()

    def _resolver(self, dc: DeviceConfig) -> UrlResolver:
        if dc.port is not None:
            return fixed_url(dc.port)
        if self.match_resolver is None:
            from firmware_host.transport.detect import match_resolver

            return match_resolver(dc.match or {})
        return self.match_resolver(dc.match or {})

    async def add_device(self, dc: DeviceConfig) -> None:
        """Start a reader for ``dc`` (also used at runtime by ``devices add``)."""
        old = self.devices.get(dc.name)
        if old is not None and not old.removed:
            raise DeviceExists(f"device {dc.name!r} already exists")
        if self.readers_token.is_cancelled:
            raise ShuttingDown("the runtime is shutting down")
        codec = make_codec(dc.codec, dc.name, dict(dc.codec_options), self.codecs)
        decoder = decoder_for(dc.codec, dc.schema, dc.decode, reported=self._undecoded_codecs)
        if old is not None:
            # a re-added device keeps counting where it left off
            codec.rejected, codec.gaps = old.reader.codec.rejected, old.reader.codec.gaps
        reader = UplinkReader(
            dc.name,
            self._resolver(dc),
            dc.baudrate,
            codec,
            self.aggregator.handle,
            self.opener,
            process=apply_processors(self.processors),
            decoder=decoder,
            changes=self.changes,
            backoff_initial=dc.backoff_initial,
            backoff_max=dc.backoff_max,
        )
        if old is not None:
            reader.stats.bytes, reader.stats.reconnects = old.reader.stats.bytes, old.reader.stats.reconnects
            reader.undecoded_before = old.reader.undecoded
        await self.aggregator.handle.register(dc.name)
        token = self.readers_token.child_token()
        task = asyncio.create_task(self._supervise(reader, token), name=f"uplink:{dc.name}")
        # "never connected" is about the whole run, not this reader's life
        connected_before = old is not None and (old.connected_before or old.reader.stats.connects > 0)
        self.devices[dc.name] = DeviceEntry(
            dc, reader, token, task, connected_before=connected_before, raw=RawTap(reader)
        )

    async def remove_device(self, name: str) -> None:
        """Stop a device's reader in order; its buffered frames stay and flush."""
        entry = self.devices.get(name)
        if entry is None or entry.removed:
            raise KeyError(name)
        entry.removed = True
        entry.token.cancel()
        try:
            # shielded: a caller that gives up (a client disconnect) must not
            # cancel the reader half way through closing its port
            await asyncio.shield(entry.task)
        finally:
            if entry.raw is not None:
                entry.raw.close_all("the device was removed")

    async def _supervise(self, reader: UplinkReader, token: CancellationToken) -> None:
        # a bug in a reader (or a plugin codec) restarts that reader, never the runtime
        while not token.is_cancelled:
            try:
                await reader.run(token)
                return
            except Exception as exc:
                log.exception("reader %s crashed; restarting", reader.name)
                reader.stats.last_error = f"reader crashed: {type(exc).__name__}: {exc}"
                reader.changes.notify()
                reader.codec.reset()
                await token.run_until_cancelled(asyncio.sleep(1.0))

    # -- running ------------------------------------------------------------------

    def _task_gave_up(self, name: str, error: str) -> None:
        """A supervised task cannot continue: say so, and stop in order."""
        self.failure = f"task {name} cannot continue ({error})"
        log.error("%s: shutting down", self.failure)
        self.request_stop(self.failure)
        if name == "aggregator":
            self.aggregator.abandon()

    def request_stop(self, reason: str = "stop requested") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stopped.set()

    async def reopen_sinks(self) -> None:
        """Ask every sink to reopen its files by path (SIGHUP, log rotation);
        each within its ``timeout``. A sink's failure is logged, never fatal."""

        async def reopen(sink: Sink) -> None:
            try:
                await asyncio.wait_for(sink.reopen(), sink.timeout)
            except Exception as exc:
                log.warning("sink %s did not reopen: %s", sink.name, exc)

        await asyncio.gather(*(reopen(s) for s in self.sinks))

    def abort(self) -> None:
        """Give up the drain now (a second signal): what is buffered is lost."""
        self._abort.cancel()
        self.request_stop("aborted")

    async def run(self, duration: float | None = None) -> Summary:
        await self.start()
        try:
            if duration is None:
                await self.stopped.wait()
            else:
                try:
                    await asyncio.wait_for(self.stopped.wait(), duration)
                except TimeoutError:
                    self.request_stop("duration elapsed")
        finally:
            summary = await self.shutdown()
        return summary

    def send(self, device: str, frame_type: int | None, body: bytes | str, seq: int = 0) -> bool:
        """Encode and write a downlink frame; False when the device is not connected."""
        entry = self.devices.get(device)
        if entry is None or entry.removed:
            raise KeyError(device)
        return entry.reader.send(entry.reader.codec.encode(frame_type, seq, body))

    async def request(
        self,
        device: str,
        frame_type: int = TYPE_COMMAND,
        body: bytes | str = b"",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> Frame:
        """Send an fh1 command and return the device's ack (``TYPE_COMMAND_ACK``,
        its payload the command's seq then the reply), retrying ``retries``
        times after a doubling ``backoff``. KeyError: unknown device; errors
        RequestTimeout, NotConnected, RequestUnsupported (firmware_host.request)."""
        entry = self.devices.get(device)
        if entry is None or entry.removed:
            raise KeyError(device)
        return await self.requester.request(
            device, entry.reader.codec, frame_type, body, timeout=timeout, retries=retries, backoff=backoff
        )

    def subscribe(self, devices: Iterable[str] | None = None, limit: int = DEFAULT_LIMIT) -> Subscription:
        """Watch the frames the buffer accepts from now on (of ``devices``;
        None: all), at most ``limit`` held; a subscriber that falls behind
        loses the oldest and is told how many (firmware_host.tap). Close it,
        or use it as an async context manager."""
        return self.aggregator.tap.subscribe(devices, limit)

    def record(self, device: str, limit: int = DEFAULT_BUFFER) -> RawSubscription:
        """Record the raw bytes ``device``'s reader receives from now on, at
        most ``limit`` bytes held for a writer that falls behind (beyond it
        reads are lost, counted: firmware_host.recorder). Drain it with a
        writer; close it to stop. KeyError for an unknown or removed device."""
        entry = self.devices.get(device)
        if entry is None or entry.removed or entry.raw is None:
            raise KeyError(device)
        if self.readers_token.is_cancelled:
            raise ShuttingDown("the runtime is shutting down")
        dc = entry.config
        header = Header(
            device=device,
            port=entry.reader.url or dc.port,
            baudrate=dc.baudrate,
            codec=dc.codec,
            codec_options=dict(dc.codec_options),
            board=dc.board,
            started=time.time(),
            source="runtime",
        )
        return entry.raw.subscribe(header, limit)

    async def flush(self, device: str | None = None, timeout: float | None = None) -> FlushResult:
        if self.flusher is None:
            return FlushResult()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.spooler is not None:  # memory → spool first, then spool → sinks
            await self.spooler.flush(device, deadline=deadline, token=self._abort)
        return await self.flusher.flush(device, deadline=deadline, token=self._abort)

    # -- shutdown -------------------------------------------------------------------

    async def shutdown(self, grace: float | None = None) -> Summary:
        async with self._shutdown_lock:
            if self.summary is not None:
                return self.summary
            grace = self.config.shutdown.grace if grace is None else grace
            deadline = time.monotonic() + grace
            self.request_stop()
            for hook in self.on_stop:
                try:
                    await asyncio.wait_for(hook(self), max(0.0, deadline - time.monotonic()))
                except Exception:
                    log.exception("stop hook failed")
            if self.hotplug is not None:  # no device comes or goes once the readers stop
                await self.hotplug.stop()
            self.readers_token.cancel()
            readers = [e.task for e in self.devices.values()]
            if readers:
                await asyncio.gather(*readers, return_exceptions=True)
            for entry in self.devices.values():
                if entry.raw is not None:
                    entry.raw.close_all("the runtime stopped")
            self.tasks_token.cancel()
            self.flusher_token.cancel()
            result = FlushResult()
            drained = True
            if self._spooler_task is not None:
                await self._finish(self._spooler_task, deadline)
            if self.spooler is not None:
                spooled = await self._abort.run_until_cancelled(self.spooler.drain(deadline))
                drained = spooled is not None and not spooled.incomplete
            tasks = dict(zip(self.flusher.lanes, self._lane_tasks, strict=False)) if self.flusher else {}
            for extra in self._lane_tasks[len(tasks) :]:  # (no sink: the flusher's own loop)
                await self._finish(extra, deadline)

            async def settle(lane: SinkLane) -> None:
                if lane in tasks:
                    await self._finish(tasks[lane], deadline)

            if self.flusher is not None:
                # each sink drains once its own task is done: a stuck one delays no other
                got = await self._abort.run_until_cancelled(self.flusher.drain(deadline, settle))
                if got is None:
                    drained = False
                else:
                    result = got
                    drained = drained and not got.incomplete
            # sinks close in what is left of the grace (a moment at least); after
            # a second signal, in that moment only
            if self._abort.is_cancelled:
                await self._close_sinks(self.sinks, time.monotonic() + CLOSE_MARGIN)
            else:
                close_by = max(deadline, time.monotonic()) + CLOSE_MARGIN
                await self._abort.run_until_cancelled(self._close_sinks(self.sinks, close_by))
            status = await self.status(final=True)
            if self.spool is not None:
                kept = status["spool"]["depth"]
                if kept:
                    log.warning("%d frames stay in the spool %s for the next run", kept, self.spool.path)
                await self.spool.close()
            lost = sum(d["lost"] for d in status["devices"].values())
            if lost:
                log.error("%d frames could not be delivered before the grace period ended", lost)
            self.control_token.cancel()
            if self._control is not None:
                await self._control.close()
            if self.metrics is not None:
                await self.metrics.close()
            await self._stop_aggregator()
            self.token.cancel()
            self.summary = Summary(status, lost, drained, self._abort.is_cancelled, result, self.failure)
            return self.summary

    async def _finish(self, task: asyncio.Task[None], deadline: float) -> None:
        """Let ``task`` finish a write in progress (a cancelled write would be
        sent again by the drain), but only until the deadline or a second signal."""
        left = max(0.0, deadline - time.monotonic())
        await self._abort.run_until_cancelled(asyncio.wait((task,), timeout=left))
        if not task.done():
            task.cancel()  # gives up the write: those frames stay buffered
        try:
            await reap(task)  # its cancel swallowed; a cancel of this wait (a second signal) passed on
        except Exception:  # never expected (faults are retried inside); still drain
            log.exception("%s task failed", task.get_name())

    async def _stop_aggregator(self) -> None:
        self._agg_token.cancel()
        if self._agg_task is not None:
            await self._agg_task

    async def wait_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Await a condition on ``status()`` (no sleeps); TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self.changes.waiter()
                status = await self.status()
                if predicate(status):
                    return status
                await changed

    # -- views ------------------------------------------------------------------------

    async def snapshot(self, oldest: bool = False, lanes: bool = False) -> BufferSnapshot:
        if self.aggregator.handle.stopped and self._agg_task is not None and self._agg_task.done():
            return self.aggregator.snapshot_now(oldest, lanes)  # (the actor was given up)
        return await self.aggregator.handle.snapshot(oldest, lanes)

    async def status(self, final: bool = False) -> dict[str, Any]:
        """The ``status --json`` shape (docs/control.md)."""
        snap = await self.snapshot(lanes=self.spool is None)
        uptime = 0.0 if self.started_at is None else time.monotonic() - self.started_at
        devices: dict[str, Any] = {}
        spool = self.spool
        names = list(self.devices) + [n for n in snap.accounts if n not in self.devices]
        if spool is not None:  # devices of an earlier run may exist only in the spool
            names += [n for n in spool.accounts if n not in names]
        for name in names:
            acct = snap.accounts.get(name, DeviceAccount())
            entry = self.devices.get(name)
            reader = entry.reader if entry else None
            frames, flushed, dropped, buffered, lost = (
                acct.frames,
                acct.flushed,
                acct.dropped,
                acct.buffered,
                acct.buffered,
            )
            extra: dict[str, int] = {}
            if spool is not None:
                # memory's "flushed" only moved frames into the spool; the law
                # is about the sinks, so compose the two stages
                sp = spool.account(name)
                frames += sp.recovered
                flushed = sp.delivered
                dropped += sp.dropped
                transit = sp.transit(acct.flushed)
                buffered += sp.pending + transit
                lost = acct.buffered + transit  # what the spool holds is kept, not lost
                extra = {"spooled": sp.pending, "recovered": sp.recovered}
            devices[name] = {
                "state": reader.stats.state if reader else "closed",
                "bytes": reader.stats.bytes if reader else 0,
                "frames": frames,
                "rejected": reader.rejected if reader else 0,
                "gaps": reader.gaps if reader else 0,
                "undecoded": reader.undecoded if reader else 0,
                "reconnects": reader.stats.reconnects if reader else 0,
                "flushed": flushed,
                "dropped": dropped,
                "buffered": buffered,
                "lost": lost if final else 0,
                **extra,
                "filtered": reader.stats.filtered if reader else 0,
                "port": reader.url if reader else None,
                "removed": bool(entry and entry.removed),
                "last_error": reader.stats.last_error if reader else None,
            }
            if entry is not None and entry.config.template is not None:
                devices[name]["template"] = entry.config.template
        out: dict[str, Any] = {
            "uptime": round(uptime, 3),
            "buffer": {
                "capacity": snap.capacity,
                "max_bytes": snap.max_bytes,
                "depth": snap.depth,
                "bytes": snap.bytes,
                "dropped": snap.dropped,
            },
            "devices": devices,
            "sinks": self._sink_status(snap, names, final),
            "tasks": self.supervisor.report(),
        }
        if final:  # at exit: the devices this run never once opened (reported, not fatal here)
            out["never_connected"] = [
                n for n, e in self.devices.items() if not (e.connected_before or e.reader.stats.connects)
            ]
        if spool is not None:
            out["spool"] = spool.summary()
            # a fault of the disk (full, I/O error): retried, shown until it clears
            errors = [f.source_error for f in (self.spooler, self.flusher) if f is not None and f.source_error]
            out["spool"]["last_error"] = errors[0] if errors else None
        for key, section in self.status_sections.items():
            try:
                out[key] = section()
            except Exception as exc:  # a plugin's status bug must not break status
                out[key] = {"error": str(exc)}
        return out

    def _sink_status(self, snap: BufferSnapshot, names: list[str], final: bool) -> list[dict[str, Any]]:
        """Per sink: its delivery state and, per device, ``frames == delivered
        + missed + pending``. With a spool the two stages compose: what memory
        dropped no sink had; what memory holds or is in transit waits for all."""
        if self.flusher is None:
            return []
        views = self.spool.lane_views() if self.spool is not None else snap.lanes
        out = []
        for lane, view in zip(self.flusher.lanes, views, strict=False):  # (views: once attached)
            per_device: dict[str, dict[str, int]] = {}
            lost = 0
            for name in names:
                got = view.devices.get(name, LaneAccount())
                delivered, missed, pending = got.delivered, got.missed, got.pending
                if self.spool is not None:
                    mem = snap.accounts.get(name, DeviceAccount())
                    missed += mem.dropped
                    unspooled = mem.buffered + self.spool.account(name).transit(mem.flushed)
                    if view.closed:  # a sink that left will never have them
                        missed += unspooled
                    else:
                        pending += unspooled
                        lost += unspooled  # what the spool holds is kept for the next run
                else:
                    lost += pending
                per_device[name] = {"delivered": delivered, "missed": missed, "pending": pending}
            stats = lane.stats
            out.append(
                {
                    "name": stats.name,
                    "state": stats.state,
                    "delivered": sum(d["delivered"] for d in per_device.values()),
                    "missed": sum(d["missed"] for d in per_device.values()),
                    "pending": sum(d["pending"] for d in per_device.values()),
                    "lost": lost if final else 0,
                    "failures": stats.failures,
                    "last_error": stats.last_error,
                    "batches": stats.batches,
                    "written": stats.written,
                    "devices": per_device,
                }
            )
        return out

    async def buffers(self) -> dict[str, Any]:
        """The ``buffers --json`` shape (docs/control.md)."""
        snap = await self.snapshot(oldest=True)
        ages = oldest_age(snap)
        out: dict[str, Any] = {
            "capacity": snap.capacity,
            "depth": snap.depth,
            "bytes": snap.bytes,
            "max_bytes": snap.max_bytes,
            "dropped": snap.dropped,
            "devices": {
                name: {
                    "depth": a.buffered,
                    "dropped": a.dropped,
                    "oldest_age": round(ages[name], 3) if name in ages else None,
                }
                for name, a in snap.accounts.items()
            },
        }
        if self.spool is not None:
            out["spool"] = self.spool.summary()
        return out


def _retrieve(task: asyncio.Future[None]) -> None:
    """An abandoned close's outcome: nobody awaits it, so read it here (no
    "exception was never retrieved" at exit)."""
    if not task.cancelled():
        task.exception()
