"""``firmware-host config check`` and ``config sample``.

``check`` validates what ``run`` would before it opens anything: the TOML,
the plugins (imported and set up, their options checked), the boards, every
section of the config, each device's codec and URL, each sink's options, the
control socket path and the ``--summary`` file's directory. It opens no port,
socket or sink file, and reports every problem it finds, one line each.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware_host.config._check import READABLE_URL_SCHEMES, read_toml
from firmware_host.config.boards import Board, load_boards
from firmware_host.config.schema import (
    MAX_SOCKET_PATH,
    Config,
    ConfigError,
    check_config_dict,
    default_control_socket,
    require_a_sink,
)

if TYPE_CHECKING:
    from firmware_host.plugins.host import PluginHost

__all__ = ["CheckResult", "check_config_file", "socket_path_problem", "summary_path_problem"]


@dataclass
class CheckResult:
    """What ``config check`` found: problems (one line each), else a summary."""

    problems: list[str] = field(default_factory=list)
    config: Config | None = None
    plugin_sinks: int = 0

    def summary(self) -> str:
        cfg = self.config
        assert cfg is not None
        sinks = len(cfg.sinks) + self.plugin_sinks
        templates = f", {len(cfg.templates)} device templates" if cfg.templates else ""
        return (
            f"{cfg.source}: OK ({len(cfg.devices)} devices{templates}, {sinks} sinks, {len(cfg.plugins)} plugins; "
            "no port was opened)"
        )


def socket_path_problem(path: str) -> str | None:
    """A control socket path bind() would refuse, said before anything starts."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return f"control socket path is longer than {MAX_SOCKET_PATH} bytes (Unix socket limit): {path}"
    return None


def summary_path_problem(path: str) -> str | None:
    """Why ``--summary PATH`` could not be written at exit, or None."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"--summary {path}: is a directory, expected a file path"
    if not os.path.isdir(directory):
        return f"--summary {path}: directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"--summary {path}: directory {directory} is not writable"
    return None


def check_config_file(
    path: str,
    *,
    control_path: str | None = None,
    summary_path: str | None = None,
    boards_dirs: Sequence[str] = (),
) -> CheckResult:
    """Everything ``run -c PATH`` validates at start-up, collected."""
    result = CheckResult()
    try:
        source, data = read_toml(path)
    except ConfigError as exc:  # nothing else can be read
        result.problems.append(str(exc))
        return result
    boards = _boards(boards_dirs, result)
    host = _plugins(data, source, result)
    config, problems = check_config_dict(
        data,
        source=source,
        known_codecs=host.known_codecs() if host is not None else None,
        known_sinks=host.known_sinks() if host is not None else None,
        boards=boards,
        url_schemes=READABLE_URL_SCHEMES,
    )
    result.problems.extend(str(p) for p in problems)
    # the parts of the config that loaded: their codecs and sinks are built too
    codecs: Mapping[str, Any] = host.codecs if host is not None else {}
    sink_types: Mapping[str, Any] = host.sink_types if host is not None else {}
    result.plugin_sinks = len(host.sinks) if host is not None else 0
    _codecs(config, codecs, result)
    _sinks(config, sink_types, result)
    if not any((p.key or "").startswith("sinks") for p in problems):
        try:  # "no sinks" only when none was left out for a mistake of its own
            require_a_sink(config, result.plugin_sinks)
        except ConfigError as exc:
            result.problems.append(str(exc))
    result.config = config
    socket = (
        control_path or config.control.socket or os.environ.get("FIRMWARE_HOST_CONTROL") or default_control_socket()
    )
    for problem in (socket_path_problem(socket), summary_path_problem(summary_path) if summary_path else None):
        if problem is not None:
            result.problems.append(problem)
    return result


def _boards(boards_dirs: Sequence[str], result: CheckResult) -> dict[str, Board]:
    try:
        return load_boards(boards_dirs)
    except ConfigError as exc:
        result.problems.append(str(exc))
        return {}


def _plugins(data: Mapping[str, Any], source: str, result: CheckResult) -> PluginHost | None:
    """The plugin host, set up as ``run`` sets it up; its failures are problems."""
    from firmware_host.plugins.host import PluginHost

    table = data.get("plugins", {})
    if not isinstance(table, Mapping) or not all(isinstance(v, Mapping) for v in table.values()):
        return None  # the config check names the bad table
    host = PluginHost(table, source=source)
    host.quiet = True  # every failure is reported below, once
    for name in host.missing():
        try:
            PluginHost({name: {}}, host.available, source=source).check()
        except ConfigError as exc:
            result.problems.append(str(exc))
    # a plugin logs what it loads; a check prints only its verdict
    quiet = logging.getLogger("firmware_host")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        asyncio.run(host.setup(strict=False))
    finally:
        quiet.setLevel(level)
    for entry in host.report():
        if entry["enabled"] and entry["state"] == "failed":
            error = entry["error"] or "failed"
            # an option error already names the file and key; other failures do not
            result.problems.append(
                error if error.startswith(f"{source}: ") else f"{source}: plugins.{entry['name']}: {error}"
            )
    return host


def _codecs(config: Config, registry: Mapping[str, Any], result: CheckResult) -> None:
    from firmware_host.codecs import make_codec

    for index, dc in enumerate(config.devices):
        try:
            make_codec(dc.codec, dc.name, dict(dc.codec_options), dict(registry))
        except (ValueError, TypeError) as exc:
            result.problems.append(f"{config.source}: devices[{index}]: {exc}")
    for dc in config.templates:  # built again for each port the template takes
        try:
            make_codec(dc.codec, dc.name, dict(dc.codec_options), dict(registry))
        except (ValueError, TypeError) as exc:
            result.problems.append(f"{config.source}: device template {dc.name!r}: {exc}")


def _sinks(config: Config, plugin_types: Mapping[str, Any], result: CheckResult) -> None:
    """Each sink built as ``run`` builds it (options checked), never opened."""
    from firmware_host.sinks import BUILTIN_SINKS

    types = {**BUILTIN_SINKS, **plugin_types}
    for index, sc in enumerate(config.sinks):
        try:
            types[sc.type](**sc.options)
        except (ConfigError, ValueError, TypeError) as exc:  # the sink's own message names the option
            result.problems.append(f"{config.source}: sinks[{index}]: {exc}")


#: what ``config sample`` prints: every table with its defaults, commented;
#: ``config check`` accepts it as it is (tests/test_cli_configcmd.py)
SAMPLE = """\
# firmware-host config (TOML). Every key is in docs/config.md: type, default, bounds.
# Check a config without running it: firmware-host config check -c THIS_FILE

