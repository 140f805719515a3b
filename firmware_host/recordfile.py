"""The recording file format: a port's raw bytes with their receive times.

A recording (docs/recording.md) is one header line, then binary records::

    FHREC/1 {"device": "imu0", "port": "/dev/ttyACM0", "baudrate": 921600,
             "codec": "fh1", "codec_options": {}, "started": 1765000000.25, ...}\\n
    record: kind u8 | t_us u64 | length u32 | body (length bytes)   (little-endian)

``t_us`` is microseconds after ``started`` (the wall clock when recording
began; offsets come from a monotonic clock). Kinds: ``DATA`` (the bytes one
read returned), ``LOSS`` (a ``<QQ`` body: chunks and bytes the recorder had
to drop because its writer fell behind), ``END`` (a JSON body: why the
recording ended, and its counts). A reader skips kinds it does not know, so
later versions may add some. A file cut short (a power cut) ends in a partial
record: :func:`read_recording` keeps every whole one and says how many bytes
it ignored. Pure: no I/O beyond the one sync file read, nothing of the runtime.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DATA",
    "END",
    "LOSS",
    "MAGIC",
    "MAX_FILE",
    "MAX_HEADER",
    "MAX_RECORD",
    "VERSION",
    "Header",
    "Record",
    "RecordParser",
    "Recording",
    "RecordingError",
    "encode_data",
    "encode_end",
    "encode_header",
    "encode_loss",
    "encode_record",
    "loss_counts",
    "parse_header",
    "parse_recording",
    "read_recording",
]

MAGIC = b"FHREC/"
VERSION = 1
DATA, LOSS, END = 1, 2, 3
_HEAD = struct.Struct("<BQI")
_LOSS = struct.Struct("<QQ")
#: the longest header line a reader accepts, newline included
MAX_HEADER = 64 * 1024
#: the longest record body; a writer splits longer chunks
MAX_RECORD = 1024 * 1024
#: the largest file read back whole (a replay holds it in memory)
MAX_FILE = 1024**3
#: the memory a replay may hold for a recording's reads, each counted at its bytes plus READ_COST
MAX_HELD = MAX_FILE
#: a held read's own cost besides its bytes (its tuple, its time, its bytes object's header, the list
#: slot): 127 bytes a read measured (tracemalloc, 200,000 reads of 2 bytes)
READ_COST = 128
#: the largest receive offset a record may hold (about 584,000 years in µs)
_MAX_T = 2**64 - 1


class RecordingError(ValueError):
    """Not a recording, or a damaged one (one line)."""


@dataclass(frozen=True)
class Header:
    """What a recording says about its source."""

    device: str | None
    port: str | None
    baudrate: int | None
    codec: str | None
    codec_options: Mapping[str, int] = field(default_factory=dict)
    board: str | None = None
    #: wall-clock time (time.time()) the recording began
    started: float = 0.0
    #: "runtime" (through the control socket) or "port" (standalone)
    source: str = "port"

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "port": self.port,
            "baudrate": self.baudrate,
            "codec": self.codec,
            "codec_options": dict(self.codec_options),
            "board": self.board,
            "started": self.started,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, raw: object) -> Header:
        if not isinstance(raw, dict):
            raise RecordingError("bad recording header: not a JSON object")

        def opt(key: str, kind: type) -> Any:
            value = raw.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise RecordingError(f"bad recording header: {key!r} must be a {kind.__name__}")
            return value

        options = raw.get("codec_options") or {}
        if not isinstance(options, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in options.items()
        ):
            raise RecordingError("bad recording header: 'codec_options' must map names to whole numbers")
        started = raw.get("started", 0.0)
        if isinstance(started, bool) or not isinstance(started, (int, float)):
            raise RecordingError("bad recording header: 'started' must be a number")
        return cls(
            device=opt("device", str),
            port=opt("port", str),
            baudrate=opt("baudrate", int),
            codec=opt("codec", str),
            codec_options=options,
            board=opt("board", str),
            started=float(started),
            source=opt("source", str) or "port",
        )


@dataclass(frozen=True)
class Record:
    kind: int
    t_us: int
    body: bytes


def encode_header(header: Header) -> bytes:
    line = MAGIC + str(VERSION).encode() + b" " + json.dumps(header.to_dict(), separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_HEADER:
        raise RecordingError("recording header too long")
    return line


def _record(kind: int, t_us: int, body: bytes) -> bytes:
    return _HEAD.pack(kind, min(max(t_us, 0), _MAX_T), len(body)) + body


def encode_record(rec: Record) -> bytes:
    return _record(rec.kind, rec.t_us, rec.body)


def loss_counts(body: bytes) -> tuple[int, int]:
    """A LOSS record's (chunks, bytes); (0, 0) for a body of another size."""
    if len(body) != _LOSS.size:
        return 0, 0
    chunks, nbytes = _LOSS.unpack(body)
    return int(chunks), int(nbytes)


def encode_data(t_us: int, data: bytes) -> bytes:
    """One read's bytes as DATA records (more than one past MAX_RECORD)."""
    if len(data) <= MAX_RECORD:
        return _record(DATA, t_us, data)
    return b"".join(_record(DATA, t_us, data[i : i + MAX_RECORD]) for i in range(0, len(data), MAX_RECORD))


