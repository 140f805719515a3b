"""TOML configuration -> typed, validated, frozen dataclasses.

Every problem is reported as one :class:`ConfigError` whose ``str()`` is a
single line ``<file>: <key path>: <what is wrong and what is expected>``, so
the CLI can print it and exit 2 without a traceback. Validation is strict on
purpose (unknown keys are errors): a typo in a field gateway's config must fail
at start-up, not silently fall back to a default.
"""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from firmware_host.config._check import (
    BUILTIN_CODEC_OPTIONS,
    CODEC_OPTION_KEYS,
    DEFAULT_BAUDRATE,
    MAX_CONFIG_BYTES,
    MAX_SECONDS,
    MIN_SECONDS,
    NAME_EXPECTED,
    NAME_PATTERN,
    Checker,
    describe,
    number_text,
    port_url_problem,
    read_toml,
)
from firmware_host.config.boards import Board, find_board, load_boards
from firmware_host.errors import BoardError, ConfigError
from firmware_host.values.layout import PayloadSchema

T = TypeVar("T")

# The shared constants (defined in _check, which boards also builds on) stay
# importable from here, where they were defined before.
__all__ = [
    "BUILTIN_CODEC_OPTIONS",
    "CODEC_OPTION_KEYS",
    "DEFAULT_BAUDRATE",
    "DEFAULT_CODECS",
    "DEFAULT_SINKS",
    "DEFAULT_SINK_TIMEOUT",
    "HOTPLUG_MODES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_CONFIG_BYTES",
    "MAX_SOCKET_PATH",
    "NAME_EXPECTED",
    "NAME_PATTERN",
    "PLACEHOLDERS",
    "SECTION_KEYS",
    "TOP_KEYS",
    "BufferConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DeviceConfig",
    "LogConfig",
    "MetricsConfig",
    "SerialConfig",
    "ShutdownConfig",
    "SinkConfig",
    "check_config_dict",
    "config_from_dict",
    "default_control_socket",
    "load_config",
    "require_a_sink",
    "split_listen",
]

#: codecs and sinks that ship with the runtime; plugins add to these
DEFAULT_CODECS: frozenset[str] = frozenset({"fh1", "nmea", "lines", "ubx"})
DEFAULT_SINKS: frozenset[str] = frozenset({"jsonl"})
#: ``[[sinks]] timeout``: seconds a sink's ``write`` may take (docs/reliability.md)
DEFAULT_SINK_TIMEOUT = 10.0
#: the longest control socket path: Linux sun_path is 108 bytes including the NUL
MAX_SOCKET_PATH = 107

