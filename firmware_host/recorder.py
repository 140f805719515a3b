"""Recording a device's raw bytes: bounded, lossy subscriptions to what its
reader receives, and the writers that drain one.

A reader hands each read's bytes to its :class:`RawTap` only while someone
records (``UplinkReader.recorder`` is None otherwise: one ``is None`` test
per read). Each :class:`RawSubscription` holds at most ``limit`` bytes; a
writer that cannot keep up (a slow disk, a client that does not read) makes
it drop the newest reads, counted, and a ``LOSS`` record marks the hole in
the file at the place it happened. Nothing a writer does can slow or block the
reader. Two writers: :class:`FileRecorder` (a file, written by a thread of
its own) and :func:`send_recording` (a control client's socket). The file
format is firmware_host.recordfile's (docs/recording.md).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Protocol

from firmware_host._sync import wait_set
from firmware_host.recordfile import Header, encode_data, encode_end, encode_header, encode_loss

__all__ = [
    "DEFAULT_BUFFER",
    "MAX_BUFFER",
    "MIN_BUFFER",
    "FileRecorder",
    "RawSubscription",
    "RawTap",
    "Recordable",
    "send_recording",
    "until_eof",
]

#: bytes a recording may hold for a writer that falls behind, by default and at the most and least
DEFAULT_BUFFER = 1024 * 1024
MIN_BUFFER = 4096
MAX_BUFFER = 64 * 1024 * 1024
#: what one held read costs beyond its bytes (the Python objects), counted against the buffer
CHUNK_COST = 64
#: seconds a writer waits for reads before it looks again (nothing waits without a deadline)
WAIT = 5.0


class _Loss:
    """A run of reads dropped in a row: one LOSS record."""

    __slots__ = ("chunks", "nbytes", "t_us")

    def __init__(self, t_us: int) -> None:
        self.t_us = t_us
        self.chunks = 0
        self.nbytes = 0


class RawSubscription:
    """One recording's bounded view of a device's reads from now on.

    ``put`` is the reader's side (on the loop, never waits); ``take``,
    ``wait`` and ``end_record`` the writer's. Counts: every read put is
    either ``chunks`` (kept) or ``lost_chunks``.
    """

    def __init__(self, tap: RawTap | None, header: Header, limit: int = DEFAULT_BUFFER) -> None:
        if not MIN_BUFFER <= limit <= MAX_BUFFER:
            raise ValueError(f"a recording buffer is {MIN_BUFFER} to {MAX_BUFFER} bytes, not {limit}")
        self._tap = tap
        self.header = header
        self.limit = limit
        #: time.monotonic() of header.started: receive offsets count from here
        self.t0 = time.monotonic()
        self._held: collections.deque[tuple[int, bytes] | _Loss] = collections.deque()
        self._held_bytes = 0
        self._ready = asyncio.Event()
        self.chunks = 0
        self.nbytes = 0
        self.lost_chunks = 0
        self.lost_bytes = 0
        #: why no more reads come (None while recording)
        self.reason: str | None = None

    @property
    def closed(self) -> bool:
        return self.reason is not None

    def offset(self, rx: float) -> int:
        """Microseconds from the start to monotonic time ``rx``."""
        return max(0, round((rx - self.t0) * 1e6))

    def put(self, data: bytes, rx: float) -> None:
        """One read's bytes, received at monotonic time ``rx``."""
        if self.reason is not None:
            return
        held = self._held
        cost = len(data) + CHUNK_COST
        # one read is always taken when nothing is held: a tty read (up to 64 KiB) may be
        # bigger than the smallest buffer, and would otherwise never be kept
        if held and self._held_bytes + cost > self.limit:
            last = held[-1] if held else None
            if not isinstance(last, _Loss):
                last = _Loss(self.offset(rx))
                held.append(last)
            last.chunks += 1
            last.nbytes += len(data)
            self.lost_chunks += 1
            self.lost_bytes += len(data)
        else:
            held.append((self.offset(rx), data))
            self._held_bytes += cost
            self.chunks += 1
            self.nbytes += len(data)
        self._ready.set()

    def take(self) -> bytes:
        """Every record held (DATA and LOSS), encoded, oldest first; b"" if none."""
        held = self._held
        out = []
        while held:
            item = held.popleft()
            if isinstance(item, _Loss):
                out.append(encode_loss(item.t_us, item.chunks, item.nbytes))
            else:
                out.append(encode_data(*item))
        self._held_bytes = 0
        self._ready.clear()
        return b"".join(out)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for reads (or the end); False when none came."""
        if self._held or self.reason is not None:
            return True
        return await wait_set(self._ready, timeout)

    def header_bytes(self) -> bytes:
        return encode_header(self.header)

    def counts(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "bytes": self.nbytes,
            "lost_chunks": self.lost_chunks,
            "lost_bytes": self.lost_bytes,
        }

    def end_record(self) -> bytes:
        """The END record: why it ended, and the counts."""
        return encode_end(self.offset(time.monotonic()), {"reason": self.reason or "stopped", **self.counts()})

    def close(self, reason: str = "stopped") -> None:
        """No more reads; a waiting writer wakes. The first reason stays."""
        if self.reason is None:
            self.reason = reason
            if self._tap is not None:
                self._tap.unsubscribe(self)
            self._ready.set()


class Recordable(Protocol):
    """The reader a tap feeds (``UplinkReader``): it calls ``recorder.put`` per read while set."""

    recorder: RawTap | None


class RawTap:
    """The recordings of one device's reader: attached to it only while there is one."""

    __slots__ = ("_reader", "subscribers")

    def __init__(self, reader: Recordable) -> None:
        self._reader = reader
        self.subscribers: list[RawSubscription] = []

    def put(self, data: bytes, rx: float) -> None:
        for sub in self.subscribers:
            sub.put(data, rx)

    def subscribe(self, header: Header, limit: int = DEFAULT_BUFFER) -> RawSubscription:
        sub = RawSubscription(self, header, limit)
        self.subscribers.append(sub)
        self._reader.recorder = self
        return sub

    def unsubscribe(self, sub: RawSubscription) -> None:
        try:
            self.subscribers.remove(sub)
        except ValueError:
            return
        if not self.subscribers:
            self._reader.recorder = None  # the reader is back to one None test per read

    def close_all(self, reason: str) -> None:
        for sub in list(self.subscribers):
            sub.close(reason)


