"""The control protocol: JSON lines over a Unix socket, one request object
per line and exactly one reply object per line (docs/control.md).

What both ends agree on lives here: the bounds, the reply shapes, and the
checks of a request's arguments. It imports nothing of the runtime.
"""

from __future__ import annotations

import json
from typing import Any

from firmware_host.errors import EXIT_USAGE, one_line

#: longest request line in bytes, not counting its newline; longer ones are refused
MAX_REQUEST = 64 * 1024
#: concurrent connections; one more gets an error reply and is closed
MAX_CONNECTIONS = 64
#: of those, how many may be streams (tail, record): the rest stay free for one-shot commands
#: such as stop and status, which a screen of tails must never lock out
MAX_STREAMS = 48
#: seconds a connection may sit without sending a request (or reading a reply)
IDLE_TIMEOUT = 30.0
#: seconds a refused connection is drained before it is closed (see ``_linger``)
LINGER = 1.0
#: longest reply the client accepts (status of a big fleet is a few hundred KiB)
MAX_REPLY = 16 * 1024 * 1024
#: default and ceiling for a flush request's own timeout, seconds
FLUSH_TIMEOUT = 30.0
MAX_FLUSH_TIMEOUT = 24 * 3600.0
#: ``tail``: frames a subscriber holds for its client by default and at most (a
#: slow client loses the oldest beyond it), and how many devices it may name
TAIL_LIMIT = 10_000
MAX_TAIL_LIMIT = 100_000
MAX_TAIL_DEVICES = 1024


class RequestError(Exception):
    """Raised by a handler: becomes ``{"ok": false, "error": message, "code": code}``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def error_reply(message: str, code: int = EXIT_USAGE) -> dict[str, Any]:
    return {"ok": False, "error": one_line(message), "code": code}


def encode_reply(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":"), default=str).encode() + b"\n"


# -- argument checks ---------------------------------------------------------------------


def only(req: dict[str, Any], *allowed: str) -> None:
    # strict on purpose: a typo like "devcie" must not silently flush everything
    extra = sorted(k for k in req if k != "cmd" and k not in allowed)
    if extra:
        cmd = req["cmd"]
        takes = ", ".join(allowed) or "no arguments"
        raise RequestError(f"{cmd}: unknown argument {extra[0]!r} (it takes: {takes})")


def str_arg(req: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = req.get(key)
    if value is None:
        if required:
            raise RequestError(f"{req['cmd']}: missing {key!r}")
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise RequestError(f"{req['cmd']}: {key!r} must be a non-empty string")
    return value


def limit_arg(req: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    """A count in ``[low, high]``, or ``default`` when absent (or null)."""
    value = req.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{req['cmd']}: {key!r} must be a whole number from {low} to {high}")
    return value


def device_names(req: dict[str, Any], key: str = "devices", *, most: int = MAX_TAIL_DEVICES) -> list[str] | None:
    """An optional non-empty list of device names (each as ``device_name`` checks one)."""
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise RequestError(f"{req['cmd']}: {key!r} must be a non-empty list of device names")
    if len(value) > most:
        raise RequestError(f"{req['cmd']}: {key!r} names more than {most} devices")
    names = []
    for item in value:
        if not isinstance(item, str) or not item or "\x00" in item or len(item) > 256:
            raise RequestError(f"{req['cmd']}: {key!r} must hold device names (non-empty strings)")
        names.append(item)
    return names


def device_name(req: dict[str, Any], key: str = "name", *, required: bool = True) -> str | None:
    value = str_arg(req, key, required=required)
    if value is not None and len(value) > 256:
        raise RequestError(f"{req['cmd']}: {key!r} is too long")
    return value


#: the longest frame body ``send`` and ``request`` take (bytes; its hex is twice that)
MAX_BODY = 16 * 1024


def number_arg(req: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    """A number of seconds in ``(low, high]`` (``low`` excluded), or ``default`` when absent."""
    value = req.get(key, default)
    # isfinite() of an int beyond the float range raises OverflowError: compare by value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise RequestError(f"{req['cmd']}: {key!r} must be a number of seconds above {low:g} and at most {high:g}")
    return float(value)


def int_arg(req: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    """An int in ``[low, high]``, or ``default`` when absent (or null)."""
    value = req.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{req['cmd']}: {key!r} must be an integer from {low} to {high}")
    return value


def body_arg(req: dict[str, Any], *, max_bytes: int = MAX_BODY) -> bytes | str:
    """A frame body: ``hex`` (bytes) or ``text`` (a str, for the codec to encode), not both;
    empty when neither is given."""
    cmd = req["cmd"]
    hex_text, text = req.get("hex"), req.get("text")
    if hex_text is not None and text is not None:
        raise RequestError(f"{cmd}: give 'hex' or 'text', not both")
    if text is not None:
        if not isinstance(text, str) or "\x00" in text:
            raise RequestError(f"{cmd}: 'text' must be a string without NUL")
        if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise RequestError(f"{cmd}: 'text' is longer than {max_bytes} bytes")
        return text
    if hex_text is None:
        return b""
    if not isinstance(hex_text, str):
        raise RequestError(f"{cmd}: 'hex' must be a string of hex digits")
    if len(hex_text) > 3 * max_bytes:  # (spaces between bytes allowed)
        raise RequestError(f"{cmd}: 'hex' is longer than {max_bytes} bytes")
    try:
        body = bytes.fromhex(hex_text)
    except ValueError:
        raise RequestError(f"{cmd}: 'hex' must be hex digits (two per byte), e.g. \"01ff\"") from None
    if len(body) > max_bytes:
        raise RequestError(f"{cmd}: 'hex' is longer than {max_bytes} bytes")
    return body