def encode_loss(t_us: int, chunks: int, nbytes: int) -> bytes:
    return _record(LOSS, t_us, _LOSS.pack(chunks, nbytes))


def encode_end(t_us: int, info: Mapping[str, Any]) -> bytes:
    return _record(END, t_us, json.dumps(dict(info), separators=(",", ":")).encode())


def parse_header(line: bytes) -> Header:
    """The header line (with or without its newline)."""
    if not line.startswith(MAGIC):
        raise RecordingError("not a firmware-host recording (no FHREC header)")
    version, sep, rest = line[len(MAGIC) :].partition(b" ")
    if not sep or not version.isdigit() or len(version) > 9:
        raise RecordingError("bad recording header: expected 'FHREC/<version> {json}'")
    if int(version) != VERSION:
        raise RecordingError(f"recording format version {int(version)} is not supported (this reads {VERSION})")
    try:
        raw = json.loads(rest)
    except (ValueError, RecursionError):
        raise RecordingError("bad recording header: not JSON") from None
    return Header.from_dict(raw)


class RecordParser:
    """Splits a recording's bytes into its header and whole records, fed in
    any pieces (a file read, a socket's chunks); holds a partial record
    (at most MAX_RECORD + 13 bytes) until the rest arrives."""

    def __init__(self) -> None:
        self.header: Header | None = None
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held: a partial header or record."""
        return len(self._buf)

    def feed(self, data: bytes) -> Iterator[Record]:
        """The records completed by ``data``; RecordingError for a damaged stream."""
        buf = self._buf
        buf += data
        if self.header is None:
            nl = buf.find(b"\n", 0, MAX_HEADER)
            if nl < 0:
                if len(buf) >= MAX_HEADER or (len(buf) >= len(MAGIC) and not buf.startswith(MAGIC)):
                    raise RecordingError("not a firmware-host recording (no FHREC header)")
                return
            self.header = parse_header(bytes(buf[:nl]))
            del buf[: nl + 1]
        pos = 0
        size = _HEAD.size
        while len(buf) - pos >= size:
            kind, t_us, length = _HEAD.unpack_from(buf, pos)
            if length > MAX_RECORD:
                raise RecordingError(f"damaged recording: a record of {length} bytes (at most {MAX_RECORD})")
            if len(buf) - pos - size < length:
                break
            body = bytes(buf[pos + size : pos + size + length])
            pos += size + length
            yield Record(kind, t_us, body)
        del buf[:pos]


@dataclass
class Recording:
    """A whole recording, read back."""

    header: Header
    #: (t_us, bytes) per DATA record, in file order
    chunks: list[tuple[int, bytes]]
    #: chunks and bytes the recorder dropped (LOSS records)
    lost_chunks: int = 0
    lost_bytes: int = 0
    #: the END record's body; None when the file has none (cut short, or a stream stopped hard)
    end: dict[str, Any] | None = None
    #: bytes of a partial last record that were ignored
    truncated: int = 0

    @property
    def nbytes(self) -> int:
        return sum(len(d) for _, d in self.chunks)

    def notes(self) -> list[str]:
        """One line per thing a replay should say about this recording."""
        out = []
        if self.truncated:
            out.append(f"the recording is cut short: its last {self.truncated} bytes (a partial record) are ignored")
        if self.lost_chunks:
            out.append(
                f"the recorder lost {self.lost_chunks} reads ({self.lost_bytes} bytes) while recording: "
                "the stream has holes there"
            )
        return out


def parse_recording(data: bytes) -> Recording:
    """A recording from its bytes; RecordingError if it is not one."""
    parser = RecordParser()
    chunks: list[tuple[int, bytes]] = []
    lost_chunks = lost_bytes = 0
    end: dict[str, Any] | None = None
    held = 0
    for rec in parser.feed(data):
        if rec.kind == DATA:
            if not rec.body:
                continue  # nothing to play: an empty read costs a tuple and a list slot, not a byte
            # what a read costs in memory, not only its bytes: a file of tiny reads would
            # otherwise take about 7.5 times its size (4 million empty reads: 388 MB)
            held += len(rec.body) + READ_COST
            if held > MAX_HELD:
                raise RecordingError(
                    f"read {len(chunks) + 1} of the recording takes it over {MAX_HELD // 1024**2} MiB "
                    f"of memory to replay (its reads cost {READ_COST} bytes each besides their own)"
                )
            chunks.append((rec.t_us, rec.body))
        elif rec.kind == LOSS:
            n, b = loss_counts(rec.body)
            lost_chunks += n
            lost_bytes += b
        elif rec.kind == END:
            try:
                got = json.loads(rec.body)
            except ValueError:
                got = None
            end = got if isinstance(got, dict) else {}
    if parser.header is None:
        raise RecordingError("not a firmware-host recording (no FHREC header)")
    return Recording(parser.header, chunks, lost_chunks, lost_bytes, end, parser.pending)


def read_recording(path: str) -> Recording:
    """Read a recording file (sync: call it off the event loop). RecordingError
    or OSError, both one line."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE:
            raise RecordingError(f"{path}: {size} bytes is too large to replay (at most {MAX_FILE})")
        data = f.read(MAX_FILE + 1)
    return parse_recording(data)
