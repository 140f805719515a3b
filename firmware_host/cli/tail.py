"""``firmware-host tail``: frames of a running runtime as they arrive.

The runtime streams jsonl records over the control socket (docs/control.md,
``tail``). ``--json`` passes them through as they come; otherwise each is one
human line: time, device, seq, type, then the decoded fields, the text, or a
payload summary (``--hex``: every payload byte). A ``{"lost": N}`` line (the
runtime dropped frames this client was too slow to take) is said on stderr.
Ctrl-C and a reader of stdout that left end it quietly, exit 0.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any, BinaryIO, TextIO

from firmware_host.cli.brokenpipe import reader_left, stdout_reader_gone
from firmware_host.control.client import ControlStream

__all__ = ["follow", "render_record"]

EXIT_OK, EXIT_FAILURE = 0, 1
#: seconds between looks at stdout's reader while no frame comes
IDLE_LOOK = 1.0
#: payload bytes a summary shows (``--hex``: all)
PREVIEW = 16

_LOST, _END = b'{"lost":', b'{"end":'


def follow(stream: ControlStream, *, as_json: bool, as_hex: bool, out: BinaryIO, err: TextIO) -> int:
    """Print the stream until it ends; the exit status. Ctrl-C is the caller's."""
    ended = False
    for block in stream.blocks(IDLE_LOOK):
        if block is None:
            # a silent stream: the only moment to notice that `| head` left
            if stdout_reader_gone():
                reader_left()
            continue
        if as_json:
            out.write(block)
        if not as_json or _LOST in block or _END in block:
            lines = block.split(b"\n")[:-1]
            text: list[str] = []
            for line in lines:
                if line.startswith(_LOST):
                    _write(out, text)  # the frames before the loss first, then the note
                    text = []
                    out.flush()
                    err.write(f"… {_count(line)} frames not shown (too slow)\n")
                    err.flush()
                elif line.startswith(_END):
                    ended = True
                elif not as_json:
                    text.append(render_record(line, as_hex))
            _write(out, text)
        out.flush()
    if ended:
        err.write("firmware-host: tail: the runtime stopped\n")
        return EXIT_OK
    err.write(f"firmware-host: tail: the runtime on {stream.path} closed the connection\n")
    return EXIT_FAILURE


def _write(out: BinaryIO, text: list[str]) -> None:
    if text:
        out.write(("\n".join(text) + "\n").encode("utf-8", "replace"))


def _count(line: bytes) -> int:
    try:
        value = json.loads(line)["lost"]
    except (ValueError, KeyError, TypeError):
        return 0
    return value if isinstance(value, int) else 0


def render_record(line: bytes, as_hex: bool = False) -> str:
    """One jsonl record as a human line (anything else: the line, escaped)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return _printable(line.decode("utf-8", "replace"))
    if not isinstance(rec, dict):
        return _printable(line.decode("utf-8", "replace"))
    ts = rec.get("ts")
    clock = (
        time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
        if isinstance(ts, (int, float)) and math.isfinite(ts)
        else "--:--:--.---"
    )
    head = [clock, _printable(str(rec.get("device", "?"))), f"seq {rec.get('seq', '?')}"]
    if rec.get("type") is not None:
        head.append(f"type {rec['type']}")
    parts: list[str] = []
    fields = rec.get("fields")
    if isinstance(fields, dict) and fields:
        parts.append(" ".join(f"{_printable(str(k))}={_value(v)}" for k, v in fields.items()))
    if isinstance(rec.get("text"), str):
        parts.append(_printable(rec["text"]))
    payload = _payload(rec.get("payload"))
    if payload is not None:
        if as_hex:
            parts.append(payload.hex(" ") if payload else "(empty)")
        elif not parts:
            more = "…" if len(payload) > PREVIEW else ""
            parts.append(f"{len(payload)} bytes {payload[:PREVIEW].hex(' ')}{more}".rstrip())
    return "  ".join(head + parts)


def _payload(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return _printable(v)
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_printable(str(k))}={_value(x)}" for k, x in v.items()) + "}"
    return "null" if v is None else str(v)


def _printable(text: str) -> str:
    """A device's text, safe for a terminal: control characters (an escape
    sequence a device sends) are shown escaped, never acted on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def tail_request(devices: Sequence[str]) -> dict[str, Any]:
    req: dict[str, Any] = {"cmd": "tail"}
    if devices:
        req["devices"] = list(devices)
    return req


def main_out() -> BinaryIO:
    """Standard output's bytes (the records pass through as the runtime wrote them)."""
    sys.stdout.flush()
    return sys.stdout.buffer