TOP_KEYS = frozenset({"buffer", "shutdown", "control", "serial", "log", "metrics", "devices", "sinks", "plugins"})
_BUFFER_KEYS = frozenset(
    {
        "capacity",
        "max_bytes",
        "flush_interval",
        "batch_size",
        "spool",
        "spool_interval",
        "spool_max_bytes",
        "spool_sync",
    }
)
#: the longest ``[buffer] spool_interval`` accepted: the window a kill -9 may
#: lose is the point of the key, so a value of minutes is a mistake
MAX_SPOOL_INTERVAL = 60.0
SPOOL_SYNC_MODES = ("off", "normal", "full")
_SHUTDOWN_KEYS = frozenset({"grace"})
#: keys of ``[[sinks]]`` that every sink type accepts (the rest go to the sink)
_COMMON_SINK_KEYS = frozenset({"type", "timeout", "batch_size"})
_SERIAL_KEYS = frozenset({"read_coalesce", "scan_interval", "remove_after", "hotplug"})
#: how device templates learn of ports coming and going: udev events (the
#: ``[udev]`` extra, with udevd running), a scan every ``scan_interval``, or
#: udev when it can be had, else the scan
HOTPLUG_MODES = ("auto", "udev", "scan")
#: the shortest ``[serial] scan_interval``: a faster listing would cost CPU
#: on an idle gateway for a board plugged in a few milliseconds sooner
MIN_SCAN_INTERVAL = 0.05
#: the longest read coalescing window accepted: past it, a busy 921600-baud
#: port would outgrow the kernel's tty buffering (about 64 KiB) between reads
MAX_READ_COALESCE = 0.5
_CONTROL_KEYS = frozenset({"socket", "group", "mode"})
_LOG_KEYS = frozenset({"level", "format"})
_METRICS_KEYS = frozenset({"listen"})
#: ``[log] level`` names, quietest last; ``run -v``/``-q`` step along them
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: the longest ``[shutdown] grace``, ``[[sinks]] timeout`` and reconnect backoff
MAX_GRACE = MAX_SECONDS
#: the shortest ``[shutdown] grace``: below it the stop hooks' own deadlines
#: expire before they can run, which reads as a failure of the hooks
MIN_GRACE = 0.01
#: the shortest ``[[sinks]] timeout``: a write cannot start and finish faster
MIN_SINK_TIMEOUT = 0.01
#: bounds of ``[buffer]`` sizes: past them a value is a typo, not a plan
MAX_CAPACITY = 100_000_000
MAX_BATCH_SIZE = 1_000_000
MAX_BUFFER_BYTES = 1 << 40
MAX_SPOOL_BYTES = 1 << 44
_DEVICE_KEYS = frozenset(
    {
        "name",
        "port",
        "match",
        "board",
        "codec",
        "baudrate",
        "backoff_initial",
        "backoff_max",
        "decode",
        *CODEC_OPTION_KEYS,
    }
)
_MATCH_KEYS = frozenset({"vid", "pid", "serial", "path"})
#: what a device template's name may hold (docs/config.md, device templates)
PLACEHOLDERS = ("serial", "n", "vid", "pid", "basename")
#: the longest ``match.path`` glob: PATH_MAX on Linux
MAX_GLOB = 4096

#: every key of every section the loader itself reads, by section; the
#: options of a sink type and of a plugin are theirs (docs/config.md lists both)
SECTION_KEYS: Mapping[str, frozenset[str]] = {
    "": TOP_KEYS,
    "buffer": _BUFFER_KEYS,
    "shutdown": _SHUTDOWN_KEYS,
    "control": _CONTROL_KEYS,
    "serial": _SERIAL_KEYS,
    "log": _LOG_KEYS,
    "metrics": _METRICS_KEYS,
    "devices": _DEVICE_KEYS,
    "devices.match": _MATCH_KEYS,
    "sinks": _COMMON_SINK_KEYS,
}


# --------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class BufferConfig:
    """The shared buffer: bounded by frames and optionally by bytes."""

    capacity: int = 10000
    max_bytes: int = 0  # 0: no byte bound
    flush_interval: float = 1.0  # 0: flush only on demand and at shutdown
    batch_size: int = 1000
    spool: str | None = None  # path of an SQLite disk spool; None: memory only
    #: seconds between two commits of memory to the spool, whatever flush_interval is
    #: (the window a kill -9 may lose); no effect without ``spool``
    spool_interval: float = 0.1
    spool_max_bytes: int = 100 * 1024 * 1024
    spool_sync: str = "normal"  # off | normal | full (SQLite synchronous)


@dataclass(frozen=True)
class ShutdownConfig:
    grace: float = 5.0  # seconds allowed for the final drain


@dataclass(frozen=True)
class SerialConfig:
    #: seconds between two reads of a busy tty (one shared tick for all the
    #: ports of a runtime's serial backend); 0 reads at every readiness.
    #: Larger windows cost less CPU per frame and delay the receive timestamp
    #: by up to the window.
    read_coalesce: float = 0.02
    #: device templates only: seconds between two listings of the ports
    #: (without udev events)
    scan_interval: float = 1.0
    #: device templates only: seconds a device whose port went away stays
    #: (in ``backoff``) before it is removed; back sooner, it is the same device
    remove_after: float = 60.0
    #: device templates only: one of HOTPLUG_MODES
    hotplug: str = "auto"


@dataclass(frozen=True)
class ControlConfig:
    socket: str | None = None  # None: default_control_socket()
    #: the socket's group (chowned to it at start), so its members can use the CLI
    group: str | None = None
    #: the socket's permission bits, as written (octal): the owner's rw always, the group's at most
    mode: str = "0600"

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)


