"""The ``jsonl`` sink: one JSON object per frame and line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any, BinaryIO, Sequence

from ..frames import Frame
from .base import Sink, take_options

_TAIL_CHUNK = 1 << 16


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


def encode_records(frames: Sequence[Frame]) -> bytes:
    """The jsonl lines for ``frames`` (design.md, "Sinks")."""
    names: dict[str, str] = {}  # JSON-quoted device names, once per batch
    b64 = base64.b64encode
    dumps = json.dumps
    out: list[str] = []
    append = out.append
    for f in frames:
        dev = names.get(f.device)
        if dev is None:
            dev = names[f.device] = dumps(f.device)
        if f.payload is not None:
            append(f'{{"device": {dev}, "seq": {f.seq}, "type": {f.type}, "ts": {f.ts:.6f}, '
                   f'"payload": "{b64(f.payload).decode("ascii")}"}}\n')
        else:
            text = dumps(f.text if f.text is not None else "", ensure_ascii=False)
            append(f'{{"device": {dev}, "seq": {f.seq}, "type": null, "ts": {f.ts:.6f}, "text": {text}}}\n')
    return "".join(out).encode("utf-8")


class JsonlSink(Sink):
    """Appends whole lines; writes and fsyncs run in an executor."""

    name = "jsonl"

    def __init__(self, **options: Any) -> None:
        opts = take_options("jsonl", options, {"path": (str, ...), "fsync": (bool, False)})
        self.path: str = opts["path"]
        self.fsync: bool = opts["fsync"]
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._file = await loop.run_in_executor(None, self._open)

    def _open(self) -> BinaryIO:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        repair_tail(self.path)
        return open(self.path, "ab")

    async def write(self, frames: Sequence[Frame]) -> None:
        if self._file is None:
            raise RuntimeError("jsonl sink is not open")
        await asyncio.get_running_loop().run_in_executor(None, self._write, frames)

    def _write(self, frames: Sequence[Frame]) -> None:
        f = self._file
        assert f is not None
        data = encode_records(frames)
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
            await asyncio.get_running_loop().run_in_executor(None, f.close)