# -- writers ----------------------------------------------------------------------------


class FileRecorder:
    """Drains a subscription into a file, written by a thread of its own (the
    loop never waits on the disk; while a write is slow, the subscription's
    bound applies and reads are lost, counted: memory holds at most its
    ``limit`` waiting plus the one batch being written). Runs until the
    subscription is closed, then writes the END record. A failed write ends
    the recording (``error`` says why)."""

    def __init__(self, path: str, sub: RawSubscription) -> None:
        self.path = path
        self.sub = sub
        self.error: str | None = None
        #: bytes written to the file
        self.written = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fh-record")
        sub = self.sub
        f: BinaryIO | None = None
        try:
            # unbuffered: each batch is one write(2), so a power cut loses at most the last one
            f = await loop.run_in_executor(pool, open, self.path, "wb", 0)
            await self._write(loop, pool, f, sub.header_bytes())
            while True:
                closed = sub.closed  # before the take: nothing arrives after a close
                data = sub.take()
                if data:
                    await self._write(loop, pool, f, data)
                if closed:
                    await self._write(loop, pool, f, sub.end_record())
                    return
                if not data:
                    await sub.wait(WAIT)
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror or exc}"
            sub.close(f"write failed: {exc.strerror or exc}")
        finally:
            if f is not None:
                await loop.run_in_executor(pool, f.close)
            pool.shutdown(wait=False)

    async def _write(self, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor, f: BinaryIO, data: bytes) -> None:
        await loop.run_in_executor(pool, _write_all, f, data)
        self.written += len(data)


def _write_all(f: BinaryIO, data: bytes) -> None:
    """Every byte of ``data`` (the file is unbuffered: one write may take part of it)."""
    view = memoryview(data)
    while view:
        n = f.write(view)
        if not n:  # (a raw file's write returns None only when non-blocking)
            raise OSError(f"the write took nothing ({n!r})")
        view = view[n:]


async def send_recording(
    sub: RawSubscription, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_timeout: float
) -> None:
    """Stream ``sub`` to a control client as the bytes of a recording file
    (header line, records, and the END record when the device's reader
    ends). A client that does not read for ``idle_timeout`` s, or that
    closes its side, ends it; meanwhile the subscription's bound applies."""
    gone = asyncio.ensure_future(until_eof(reader))
    try:
        writer.write(sub.header_bytes())
        while True:
            closed = sub.closed
            data = sub.take()
            if data:
                writer.write(data)
                # bounded: a client that stops reading must not pin us
                await asyncio.wait_for(writer.drain(), idle_timeout)
            if closed:
                writer.write(sub.end_record())
                await asyncio.wait_for(writer.drain(), idle_timeout)
                return
            if gone.done():
                return
            if not data:
                ready = asyncio.ensure_future(sub.wait(WAIT))
                await asyncio.wait((ready, gone), return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
    except asyncio.CancelledError:
        # the server is closing (the runtime stops): what is held and the end
        # are left in the transport to go out as it closes; no waiting here
        sub.close("the runtime stopped")
        if not writer.is_closing():
            writer.write(sub.take() + sub.end_record())
        raise
    except TimeoutError:
        # a client that stopped reading: drop what waits for it now (as tail does),
        # not when it reads again
        writer.transport.abort()
    except (ConnectionError, OSError):
        return  # the client left
    finally:
        gone.cancel()
        sub.close("the client left")


async def until_eof(reader: asyncio.StreamReader) -> None:
    """Return when the client closes its side; what it sends meanwhile is discarded."""
    try:
        while await reader.read(4096):
            pass
    except (ConnectionError, OSError, ValueError):
        pass