@dataclass(frozen=True)
class LogConfig:
    """How ``run`` logs; ``--log-level``, ``--log-format``, ``-v`` and ``-q`` override."""

    level: str = "info"  # one of LOG_LEVELS
    format: str = "text"  # text | json (one JSON object per line)


@dataclass(frozen=True)
class MetricsConfig:
    """``/metrics`` and ``/healthz`` over HTTP (docs/service.md); off unless ``listen`` is set."""

    listen: str | None = None  # "HOST:PORT" ("[::1]:9464" for IPv6); None: off

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind, or None when off."""
        return None if self.listen is None else split_listen(self.listen)


def split_listen(listen: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(HOST, PORT)``; ValueError when it is not one.
    An IPv6 host is bracketed (``[::1]:9464``); the port is 1..65535."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 host must be in brackets, e.g. [::1]:9464")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9464")
    if any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"not a host name or address: {host!r}")
    return host, int(port)


@dataclass(frozen=True)
class DeviceConfig:
    """One serial device, with its board's settings already merged in."""

    name: str
    port: str | None  # path or pyserial URL; exactly one of port / match
    #: {"vid": int, "pid": int, "serial": str, "path": glob}, any non-empty
    #: subset (``path``: templates only)
    match: dict[str, object] | None
    board: str | None
    codec: str
    codec_options: dict[str, int] = field(default_factory=dict)
    baudrate: int = DEFAULT_BAUDRATE
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    #: the board's payload schema (None: bytes only: no board schema, another
    #: codec than the board's, or ``decode = false``)
    schema: PayloadSchema | None = None
    #: False: frames keep bytes and text only (``[[devices]] decode = false``)
    decode: bool = True
    #: the name pattern of the template that made this device, or of the
    #: template this entry is (``Config.templates``); None for a plain device
    template: str | None = None


@dataclass(frozen=True)
class SinkConfig:
    type: str
    options: dict[str, object] = field(default_factory=dict)  # validated by the sink itself
    #: seconds one ``write`` may take before it counts as a failed delivery
    timeout: float = DEFAULT_SINK_TIMEOUT
    #: the most frames in one ``write`` to this sink; None: the sink's own
    #: preference, else ``[buffer] batch_size``
    batch_size: int | None = None


@dataclass(frozen=True)
class Config:
    buffer: BufferConfig = field(default_factory=BufferConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    serial: SerialConfig = field(default_factory=SerialConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    devices: list[DeviceConfig] = field(default_factory=list)
    #: device templates: ``name`` is the pattern, ``match`` says which ports
    #: (firmware_host.templates makes a device of each one while running)
    templates: list[DeviceConfig] = field(default_factory=list)
    sinks: list[SinkConfig] = field(default_factory=list)
    plugins: dict[str, dict[str, object]] = field(default_factory=dict)
    source: str = "<config>"


# --------------------------------------------------------------------- public API


def default_control_socket() -> str:
    """Where the control socket lives when the config does not say.

    $XDG_RUNTIME_DIR is per-user, 0700 and cleaned at logout, the right home
    for a socket. Without it, a per-uid directory in the temp dir (created
    0700 by the control server) keeps other users out.
    """
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir):
        return os.path.join(runtime_dir, "firmware-host.sock")
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return os.path.join(tempfile.gettempdir(), f"firmware-host-{uid}", "firmware-host.sock")


def load_config(
    path: str | os.PathLike[str],
    *,
    known_codecs: Collection[str] | None = None,
    known_sinks: Collection[str] | None = None,
    boards: Mapping[str, Board] | None = None,
    url_schemes: Collection[str] | None = None,
) -> Config:
    """Read, parse and validate a TOML config file. Raises :class:`ConfigError`."""
    source, data = read_toml(path)
    return config_from_dict(
        data,
        source=source,
        known_codecs=known_codecs,
        known_sinks=known_sinks,
        boards=boards,
        url_schemes=url_schemes,
    )


def config_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "<config>",
    known_codecs: Collection[str] | None = None,
    known_sinks: Collection[str] | None = None,
    boards: Mapping[str, Board] | None = None,
    url_schemes: Collection[str] | None = None,
) -> Config:
    """Validate already-parsed TOML data (``tomllib`` output or an equivalent dict).

    ``known_codecs``/``known_sinks`` default to the first-party ones; pass the
    plugin registry's names to accept plugin codecs and sinks. ``boards``
    defaults to :func:`firmware_host.config.boards.load_boards`, loaded only if a
    device names a board. ``url_schemes``: the URL schemes the port opener
    reads (``READABLE_URL_SCHEMES`` for the serial transport); a device port
    with another scheme is refused. None refuses only the schemes pyserial has
    and the transport cannot read, and leaves the rest to the opener.
    """
    config, problems = check_config_dict(
        data,
        source=source,
        known_codecs=known_codecs,
        known_sinks=known_sinks,
        boards=boards,
        url_schemes=url_schemes,
    )
    if problems:
        raise problems[0]  # the one a fail-fast loader would have met first
    return config


