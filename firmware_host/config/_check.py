"""The one validation toolkit: config, boards, codecs, sinks and plugins check with it.

Every mistake it reports is one line naming where (file, key) and what is
expected, in the same words wherever it is made. It holds:

- the ground ``schema`` and ``boards`` share (name rules, the size bound of a
  TOML file, the first-party codecs' options, the default baudrate), so that
  both build on this module and neither imports the other's internals;
- :func:`describe`, a bad value shown briefly in TOML terms;
- :class:`Checker`, type and range checks raising a :class:`ConfigError` kind;
- :func:`read_toml` / :func:`parse_toml`, bounded reading of a TOML file;
- :func:`check_options`, an options table against ``{key: (type, default)}``.

It imports only the standard library and :mod:`firmware_host.errors`: the
codecs, which must stay pure, use it too.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn, TypeGuard

from firmware_host.errors import ConfigError

__all__ = [
    "BUILTIN_CODEC_OPTIONS",
    "CODEC_OPTION_KEYS",
    "DEFAULT_BAUDRATE",
    "MAX_BAUDRATE",
    "MAX_CODEC_SIZE",
    "MAX_CONFIG_BYTES",
    "MAX_SECONDS",
    "MIN_BAUDRATE",
    "MIN_SECONDS",
    "NAME_EXPECTED",
    "NAME_PATTERN",
    "PORT_URL_SCHEMES",
    "READABLE_URL_SCHEMES",
    "Checker",
    "OptionSpec",
    "check_options",
    "describe",
    "expected_kind",
    "is_integer",
    "is_number",
    "number_text",
    "parse_toml",
    "port_url_problem",
    "read_toml",
]

# --------------------------------------------------------------------- shared ground

#: a config (or board) file is small; refusing big ones bounds memory and parse time
MAX_CONFIG_BYTES = 1 << 20
#: device and board names end up in file names, JSON keys and CLI arguments
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
NAME_EXPECTED = "1 to 64 letters, digits, '.', '_' or '-'"
#: options the first-party codecs take; plugin codecs' options pass through unchecked
CODEC_OPTION_KEYS: tuple[str, ...] = ("max_line", "max_payload")
BUILTIN_CODEC_OPTIONS: Mapping[str, frozenset[str]] = {
    "fh1": frozenset({"max_payload"}),
    "lines": frozenset({"max_line"}),
    "nmea": frozenset(),  # NMEA 0183 fixes the line length; nothing to tune
    "ubx": frozenset({"max_payload"}),
}
#: a device's baudrate when neither it nor its board says
DEFAULT_BAUDRATE = 115200
#: the baudrates accepted (devices and boards): from the slowest standard rate
#: to beyond the fastest USB-serial bridges; a larger number is a typo that the
#: tty layer would refuse at every reconnect, long after start-up
MIN_BAUDRATE, MAX_BAUDRATE = 50, 4_000_000
#: the largest codec size option (``max_payload``, ``max_line``): a frame buffer
#: of that size is allocated per device, so a typo must not ask for gigabytes
MAX_CODEC_SIZE = 1 << 20
#: the shortest duration accepted where a key is a number of seconds > 0: a
#: timer below a millisecond is a busy loop, and a deadline that short expires
#: before the work it bounds can begin
MIN_SECONDS = 0.001
#: the longest duration most keys accept (an hour): past it the value is a
#: mistake (milliseconds written as seconds), and a wait that long looks hung
MAX_SECONDS = 3600.0
#: pyserial's URL schemes: None for those the transport reads, else why it
#: cannot. The transport routes by this table and refuses the rest at open
#: (``transport.serial.supported_url``); the config checks a device's port
#: against it at load. It lives here because the config layer may not import
#: the transport (setup.cfg [importlinter] layers), while the transport may
#: import this. Schemes pyserial does not know (a test's ``fake://`` served
#: by a ``FakeOpener``) are the opener's business and pass.
PORT_URL_SCHEMES: Mapping[str, str | None] = {
    "socket": None,
    "rfc2217": None,
    "spy": None,
    "hwgrep": None,
    "alt": None,
    "loop": "pyserial's loop:// gives no file descriptor to wait on",
    "cp2110": "pyserial's cp2110:// (a HID device) gives no file descriptor to wait on",
}


#: the URL schemes the serial transport reads (a plain path needs none)
READABLE_URL_SCHEMES: frozenset[str] = frozenset(k for k, why in PORT_URL_SCHEMES.items() if why is None)


def port_url_problem(port: str, schemes: Collection[str] | None = None) -> str | None:
    """Why the transport cannot read ``port`` (a path or pyserial URL), or None.

    ``schemes``: the URL schemes the opener in use reads (the CLI passes
    :data:`READABLE_URL_SCHEMES`); then any other scheme, a typo like
    ``sockt://``, is a problem too. None leaves schemes pyserial does not know
    to the opener (a test's ``fake://``).
    """
    scheme, sep, _ = port.partition("://")
    if not sep:
        return None
    reason = PORT_URL_SCHEMES.get(scheme.lower())
    if reason:
        return f"{scheme}:// is not supported: {reason}"
    if schemes is not None and scheme.lower() not in schemes:
        readable = ", ".join(f"{s}://" for s in sorted(schemes))
        return f"unknown URL scheme {describe(scheme)} (expected a device path or one of {readable})"
    return None


# --------------------------------------------------------------------- values


def is_integer(value: object) -> TypeGuard[int]:
    """An int that is not a bool: ``capacity = true`` is a mistake, not 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float, not a bool. inf/nan would turn timers into busy
    loops or never-firing waits; an int too large for a float is no number of
    seconds either."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # math.isfinite converts a huge int to float
        return False


def describe(value: object) -> str:
    """Show a bad value briefly, in TOML-ish terms, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value)  # ASCII-only: escapes newlines and other line breaks
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return f"a date/time ({value.isoformat()})"
    return f"a {type(value).__name__}"


def number_text(x: float) -> str:
    """``5`` rather than ``5.0`` in a message."""
    return str(int(x)) if float(x).is_integer() else repr(x)


_KIND_TEXT: Mapping[type, str] = {
    int: "an integer",
    float: "a finite number",
    str: "a string",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


def expected_kind(kind: type) -> str:
    """What a value of ``kind`` is called in a message: ``"an integer"``."""
    return _KIND_TEXT.get(kind, f"a {kind.__name__}")


def _bound_text(ge: float | None, gt: float | None, le: float | None) -> str:
    if ge is not None and le is not None:
        return f" from {number_text(ge)} to {number_text(le)}"
    if gt is not None:
        return f" > {number_text(gt)}"
    if ge is not None:
        return f" >= {number_text(ge)}"
    if le is not None:
        return f" <= {number_text(le)}"
    return ""


# --------------------------------------------------------------------- the checker


class Checker:
    """Type and range checks that fail with one line naming ``source`` and the key.

    ``error`` is the :class:`ConfigError` kind raised (boards raise BoardError).
    """

    def __init__(self, source: str, error: type[ConfigError] = ConfigError) -> None:
        self.source = source
        self.error = error

    def fail(self, key: str | None, message: str) -> NoReturn:
        # from None: the message says everything; a chained OSError/TOMLDecodeError is noise
        raise self.error(message, source=self.source, key=key) from None

    def table(self, value: object, key: str | None, expected: str = "a table") -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(key, f"expected {expected}, got {describe(value)}")
        return value

    def keys(self, table: Mapping[str, Any], known: Collection[str], where: str | None) -> None:
        for key in table:
            if key not in known:
                place = f"in {where}" if where else "at the top level"
                self.fail(None, f"unknown key {key!r} {place} (known: {', '.join(sorted(known))})")

    def integer(
        self, value: object, key: str, *, ge: int | None = None, gt: int | None = None, le: int | None = None
    ) -> int:
        if is_integer(value) and _within(value, ge, gt, le):
            return value
        self.fail(key, f"expected {expected_kind(int)}{_bound_text(ge, gt, le)}, got {describe(value)}")

    def number(
        self, value: object, key: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None
    ) -> float:
        # TOML writes `grace = 5` as an int; accept it where a float is expected.
        if is_number(value) and _within(value, ge, gt, le):
            return float(value)
        self.fail(key, f"expected {expected_kind(float)}{_bound_text(ge, gt, le)}, got {describe(value)}")

    def seconds(
        self,
        value: object,
        key: str,
        *,
        least: float = MIN_SECONDS,
        most: float = MAX_SECONDS,
        zero: bool = False,
    ) -> float:
        """A duration from ``least`` to ``most`` seconds; also exactly 0 when
        ``zero`` (a key where 0 means "off")."""
        if is_number(value) and (least <= value <= most or (zero and value == 0)):
            return float(value)
        span = f"from {number_text(least)} to {number_text(most)} (seconds)"
        expected = f"0 (off) or a number {span}" if zero else f"a number {span}"
        self.fail(key, f"expected {expected}, got {describe(value)}")

    def baudrate(self, value: object, key: str) -> int:
        return self.integer(value, key, ge=MIN_BAUDRATE, le=MAX_BAUDRATE)

    def codec_size(self, value: object, key: str) -> int:
        """``max_payload`` / ``max_line``: bytes, > 0 and at most 1 MiB."""
        return self.integer(value, key, ge=1, le=MAX_CODEC_SIZE)

    def string(self, value: object, key: str, expected: str = "a non-empty string") -> str:
        if not isinstance(value, str) or not value or "\x00" in value:
            self.fail(key, f"expected {expected}, got {describe(value)}")
        return value

    def one_of(self, value: object, key: str, choices: Collection[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(key, f"expected one of {', '.join(choices)}, got {describe(value)}")
        return value

    def name(self, value: object, key: str, what: str) -> str:
        if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
            self.fail(key, f"expected a {what} name ({NAME_EXPECTED}), got {describe(value)}")
        return value

    def usb_id(self, value: object, key: str) -> int:
        """A USB vendor/product id: an int 0..0xFFFF or a hex string like "0x0483"."""
        if isinstance(value, str):
            digits = value[2:] if value[:2].lower() == "0x" else value
            if re.fullmatch(r"[0-9A-Fa-f]{1,4}", digits):
                return int(digits, 16)
        elif is_integer(value) and 0 <= value <= 0xFFFF:
            return value
        expected = 'a USB id: an integer from 0 to 0xFFFF or a hex string like "0x0483"'
        self.fail(key, f"expected {expected}, got {describe(value)}")

    def codec_option_keys(self, codec: str, options: Collection[str], prefix: str) -> None:
        """Reject an option the first-party ``codec`` does not take (plugin codecs pass)."""
        allowed = BUILTIN_CODEC_OPTIONS.get(codec)
        if allowed is None:
            return
        for option in sorted(options):
            if option not in allowed:
                takes = ", ".join(sorted(allowed)) or "no options"
                self.fail(f"{prefix}{option}", f"codec {codec!r} has no option {option!r} (it takes: {takes})")


def _within(value: float, ge: float | None, gt: float | None, le: float | None) -> bool:
    return (ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)


# --------------------------------------------------------------------- TOML files


def read_toml(path: str | os.PathLike[str], error: type[ConfigError] = ConfigError) -> tuple[str, dict[str, Any]]:
    """Read and parse a small TOML file; returns (source, data).

    Bounded (at most :data:`MAX_CONFIG_BYTES` are read, even from a file that
    grows), and safe on a FIFO or device given by mistake (opened non-blocking,
    refused unless a regular file). Every failure is one ``error`` line.
    """
    source = os.fsdecode(os.fspath(path))
    check = Checker(source, error)
    try:
        # O_NONBLOCK: opening a FIFO given by mistake must not hang start-up
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        check.fail(None, "no such file")
    except IsADirectoryError:
        check.fail(None, "is a directory, expected a TOML file")
    except OSError as exc:
        check.fail(None, f"cannot open: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            check.fail(None, "is a directory, expected a TOML file")
        if not stat.S_ISREG(st.st_mode):
            check.fail(None, "not a regular file, expected a TOML file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # bounded even if the file grows under us
    except OSError as exc:
        check.fail(None, f"cannot read: {exc.strerror or exc}")
    finally:
        os.close(fd)
    return source, parse_toml(source, raw, error)


def parse_toml(source: str, raw: bytes, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Size-check, decode and parse the bytes of a TOML file."""
    check = Checker(source, error)
    if len(raw) > MAX_CONFIG_BYTES:
        check.fail(None, f"file is larger than 1 MiB; expected a TOML file of at most {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        check.fail(None, f"not valid UTF-8 (byte {exc.start}); TOML files must be UTF-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        check.fail(None, f"TOML syntax error: {exc}")


# --------------------------------------------------------------------- option tables

#: ``{key: (type, default)}``; a default of ``...`` makes the key required
OptionSpec = Mapping[str, tuple[type, Any]]


def check_options(
    options: Mapping[str, object], spec: OptionSpec, error: Callable[[str, str], Exception]
) -> dict[str, Any]:
    """``options`` checked against ``spec``, defaults filled in.

    Unknown keys, missing required keys and wrong types raise
    ``error(key, message)``; the caller's error names the owner (sink, plugin,
    codec). The types read as the :class:`Checker`'s do: a bool is not an int,
    an int is accepted where a float is expected (TOML writes ``5`` for five
    seconds) and a float must be finite. Defaults are not checked.
    """
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise error(unknown[0], f"unknown option (known: {', '.join(sorted(spec)) or 'none'})")
    out: dict[str, Any] = {}
    for key, (kind, default) in spec.items():
        if key not in options:
            if default is ...:
                raise error(key, "required option is missing")
            out[key] = default
            continue
        value = options[key]
        if not _is_kind(value, kind):
            raise error(key, f"expected {expected_kind(kind)}, got {describe(value)}")
        out[key] = float(value) if kind is float and is_number(value) else value
    return out


def _is_kind(value: object, kind: type) -> bool:
    if kind is int:
        return is_integer(value)
    if kind is float:
        return is_number(value)
    return isinstance(value, kind)
