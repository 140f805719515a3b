"""UplinkReader: one task per device, port → codec → decoder → processors → aggregator."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from firmware_host._sync import Changes, ReadGate
from firmware_host.cancel import CancellationToken
from firmware_host.codecs.base import Codec
from firmware_host.errors import PortClosed
from firmware_host.frames import Frame
from firmware_host.recorder import RawTap
from firmware_host.transport.base import Port, PortOpener, UrlResolver

log = logging.getLogger("firmware_host.uplink")

#: processors run on every decoded batch before it is offered
Processor = Callable[[list[Frame]], list[Frame]]


class FrameInlet(Protocol):
    """Where a reader hands its frames: the aggregator's handle.

    A reader passes ``read_gate`` before every read, offers each read's
    frames with ``offer_nowait`` (no coroutine), and only when that finds the
    inbox full awaits ``offer``.
    """

    @property
    def read_gate(self) -> ReadGate: ...

    def offer_nowait(self, device: str, frames: Sequence[Frame]) -> bool: ...

    async def offer(self, device: str, frames: Sequence[Frame]) -> None: ...


class FieldDecoder(Protocol):
    """Sets ``Frame.fields`` from a device's payloads (``values.decoder``),
    counting those that do not fit their schema as ``undecoded``."""

    undecoded: int

    def decode(self, frames: Sequence[Frame]) -> None: ...


@dataclass(slots=True)
class ReaderStats:
    state: str = "connecting"  # connecting | connected | backoff | closed
    bytes: int = 0
    reconnects: int = 0
    connects: int = 0
    last_error: str | None = None
    #: time.monotonic() of the last byte received (watchdogs use it)
    last_rx: float | None = None
    #: frames removed by processors (they never enter the buffer)
    filtered: int = 0


class UplinkReader:
    """Reads one device for as long as its token lives, reconnecting with backoff."""

    def __init__(
        self,
        name: str,
        resolve: UrlResolver,
        baudrate: int,
        codec: Codec,
        aggregator: FrameInlet,
        opener: PortOpener,
        *,
        process: Processor | None = None,
        decoder: FieldDecoder | None = None,
        changes: Changes | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.name = name
        self.codec = codec
        self.stats = ReaderStats()
        self.url: str | None = None
        self._resolve = resolve
        self._baudrate = baudrate
        self._agg = aggregator
        self._open = opener
        self._process = process
        self.decoder = decoder
        #: undecoded frames of this device's earlier readers (a re-added device
        #: keeps counting, whether or not it decodes now)
        self.undecoded_before = 0
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._port: Port | None = None
        #: closes of ports that finished opening after this reader gave up
        self._late_closes: set[asyncio.Future[None]] = set()
        self.changes = changes or Changes()
        #: the recordings of this device's raw bytes (firmware_host.recorder);
        #: None while nobody records, so a read costs one test
        self.recorder: RawTap | None = None

    @property
    def rejected(self) -> int:
        return self.codec.rejected

    @property
    def gaps(self) -> int:
        return self.codec.gaps

    @property
    def undecoded(self) -> int:
        return self.undecoded_before + (self.decoder.undecoded if self.decoder is not None else 0)

    def send(self, data: bytes) -> bool:
        """Write downlink bytes if connected; False when the device is not."""
        port = self._port
        if port is None or self.stats.state != "connected":
            return False
        try:
            port.write(data)
        except Exception:  # whatever a transport raises, the device did not take it
            return False
        return True

    def _set_state(self, state: str) -> None:
        self.stats.state = state
        self.changes.notify()

    async def run(self, token: CancellationToken) -> None:
        stats = self.stats
        delay = self._backoff_initial
        try:
            while not token.is_cancelled:
                self._set_state("connecting")
                port = await self._connect(token)
                if port is not None:
                    if stats.connects:
                        stats.reconnects += 1
                    stats.connects += 1
                    self._set_state("connected")
                    delay = self._backoff_initial
                    await self._read_until_closed(port, token)
                if token.is_cancelled:
                    break
                # a failed open, or a device that connects and dies at once: wait, never spin
                self._set_state("backoff")
                await token.run_until_cancelled(asyncio.sleep(delay))
                delay = min(delay * 2, self._backoff_max)
        finally:
            self._set_state("closed")

    async def _connect(self, token: CancellationToken) -> Port | None:
        try:
            url = await self._resolve()
            self.url = url
        except Exception as exc:  # any failure to find the port: backoff, never a dead reader
            self._note_error(exc)
            return None
        opening = asyncio.ensure_future(self._open(url, self._baudrate))
        stop = asyncio.ensure_future(token.cancelled())
        try:
            await asyncio.wait({opening, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()  # also when this task itself is cancelled: no waiter left on the token
        if not opening.done():
            # cancelled while an executor thread is opening: close it when it lands
            opening.add_done_callback(self._close_when_opened)
            return None
        try:
            port = opening.result()
        except Exception as exc:  # PortClosed, OSError, or a transport's bug: backoff and retry
            self._note_error(exc)
            return None
        if token.is_cancelled:
            await port.close()
            return None
        return port

    def _note_error(self, exc: BaseException) -> None:
        expected = isinstance(exc, (PortClosed, OSError, LookupError))
        # an unexpected exception is named, so last_error says what failed
        text = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        if text != self.stats.last_error:  # log a change, not every retry
            # the traceback of an unexpected one is what its bug report needs
            log.warning("%s: %s", self.name, text, exc_info=None if expected else exc)
        self.stats.last_error = text

    async def _read_until_closed(self, port: Port, token: CancellationToken) -> None:
        """Read until the port fails or the token is cancelled (which closes it)."""
        self._port = port
        stats, codec, offer, name, process = self.stats, self.codec, self._agg.offer, self.name, self._process
        decode = self.decoder.decode if self.decoder is not None else None
        offer_nowait = self._agg.offer_nowait
        notify = self.changes.notify
        gate = self._agg.read_gate
        closer = asyncio.ensure_future(self._close_on_cancel(port, token))
        try:
            while True:
                if gate.closed:
                    await gate.wait()  # the flusher is catching up (bounded wait)
                try:
                    data = await port.read()
                except Exception as exc:
                    # not only PortClosed/OSError: whatever a transport raises
                    # is a read error (backoff, reconnect), never a dead reader
                    if not token.is_cancelled:
                        self._note_error(exc)
                    break
                stats.bytes += len(data)
                now = time.time()
                stats.last_rx = time.monotonic()
                if self.recorder is not None:
                    self.recorder.put(data, stats.last_rx)
                try:
                    frames = codec.feed(data, now)
                except Exception:  # a plugin codec's bug: the input counts as rejected
                    log.exception("%s: codec %s failed; input counted as rejected", name, codec.name)
                    codec.reset()
                    codec.rejected += 1
                    frames = []
                notify()
                if frames:
                    if decode is not None:  # before processors: they may filter on values
                        decode(frames)
                    if process is not None:
                        before = len(frames)
                        frames = process(frames)
                        stats.filtered += before - len(frames)
                    # one message per read, sent without a coroutine unless the inbox is full
                    if frames and not offer_nowait(name, frames):
                        await offer(name, frames)
        finally:
            self._port = None
            closer.cancel()
            codec.reset()
            try:
                await port.close()
            except Exception as exc:  # a transport failing to close must not end the reader
                if not token.is_cancelled:
                    self._note_error(exc)

    def _close_when_opened(self, opening: asyncio.Future[Port]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            closing = asyncio.ensure_future(opening.result().close())
            # kept so the task is not garbage-collected half way
            self._late_closes.add(closing)
            closing.add_done_callback(self._late_closes.discard)

    @staticmethod
    async def _close_on_cancel(port: Port, token: CancellationToken) -> None:
        await token.cancelled()
        await port.close()


def fixed_url(url: str) -> UrlResolver:
    async def resolve() -> str:
        return url

    return resolve


def apply_processors(processors: Sequence[Processor]) -> Processor | None:
    if not processors:
        return None
    if len(processors) == 1:
        return processors[0]

    def chain(frames: list[Frame]) -> list[Frame]:
        for p in processors:
            frames = p(frames)
            if not frames:
                break
        return frames

    return chain