def check_config_dict(
    data: Mapping[str, Any],
    *,
    source: str = "<config>",
    known_codecs: Collection[str] | None = None,
    known_sinks: Collection[str] | None = None,
    boards: Mapping[str, Board] | None = None,
    url_schemes: Collection[str] | None = None,
) -> tuple[Config, list[ConfigError]]:
    """:func:`config_from_dict`, collecting problems instead of stopping at the
    first: one per section, device, sink and plugin table (the first mistake in
    each), in file order. Returns the config and the problems; with problems,
    the config is partial (a bad section at its defaults, a bad device, sink
    or plugin table left out), only good for checking the parts that loaded
    (``firmware-host config check`` builds its codecs and sinks)."""
    check = Checker(source)
    try:
        top = check.table(data, None, "a table of settings")
        check.keys(top, TOP_KEYS, None)
    except ConfigError as exc:  # nothing below can be read without the top level
        return Config(source=source), [exc]
    problems = _Problems()
    codecs = frozenset(known_codecs) if known_codecs is not None else DEFAULT_CODECS
    sink_types = frozenset(known_sinks) if known_sinks is not None else DEFAULT_SINKS

    buffer = problems.attempt(lambda: _parse_buffer(check, top.get("buffer", {}))) or BufferConfig()
    shutdown = problems.attempt(lambda: _parse_shutdown(check, top.get("shutdown", {}))) or ShutdownConfig()
    control = problems.attempt(lambda: _parse_control(check, top.get("control", {}))) or ControlConfig()
    serial = problems.attempt(lambda: _parse_serial(check, top.get("serial", {}))) or SerialConfig()
    log = problems.attempt(lambda: _parse_log(check, top.get("log", {}))) or LogConfig()
    metrics = problems.attempt(lambda: _parse_metrics(check, top.get("metrics", {}))) or MetricsConfig()

    raw_devices = top.get("devices", [])
    if not isinstance(raw_devices, list):
        problems.note(check, "devices", f"expected an array of tables ([[devices]]), got {describe(raw_devices)}")
        raw_devices = []
    if boards is None and any(isinstance(d, Mapping) and "board" in d for d in raw_devices):
        boards = problems.attempt(load_boards)
    devices: list[DeviceConfig] = []
    templates: list[DeviceConfig] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_devices):
        device = problems.attempt(
            partial(_parse_device, check, raw, f"devices[{index}]", codecs, boards or {}, url_schemes)
        )
        if device is None:
            continue
        if device.name in first_index:
            problems.note(check, f"devices[{index}].name", f"duplicate device name {device.name!r}")
            continue
        first_index[device.name] = index
        (templates if device.template is not None else devices).append(device)

    raw_sinks = top.get("sinks", [])
    if not isinstance(raw_sinks, list):
        problems.note(check, "sinks", f"expected an array of tables ([[sinks]]), got {describe(raw_sinks)}")
        raw_sinks = []
    sinks: list[SinkConfig] = []
    for i, raw in enumerate(raw_sinks):
        sink = problems.attempt(partial(_parse_sink, check, raw, f"sinks[{i}]", sink_types))
        if sink is not None:
            sinks.append(sink)

    plugins: dict[str, dict[str, object]] = {}
    raw_plugins = problems.attempt(
        partial(check.table, top.get("plugins", {}), "plugins", "a table of [plugins.NAME] tables")
    )
    for name, options in (raw_plugins or {}).items():
        # The keys are the plugin's own options; the plugin validates them.
        table = problems.attempt(
            partial(check.table, options, f"plugins.{name}", f"a table ([plugins.{name}]) of options")
        )
        if table is not None:
            plugins[name] = dict(table)

    config = Config(
        buffer=buffer,
        shutdown=shutdown,
        control=control,
        serial=serial,
        log=log,
        metrics=metrics,
        devices=devices,
        templates=templates,
        sinks=sinks,
        plugins=plugins,
        source=source,
    )
    return config, problems.found


