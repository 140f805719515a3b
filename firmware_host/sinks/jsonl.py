"""The ``jsonl`` sink: one JSON object per frame and line."""

from __future__ import annotations

import binascii
import json
import logging
import os
import stat
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any

from firmware_host.frames import Frame
from firmware_host.sinks.base import Sink, take_options
from firmware_host.sinks.writer import WriterThread
from firmware_host.values.encode import fields_json

log = logging.getLogger("firmware_host.sinks.jsonl")

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
#: the same with decoded fields (made for a run only when one of its frames has them)
_FIELDS_RUN = b'{"device": %b, "seq": %%d, "type": %d, "ts": %b, "payload": "%%b", "fields": %%b}\n'
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


def _json_type(ftype: object) -> str:
    """A frame type that is not an int, as JSON: ``null``, a string, ``true``;
    what JSON cannot hold (a NaN, an object) as its text."""
    try:
        return json.dumps(ftype, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(str(ftype), ensure_ascii=False)


def encode_records(frames: Sequence[Frame]) -> bytes:
    """The jsonl lines for ``frames`` (the jsonl record in the README).

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
    with_fields: bytes | None = None  # the run's template with fields, once needed
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
            with_fields = None
        payload = f.payload
        # the slot, not the property: a frame's fields not read yet are written
        # from its values (``Frame.values.json``) without making the dict
        fields = f._fields
        values = f.values
        if payload is None:
            # what json.dumps(text, ensure_ascii=False) returns, without building an encoder per call
            text = encode_basestring(f.text if f.text is not None else "").encode("utf-8")
            record = _TEXT_LINE % (name, f.seq, ts_bytes, text)
        elif line is not None:
            if fields is None:
                if values is None:  # the common case: straight out
                    append(line % (f.seq, b64(payload, newline=False)))
                else:  # the same line, its fields added from the payload in one step
                    append(values.json_into(line % (f.seq, b64(payload, newline=False)), payload))
                continue
            if with_fields is None:
                with_fields = _FIELDS_RUN % (name.replace(b"%", b"%%"), ftype, ts_bytes)
            append(with_fields % (f.seq, b64(payload, newline=False), fields_json(fields)))
            continue
        else:  # not an fh1-style int type (a plugin codec's None, str, bool...): as JSON
            fields = f.fields
            record = (
                f'{{"device": {name.decode()}, "seq": {f.seq}, "type": {_json_type(ftype)}, '
                f'"ts": {ts:.6f}, "payload": "{b64(payload, newline=False).decode("ascii")}"}}\n'.encode()
            )
        append(record if fields is None else record[:-2] + b', "fields": ' + fields_json(fields) + b"}\n")
    return b"".join(out)


class NotARegularFile(OSError):
    """The jsonl path names a FIFO, a device or a directory."""


class JsonlSink(Sink):
    """Appends whole lines; writes and fsyncs run in the sink's writer thread.

    The file is a raw descriptor opened ``O_APPEND``: one ``os.write`` per
    batch, no buffered file object whose lock a stuck writer thread would
    hold at interpreter exit. Before each batch the path is checked against
    the open file (one ``os.stat``): a file deleted or renamed away (log
    rotation) is noticed and the path reopened, so frames never go on into
    an unlinked inode.
    """

    name = "jsonl"

    def __init__(self, **options: Any) -> None:
        opts = take_options("jsonl", options, {"path": (str, ...), "fsync": (bool, False)})
        self.path: str = opts["path"]
        self.fsync: bool = opts["fsync"]
        self._fd: int | None = None
        #: (st_dev, st_ino) of the open file, to tell whether the path still names it
        self._ident: tuple[int, int] = (0, 0)
        #: set by ``reopen`` (SIGHUP); the writer thread honours it before its next batch
        self._reopen_wanted = False
        self._closed = True  # until open, and after close
        self.reopens = 0
        # one thread of its own: a write that a deadline gave up on keeps
        # running, and the next write is refused until it returns
        self._writer = WriterThread("jsonl")

    async def open(self) -> None:
        await self._writer.run(self._open)
        self._closed = False

    def _open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        # a FIFO would block open() until a reader comes (and repair_tail
        # would read it): look first, and open non-blocking to close the race
        try:
            _check_regular(self.path, os.stat(self.path))
        except FileNotFoundError:
            pass
        repair_tail(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        try:
            st = os.fstat(fd)
            _check_regular(self.path, st)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)

    async def reopen(self) -> None:
        self._reopen_wanted = True

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ident

    def _reopen(self) -> None:
        self._reopen_wanted = False
        old, self._fd = self._fd, None
        if old is not None:
            os.close(old)
        self._open()
        self.reopens += 1

    async def write(self, frames: Sequence[Frame]) -> None:
        if self._closed:
            raise RuntimeError("jsonl sink is not open")
        if len(frames) <= ENCODE_ON_LOOP_MAX:
            # formatting is pure CPU: doing it here spares a thread the GIL
            # ping-pong with the loop; only the file I/O goes to the thread
            await self._writer.run(self._write_bytes, encode_records(frames))
        else:  # a huge batch would stall the loop for too long
            await self._writer.run(self._write, frames)

    def _write(self, frames: Sequence[Frame]) -> None:
        self._write_bytes(encode_records(frames))

    def _write_bytes(self, data: bytes) -> None:
        if self._reopen_wanted or self._fd is None or self._moved():
            self._reopen()
        fd = self._fd
        assert fd is not None
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # one write per batch, but a short write must not cut a line
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except OSError:
            # disk full or similar: take back the partial batch so the retry
            # does not leave a torn line in the middle of the file
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise

    async def close(self) -> None:
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._writer.busy:
                # a write the flusher gave up on still holds the descriptor:
                # closing it under that thread could let a new file reuse its
                # number mid-write; the process exit closes it instead
                log.warning("jsonl %s: a write is still in progress; the file is left open", self.path)
            else:
                await self._writer.run(os.close, fd)
        self._writer.stop()


def _check_regular(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a file"
        raise NotARegularFile(f"{path} is {kind}, not a regular file (a jsonl sink appends to a file)")