[buffer]
capacity = 10000          # frames held in memory; one more drops the oldest
max_bytes = 0             # a second bound in payload bytes; 0: none
flush_interval = 1.0      # seconds between deliveries to the sinks; 0: on demand and at shutdown
batch_size = 1000         # most frames per sink write
# spool = "/var/lib/firmware-host/spool.sqlite"   # survive crashes and long sink outages
# spool_interval = 0.1    # seconds a frame may wait before it is on disk (kill -9 window)
# spool_max_bytes = 104857600
# spool_sync = "normal"   # off | normal | full

[shutdown]
grace = 5.0               # seconds for the final drain at SIGINT/SIGTERM/stop

[control]
# socket = "/run/firmware-host/control.sock"   # default: $XDG_RUNTIME_DIR/firmware-host.sock

[serial]
read_coalesce = 0.02      # seconds between reads of a busy tty; 0: read at every readiness

[log]
level = "info"            # debug | info | warning | error (run -v / -q step from here)
format = "text"           # text | json (one JSON object per line)

[metrics]
# listen = "127.0.0.1:9464"   # serve /metrics (Prometheus) and /healthz; needs the [metrics] extra

[[devices]]
name = "imu0"
port = "/dev/ttyACM0"     # a tty, or socket://HOST:PORT, rfc2217://HOST:PORT
codec = "fh1"             # fh1 | nmea | lines | a plugin's codec
baudrate = 921600
# max_payload = 1024      # fh1: largest payload in bytes (at most 1048576)
# backoff_initial = 0.1   # seconds before the first reconnect
# backoff_max = 5.0       # reconnect backoff doubles up to this

# [[devices]]             # or find a board by its USB ids at every (re)connect
# name = "gps0"
# match = {vid = 0x1546, pid = 0x01A7}
# codec = "nmea"
# baudrate = 9600

[[sinks]]
type = "jsonl"            # one JSON object per frame and line
path = "frames.jsonl"
fsync = false
timeout = 10.0            # seconds one write may take before it counts as failed
# batch_size = 1000       # frames per write to this sink (default: [buffer] batch_size)

# [plugins.stats]         # a summary line per device in the log
# interval = 10
"""