class _Problems:
    """The problems met so far; ``attempt`` runs one check and keeps its error."""

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    def attempt(self, check: Callable[[], T]) -> T | None:
        try:
            return check()
        except ConfigError as exc:
            self.found.append(exc)
            return None

    def note(self, check: Checker, key: str, message: str) -> None:
        self.found.append(check.error(message, source=check.source, key=key))


# --------------------------------------------------------------------- sections


def _parse_buffer(check: Checker, value: object) -> BufferConfig:
    table = check.table(value, "buffer", "a table ([buffer])")
    check.keys(table, _BUFFER_KEYS, "[buffer]")
    d = BufferConfig()
    return BufferConfig(
        capacity=check.integer(table.get("capacity", d.capacity), "buffer.capacity", ge=1, le=MAX_CAPACITY),
        max_bytes=check.integer(table.get("max_bytes", d.max_bytes), "buffer.max_bytes", ge=0, le=MAX_BUFFER_BYTES),
        flush_interval=check.seconds(table.get("flush_interval", d.flush_interval), "buffer.flush_interval", zero=True),
        batch_size=check.integer(table.get("batch_size", d.batch_size), "buffer.batch_size", ge=1, le=MAX_BATCH_SIZE),
        spool=(
            check.string(table["spool"], "buffer.spool", "a path for the disk spool (an SQLite file)")
            if "spool" in table
            else None
        ),
        spool_interval=_spool_interval(check, table.get("spool_interval", d.spool_interval)),
        spool_max_bytes=check.integer(
            table.get("spool_max_bytes", d.spool_max_bytes), "buffer.spool_max_bytes", ge=1, le=MAX_SPOOL_BYTES
        ),
        spool_sync=check.one_of(table.get("spool_sync", d.spool_sync), "buffer.spool_sync", SPOOL_SYNC_MODES),
    )


def _spool_interval(check: Checker, value: object) -> float:
    window = check.number(value, "buffer.spool_interval", gt=0)
    if not MIN_SECONDS <= window <= MAX_SPOOL_INTERVAL:  # below a millisecond: a busy loop
        check.fail(
            "buffer.spool_interval",
            f"expected a finite number > 0, at least {MIN_SECONDS:g} and at most {MAX_SPOOL_INTERVAL:g} (seconds), "
            f"got {window:g}",
        )
    return window


def _parse_shutdown(check: Checker, value: object) -> ShutdownConfig:
    table = check.table(value, "shutdown", "a table ([shutdown])")
    check.keys(table, _SHUTDOWN_KEYS, "[shutdown]")
    grace = check.seconds(table.get("grace", ShutdownConfig.grace), "shutdown.grace", least=MIN_GRACE, most=MAX_GRACE)
    return ShutdownConfig(grace=grace)


def _parse_log(check: Checker, value: object) -> LogConfig:
    table = check.table(value, "log", "a table ([log])")
    check.keys(table, _LOG_KEYS, "[log]")
    d = LogConfig()
    return LogConfig(
        level=check.one_of(table.get("level", d.level), "log.level", LOG_LEVELS),
        format=check.one_of(table.get("format", d.format), "log.format", LOG_FORMATS),
    )


