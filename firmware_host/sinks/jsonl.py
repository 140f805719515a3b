"""The ``jsonl`` sink: one JSON object per frame and line."""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import json
import os
from collections.abc import Sequence
from typing import Any, BinaryIO

from firmware_host.frames import Frame
from firmware_host.sinks.base import Sink, take_options

_TAIL_CHUNK = 1 << 16
#: batches up to this many frames are formatted on the event loop (under 1 ms
#: per 1000 frames); bigger ones in the executor with the write. Formatting in
#: executor threads also grew RSS by ~8 MB (glibc gives each thread its own
#: malloc arena, each kept at its peak): 43 MB vs 36 MB in the 10x overload bench.
ENCODE_ON_LOOP_MAX = 10000


def repair_tail(path: str) -> int:
    """Cut a half-written last line left by a crash; return the bytes removed.

    Appending after a torn line would glue two records into one that no JSON
    reader can parse, so the torn one goes (its frames were never acked, so
    they are still in the buffer or counted lost).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                f.truncate(keep)
                return size - keep
            end = start
        f.truncate(0)
        return size


#: one line of a binary frame, as a template for a run of frames of one device,
#: receive time and type (one read's): only seq and payload left to fill in
_PAYLOAD_RUN = b'{"device": %b, "seq": %%d, "type": %d, "ts": %b, "payload": "%%b"}\n'
_TEXT_LINE = b'{"device": %b, "seq": %d, "type": null, "ts": %b, "text": %b}\n'


#: device name -> its JSON string as bytes; device names are few, the bound
#: only guards against a plugin inventing a new name per frame
_NAMES: dict[str, bytes] = {}
_NAMES_MAX = 4096


def _json_name(device: str) -> bytes:
    name = _NAMES.get(device)
    if name is None:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        name = _NAMES[device] = json.dumps(device).encode("utf-8")
    return name


def encode_records(frames: Sequence[Frame]) -> bytes:
    """The jsonl lines for ``frames`` (design.md, "Sinks").

    Built as bytes with C-level %-formatting. The frames of one read share
    their device, their ``ts`` object and most often their type, so those are
    formatted once per run of such frames into a template (found by identity
    checks), and each frame formats only its seq and payload: 5,700 -> 4,500
    instructions per frame (callgrind), most of the rest being base64.
    """
    b64 = binascii.b2a_base64
    out: list[bytes] = []
    append = out.append
    last_ts: object = None
    last_device: object = None
    last_type: object = None
    line: bytes | None = None  # the run's template; None: its type is not an int
    ts_bytes = name = b""
    for f in frames:
        ts = f.ts
        device = f.device
        ftype = f.type
        # identity: the frames of one read share these objects (types 0..255
        # are cached ints); an equal but distinct one only costs a new template
        if ts is not last_ts or device is not last_device or ftype is not last_type:
            last_ts, last_device, last_type = ts, device, ftype
            ts_bytes = b"%.6f" % ts
            name = _json_name(device)
            # a '%' in a device name must not become a conversion of the template
            line = _PAYLOAD_RUN % (name.replace(b"%", b"%%"), ftype, ts_bytes) if ftype.__class__ is int else None
        payload = f.payload
        if payload is None:
            text = json.dumps(f.text if f.text is not None else "", ensure_ascii=False).encode("utf-8")
            append(_TEXT_LINE % (name, f.seq, ts_bytes, text))
        elif line is not None:
            append(line % (f.seq, b64(payload, newline=False)))
        else:  # not an fh1-style int type: spell it as before
            append(
                f'{{"device": {name.decode()}, "seq": {f.seq}, "type": {ftype}, '
                f'"ts": {ts:.6f}, "payload": "{b64(payload, newline=False).decode("ascii")}"}}\n'.encode()
            )
    return b"".join(out)


class JsonlSink(Sink):
    """Appends whole lines; writes and fsyncs run in an executor."""

    name = "jsonl"

    def __init__(self, **options: Any) -> None:
        opts = take_options("jsonl", options, {"path": (str, ...), "fsync": (bool, False)})
        self.path: str = opts["path"]
        self.fsync: bool = opts["fsync"]
        self._file: BinaryIO | None = None
        # one thread of its own: a write that a deadline gave up on keeps
        # running, and the retry must queue behind it, not race it on the file
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jsonl")

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._file = await loop.run_in_executor(self._executor, self._open)

    def _open(self) -> BinaryIO:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        repair_tail(self.path)
        return open(self.path, "ab")

    async def write(self, frames: Sequence[Frame]) -> None:
        if self._file is None:
            raise RuntimeError("jsonl sink is not open")
        loop = asyncio.get_running_loop()
        if len(frames) <= ENCODE_ON_LOOP_MAX:
            # formatting is pure CPU: doing it here spares a thread the GIL
            # ping-pong with the loop; only the file I/O goes to the executor
            await loop.run_in_executor(self._executor, self._write_bytes, encode_records(frames))
        else:  # a huge batch would stall the loop for too long
            await loop.run_in_executor(self._executor, self._write, frames)

    def _write(self, frames: Sequence[Frame]) -> None:
        self._write_bytes(encode_records(frames))

    def _write_bytes(self, data: bytes) -> None:
        f = self._file
        assert f is not None
        start = f.tell()
        try:
            f.write(data)  # one write per batch: whole lines only
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        except OSError:
            # disk full or similar: take back the partial batch so the retry
            # does not leave a torn line in the middle of the file
            try:
                f.truncate(start)
                f.seek(start)
            except OSError:
                pass
            raise

    async def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            await asyncio.get_running_loop().run_in_executor(self._executor, f.close)
        self._executor.shutdown(wait=False)
