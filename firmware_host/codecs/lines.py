"""``lines``: newline-delimited text, plus the line framing shared with ``nmea``.

Lines end with ``\\n``; one trailing ``\\r`` is stripped. Empty lines are
ignored. A line longer than ``max_line`` bytes counts one ``rejected`` and
decoding resumes after the next ``\\n``; the pending partial line is bounded
by ``max_line + 1`` bytes (room for the ``\\r``), so memory never grows with
the input. Seq is assigned by the host, per codec instance, from 0, and
survives :meth:`reset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from firmware_host.codecs.base import DelimitedCodec
from firmware_host.errors import CodecOptionError
from firmware_host.frames import Frame

__all__ = ["DEFAULT_MAX_LINE", "MAX_LINE_LIMIT", "LinesCodec"]

DEFAULT_MAX_LINE = 4096
# Sanity ceiling for the option: the pending buffer is sized from it.
MAX_LINE_LIMIT = 1 << 20

_NL = b"\n"
_CR = b"\r"


class _LineFramedCodec(DelimitedCodec):
    """Splits input into ``\\n``-terminated lines, bounded; subclasses judge lines."""

    options: ClassVar[Mapping[str, type] | None] = {"max_line": int}
    default_max_line: ClassVar[int] = DEFAULT_MAX_LINE

    def __init__(self, device: str = "", *, max_line: int | None = None) -> None:
        if max_line is None:
            max_line = self.default_max_line
        if not isinstance(max_line, int) or isinstance(max_line, bool) or not 0 < max_line <= MAX_LINE_LIMIT:
            raise CodecOptionError(
                f"codec {self.name!r} option 'max_line' must be an int in 1..{MAX_LINE_LIMIT}, got {max_line!r}"
            )
        self.max_line = max_line
        super().__init__(device, max_line + 1)  # a pending line is at most max_line plus a \r
        #: next host-assigned seq
        self.seq = 0

    def feed(self, data: bytes, ts: float) -> list[Frame]:
        frames: list[Frame] = []
        if not data:
            return frames
        start = self._start(data, _NL)
        if start < 0:
            return frames
        if data.find(_NL, start) < 0:
            self._hold(data, start)
            return frames
        buf = data[start:] if start else data
        if self._pending:
            # Bounded by pending_limit, so this copy is at most one read + one line.
            buf = self._pending + buf
            self._pending = b""
        lines = buf.split(_NL)
        tail = lines.pop()
        self._take(lines, ts, frames)
        if tail:
            self._hold(tail, 0)
        return frames

    def _take(self, lines: list[bytes], ts: float, frames: list[Frame]) -> None:
        """Judge complete lines (terminator removed, ``\\r`` not yet stripped)."""
        raise NotImplementedError

    def reset(self) -> None:
        # A partial line that would be empty once its \r is stripped is not
        # input that failed to decode (a terminated one would be ignored too).
        pending = self._pending
        if pending and pending != _CR:
            self.rejected += 1
        self._pending = b""
        # A new connection starts clean; an oversize run was already counted.
        self._skipping = False


class LinesCodec(_LineFramedCodec):
    """Newline-delimited UTF-8 text; ``Frame.text`` is the line without terminator.

    Invalid UTF-8 is decoded with ``errors="replace"`` (U+FFFD) and still
    counts as a frame, not as ``rejected``: a text console that prints a
    stray byte (baud glitch, binary boot banner) should not lose the line.
    Only oversize lines are rejected.
    """

    name: ClassVar[str] = "lines"
    text: ClassVar[bool] = True
    default_max_line: ClassVar[int] = DEFAULT_MAX_LINE

    def _take(self, lines: list[bytes], ts: float, frames: list[Frame]) -> None:
        max_line = self.max_line
        device = self.device
        seq = self.seq
        append = frames.append
        for line in lines:
            if line.endswith(_CR):
                line = line[:-1]
            if not line:
                continue
            if len(line) > max_line:
                self.rejected += 1
                continue
            append(Frame(device, seq, None, ts, None, line.decode("utf-8", "replace")))
            seq += 1
        self.seq = seq

    def encode(self, frame_type: int | None, seq: int, body: bytes | str) -> bytes:
        """``body + b"\\n"``; ``frame_type`` and ``seq`` are ignored (host seq).

        A ``str`` body is UTF-8 encoded. Raises ValueError if the body holds a
        ``\\n`` (it would become two lines) or is longer than ``max_line``.
        """
        if isinstance(body, str):
            body = body.encode("utf-8")
        body = bytes(body)
        if _NL in body:
            raise ValueError("a line must not contain '\\n'")
        if len(body) > self.max_line:
            raise ValueError(f"line of {len(body)} bytes exceeds max_line {self.max_line}")
        return body + _NL