def _parse_metrics(check: Checker, value: object) -> MetricsConfig:
    table = check.table(value, "metrics", "a table ([metrics])")
    check.keys(table, _METRICS_KEYS, "[metrics]")
    if "listen" not in table:
        return MetricsConfig()
    listen = check.string(table["listen"], "metrics.listen", 'an address "HOST:PORT", e.g. "127.0.0.1:9464"')
    try:
        split_listen(listen)
    except ValueError as exc:
        check.fail("metrics.listen", f"{exc}, got {describe(listen)}")
    return MetricsConfig(listen=listen)


def _parse_serial(check: Checker, value: object) -> SerialConfig:
    table = check.table(value, "serial", "a table ([serial])")
    check.keys(table, _SERIAL_KEYS, "[serial]")
    window = check.number(table.get("read_coalesce", SerialConfig.read_coalesce), "serial.read_coalesce", ge=0)
    if window > MAX_READ_COALESCE:
        check.fail(
            "serial.read_coalesce",
            f"expected a finite number from 0 to {MAX_READ_COALESCE:g} (seconds), got {window:g}",
        )
    d = SerialConfig()
    interval = check.seconds(
        table.get("scan_interval", d.scan_interval), "serial.scan_interval", least=MIN_SCAN_INTERVAL
    )
    remove_after = check.seconds(table.get("remove_after", d.remove_after), "serial.remove_after")
    hotplug = check.one_of(table.get("hotplug", d.hotplug), "serial.hotplug", HOTPLUG_MODES)
    return SerialConfig(read_coalesce=window, scan_interval=interval, remove_after=remove_after, hotplug=hotplug)


def _parse_control(check: Checker, value: object) -> ControlConfig:
    table = check.table(value, "control", "a table ([control])")
    check.keys(table, _CONTROL_KEYS, "[control]")
    socket = None
    if "socket" in table:
        socket = check.string(table["socket"], "control.socket", "a path for the control socket")
        # A longer path fails only at bind() time, long after start-up; say so now.
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
            check.fail("control.socket", f"expected a path of at most {MAX_SOCKET_PATH} bytes (Unix socket limit)")
    group = None
    if "group" in table:
        group = check.string(table["group"], "control.group", "a group name")
        if group_id(group) is None:  # found now, not when the socket is made
            check.fail("control.group", f"no group named {group!r} on this host")
    mode = _parse_socket_mode(check, table.get("mode", "0600"))
    return ControlConfig(socket=socket, group=group, mode=mode)


def group_id(name: str) -> int | None:
    """The gid of the group ``name``, or None when this host has none."""
    try:
        import grp
    except ImportError:  # not POSIX
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


#: what ``[control] mode`` may grant: the group's rw at most, never other users'
SOCKET_MODE_ALLOWED = 0o660


def _parse_socket_mode(check: Checker, value: object) -> str:
    expected = 'an octal mode string such as "0660" (owner rw, group at most rw, nothing for others)'
    if not isinstance(value, str) or not 3 <= len(value) <= 4 or any(c not in "01234567" for c in value):
        check.fail("control.mode", f"expected {expected}, got {describe(value)}")
    mode = int(value, 8)
    if mode & ~SOCKET_MODE_ALLOWED or mode & 0o600 != 0o600:
        check.fail("control.mode", f"expected {expected}, got {describe(value)}")
    return value


def _parse_match(check: Checker, value: object, where: str, template: bool) -> dict[str, object]:
    table = check.table(value, where, 'a table like {vid = 0x0483, pid = 0x374B, serial = "..."}')
    check.keys(table, _MATCH_KEYS, where)
    if not table:
        check.fail(where, "expected at least one of vid, pid, serial" + (", path" if template else ""))
    match: dict[str, object] = {}
    for key in ("vid", "pid"):
        if key in table:
            match[key] = check.usb_id(table[key], f"{where}.{key}")
    if "serial" in table:
        match["serial"] = check.string(table["serial"], f"{where}.serial", "a USB serial number string")
    if "path" in table:
        if not template:
            # one device, one port: `port` names it (a glob would pick any one of several)
            check.fail(
                f"{where}.path",
                "a path glob is for a device template (a name with a placeholder such as {n}); "
                "a single device gives 'port' instead",
            )
        match["path"] = _path_glob(check, table["path"], f"{where}.path")
    return match


def _path_glob(check: Checker, value: object, key: str) -> str:
    expected = 'an absolute path glob, e.g. "/dev/serial/by-id/usb-u-blox*"'
    glob = check.string(value, key, expected)
    # relative: it would depend on the directory the runtime was started in
    if not glob.startswith("/") or len(glob) > MAX_GLOB:
        check.fail(key, f"expected {expected} (at most {MAX_GLOB} characters), got {describe(value)}")
    return glob


def template_placeholders(pattern: str) -> frozenset[str]:
    """The placeholders of a device name pattern (one the loader accepted)."""
    return frozenset(f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None)


def _parse_template_name(check: Checker, value: object, key: str) -> str:
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    expected = f"a device name pattern ({NAME_EXPECTED}, with placeholders {known})"
    if not isinstance(value, str):
        check.fail(key, f"expected {expected}, got {describe(value)}")
    literal, count = [], 0
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError:
        check.fail(key, f"expected {expected}, got {describe(value)} (unbalanced braces)")
    for text, placeholder, spec, conversion in parsed:
        literal.append(text)
        if placeholder is None:
            continue
        count += 1
        if placeholder not in PLACEHOLDERS:
            check.fail(key, f"unknown placeholder {{{placeholder}}} in {value!r} (known: {known})")
        if spec or conversion:
            check.fail(key, f"placeholder {{{placeholder}}} in {value!r} takes no format or conversion")
    fixed = "".join(literal)
    # every value fills at least one character; the rest must be name characters already
    if (fixed and not NAME_PATTERN.fullmatch(fixed)) or len(fixed) + count > 64:
        check.fail(key, f"the pattern {value!r} cannot yield a valid device name ({NAME_EXPECTED})")
    return value


def _parse_device(
    check: Checker,
    value: object,
    where: str,
    codecs: frozenset[str],
    boards: Mapping[str, Board],
    url_schemes: Collection[str] | None,
) -> DeviceConfig:
    table = check.table(value, where, "a table ([[devices]])")
    check.keys(table, _DEVICE_KEYS, where)
    if "name" not in table:
        check.fail(f"{where}.name", f"required key is missing (a unique device name: {NAME_EXPECTED})")
    # a name with a placeholder makes this entry a template (firmware_host.templates)
    is_template = isinstance(table["name"], str) and ("{" in table["name"] or "}" in table["name"])
    if is_template:
        name = _parse_template_name(check, table["name"], f"{where}.name")
    else:
        name = check.name(table["name"], f"{where}.name", "device")

    has_port, has_match = "port" in table, "match" in table
    if is_template and not has_match:
        check.fail(
            where,
            f"the device template {name!r} needs 'match' (vid, pid, serial or a path glob) to say which ports "
            + ("it takes, not 'port'" if has_port else "it takes"),
        )
    if has_port and has_match:
        check.fail(where, "give either 'port' or 'match', not both")
    if not has_port and not has_match:
        check.fail(where, "missing 'port' (a path or pyserial URL) or 'match' (a table of vid, pid, serial)")
    port = check.string(table["port"], f"{where}.port", "a port path or pyserial URL") if has_port else None
    problem = port_url_problem(port, url_schemes) if port is not None else None
    if problem is not None:
        check.fail(f"{where}.port", problem)
    match = _parse_match(check, table["match"], f"{where}.match", is_template) if has_match else None

    board: Board | None = None
    board_name: str | None = None
    if "board" in table:
        board_name = check.string(table["board"], f"{where}.board", "a board name or a board file (.toml)")
        # or a board file of its own: a relative path is the config file's neighbour (under
        # systemd the working directory is "/"); a config from no file (a test's dict, a
        # control request) takes it from the working directory
        folder = os.path.dirname(os.path.abspath(check.source)) if os.path.isfile(check.source) else None
        try:
            board = find_board(board_name, boards, relative_to=folder)
        except BoardError as e:
            check.fail(f"{where}.board", str(e))
        if board is not None and board_name not in boards:
            board_name = board.source  # the file, absolute
        if board is None:
            known = ", ".join(sorted(boards)) or "none"
            check.fail(f"{where}.board", f"unknown board {board_name!r} (known: {known}; or a path to a .toml)")

    # The device's own settings beat the board's.
    if "codec" in table:
        codec = check.string(table["codec"], f"{where}.codec", "a codec name")
        if codec not in codecs:
            check.fail(f"{where}.codec", f"unknown codec {codec!r} (known: {', '.join(sorted(codecs))})")
    elif board is not None:
        codec = board.codec
        if codec not in codecs:
            check.fail(
                f"{where}.board",
                f"board {board.name!r} uses codec {codec!r}, which is not available "
                f"(known: {', '.join(sorted(codecs))})",
            )
    else:
        check.fail(f"{where}.codec", f"required when no 'board' is given (known: {', '.join(sorted(codecs))})")

    # A board's codec options describe the board's codec; they mean nothing to
    # another codec the device switched to, so they are dropped then.
    options: dict[str, int] = dict(board.codec_options) if board is not None and board.codec == codec else {}
    own = {key: check.codec_size(table[key], f"{where}.{key}") for key in CODEC_OPTION_KEYS if key in table}
    check.codec_option_keys(codec, own, f"{where}.")
    options.update(own)

    if "baudrate" in table:
        baudrate = check.baudrate(table["baudrate"], f"{where}.baudrate")
    else:
        baudrate = board.baudrate if board is not None else DEFAULT_BAUDRATE

    backoff_initial = check.seconds(table.get("backoff_initial", 0.1), f"{where}.backoff_initial")
    backoff_max = check.seconds(table.get("backoff_max", 5.0), f"{where}.backoff_max")
    if backoff_max < backoff_initial:
        check.fail(
            f"{where}.backoff_max",
            f"expected a number >= backoff_initial ({number_text(backoff_initial)}), "
            f"got {describe(table.get('backoff_max', 5.0))}",
        )

    # the board's say, for the board's codec (like its schema); the device's own wins
    own_board = board is not None and board.codec == codec
    decode = table.get("decode", board.decode if board is not None and own_board else True)
    if not isinstance(decode, bool):
        check.fail(f"{where}.decode", f"expected true or false, got {describe(decode)}")
    # like its codec options, a board's schema describes the board's codec only
    schema = board.schema if decode and board is not None and own_board else None

    return DeviceConfig(
        name=name,
        port=port,
        match=match,
        board=board_name,
        codec=codec,
        codec_options=options,
        baudrate=baudrate,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        schema=schema,
        decode=decode,
        template=name if is_template else None,
    )


def _parse_sink(check: Checker, value: object, where: str, sink_types: frozenset[str]) -> SinkConfig:
    table = check.table(value, where, "a table ([[sinks]])")
    if "type" not in table:
        check.fail(f"{where}.type", f"required key is missing (known sink types: {', '.join(sorted(sink_types))})")
    sink_type = check.string(table["type"], f"{where}.type", "a sink type name")
    if sink_type not in sink_types:
        check.fail(f"{where}.type", f"unknown sink type {sink_type!r} (known: {', '.join(sorted(sink_types))})")
    # keys every sink type takes are the loader's; the rest are the sink's own
    timeout = check.seconds(table.get("timeout", DEFAULT_SINK_TIMEOUT), f"{where}.timeout", least=MIN_SINK_TIMEOUT)
    batch_size = None
    if "batch_size" in table:
        batch_size = check.integer(table["batch_size"], f"{where}.batch_size", ge=1, le=MAX_BATCH_SIZE)
    options = {k: v for k, v in table.items() if k not in _COMMON_SINK_KEYS}
    return SinkConfig(type=sink_type, options=options, timeout=timeout, batch_size=batch_size)


def require_a_sink(config: Config, plugin_sinks: int) -> None:
    """A run with nowhere to deliver would read frames only to lose them:
    refuse it (a config error), saying how to add a sink. ``plugin_sinks``
    counts the sinks the enabled plugins added."""
    if not config.sinks and not plugin_sinks:
        raise ConfigError(
            'no sinks: frames would go nowhere; add one, e.g. [[sinks]] type = "jsonl" path = "frames.jsonl"',
            source=config.source,
        )
