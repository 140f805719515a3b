"""The ``firmware-host`` command line: parse, call, print.

Imports of the runtime stay inside the commands so ``--help`` and the
control-plane commands start fast on a Raspberry Pi.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from firmware_host.cli.brokenpipe import reader_left, stdout_reader_gone
from firmware_host.cli.stdfds import ensure_std_fds

if TYPE_CHECKING:
    from firmware_host.config import Config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NO_RUNTIME = 0, 1, 2, 3


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and inf: nan passes every
    bound check (each comparison is false) and became a traceback further on."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        result = super().convert(value, param, ctx)
        if not math.isfinite(result):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return result


def fail(message: str, code: int) -> NoReturn:
    """One clear line on stderr and the design's exit status; never a traceback."""
    click.echo(f"firmware-host: {message}", err=True)
    sys.exit(code)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=None, sort_keys=False))


def control_option(fn: Any) -> Any:
    return click.option(
        "--control",
        "control_path",
        metavar="PATH",
        help="Control socket (default: $FIRMWARE_HOST_CONTROL, then the per-user default).",
    )(fn)


def json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def config_option(fn: Any) -> Any:
    return click.option(
        "-c", "--config", "config_path", metavar="FILE", help="Config file (TOML); its [control] socket is used."
    )(fn)


def resolve_control(control_path: str | None, config_path: str | None = None) -> str:
    """--control, then the config's socket, then $FIRMWARE_HOST_CONTROL, then the default."""
    if control_path:
        return control_path
    if config_path:
        cfg = load_config_or_exit(config_path)
        if cfg.control.socket:
            return cfg.control.socket
    env = os.environ.get("FIRMWARE_HOST_CONTROL")
    if env:
        return env
    from firmware_host.config.schema import default_control_socket

    return default_control_socket()


def load_config_or_exit(path: str, **kwargs: Any) -> Config:
    from firmware_host.config.schema import load_config
    from firmware_host.errors import ConfigError

    try:
        return load_config(path, **kwargs)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


class OneLineErrors(click.Group):
    """click prints usage errors as three lines (Usage/Try/Error); ours are
    one line like every other error, with the same exit status 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `firmware-host`: the help, as click does
            click.echo(exc.format_message())
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", EXIT_FAILURE)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """Every command runs here: a reader of stdout that left ends it
        quietly (brokenpipe.py), whichever command was printing."""
        ensure_std_fds()  # before anything opens a file: see stdfds.py
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # also on sys.exit: the pipe's error surfaces here, not at exit
        except BrokenPipeError:
            if stdout_reader_gone():
                reader_left()
            raise


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="firmware-host")
def main() -> None:
    """Host-side runtime for fleets of serial-attached embedded devices."""


# -- run ------------------------------------------------------------------------------


@main.command()
@config_option
@click.option(
    "--emulate",
    "emulate",
    is_flag=False,
    flag_value="@default",
    default=None,
    multiple=True,
    metavar="[BOARD[:N],…]",
    help="Run on emulated boards (no hardware). Alone: a default mixed fleet.",
)
@click.option("--duration", type=FiniteRange(min=0), metavar="S", help="Stop after S seconds.")
@control_option
@click.option("--summary", "summary_path", metavar="FILE", help="Write the final counters as JSON at exit.")
@click.option("--boards-dir", "boards_dirs", multiple=True, metavar="DIR", help="Extra board definitions.")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Start with no device (else a usage error); add them at run time with `devices add`.",
)
@click.option(
    "-q",
    "--quiet",
    count=True,
    help="No live view, periodic summary or final table, and log one level less (-qq: errors only).",
)
@click.option("-v", "--verbose", count=True, help="Log one level more (from info: debug).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe messages logged (default: [log] level, else info); -v/-q step from it.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="text, or json: one JSON object per line (default: [log] format, else text).",
)
def run(
    config_path: str | None,
    emulate: Sequence[str],
    duration: float | None,
    control_path: str | None,
    summary_path: str | None,
    boards_dirs: Sequence[str],
    allow_empty: bool,
    quiet: int,
    verbose: int,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run the runtime until stopped (SIGINT/SIGTERM drain in order; a second one exits at once)."""
    from firmware_host.cli.run import RunOptions, run_main

    opts = RunOptions(
        config_path=config_path,
        emulate=list(emulate),
        duration=duration,
        control_path=control_path,
        summary_path=summary_path,
        boards_dirs=list(boards_dirs),
        quiet=quiet > 0,
        verbose=verbose,
        quieter=quiet,
        log_level=log_level,
        log_format=log_format,
        allow_empty=allow_empty,
        exit_bounded=True,
    )
    sys.exit(run_main(opts))


# -- control plane ---------------------------------------------------------------------


def ask(
    control_path: str | None, config_path: str | None, request: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    """One request to a running runtime; exits 3 when none listens."""
    from firmware_host.control.client import request_sync
    from firmware_host.errors import ControlError, NoRuntime

    path = resolve_control(control_path, config_path)
    try:
        return request_sync(path, request, timeout=timeout)
    except NoRuntime as exc:
        fail(f"{exc} (start one with: firmware-host run --control {path} ...)", EXIT_NO_RUNTIME)
    except ControlError as exc:
        fail(str(exc), exc.exit_code)


@main.command()
@control_option
@config_option
@json_option
def buffers(control_path: str | None, config_path: str | None, as_json: bool) -> None:
    """The buffer of a running runtime: depth, bytes, dropped, per device."""
    reply = ask(control_path, config_path, {"cmd": "buffers"})
    if as_json:
        emit_json(reply)
    else:
        from firmware_host.cli.render import buffers_table

        click.echo(buffers_table(reply))


@main.command()
@control_option
@config_option
@click.option("--device", metavar="NAME", help="Flush only this device's frames.")
@click.option(
    "--timeout",
    type=FiniteRange(min=0),
    default=30.0,
    show_default=True,
    help="Give up after this many seconds (a sink may be down).",
)
@json_option
def flush(control_path: str | None, config_path: str | None, device: str | None, timeout: float, as_json: bool) -> None:
    """Flush now (all, or one device's frames) and say how many went out."""
    request: dict[str, Any] = {"cmd": "flush", "timeout": timeout}
    if device:
        request["device"] = device
    reply = ask(control_path, config_path, request, timeout=timeout + 5)
    if as_json:
        emit_json(reply)
    else:
        per = ", ".join(f"{k} {v}" for k, v in sorted(reply["devices"].items()))
        click.echo(f"flushed {reply['flushed']} frames" + (f" ({per})" if per else ""))
        for sink in reply.get("sinks", []):
            click.echo(f"  sink {sink['name']}: sent {sink['sent']}" + ("" if sink["done"] else ", not finished"))
        if reply.get("incomplete"):
            click.echo("flush incomplete: a sink did not accept the frames in time; they stay buffered")
    if reply.get("incomplete"):  # it gave up: a failure, whatever was printed
        sys.exit(EXIT_FAILURE)


@main.command()
@control_option
@config_option
@json_option
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C (on a terminal in place, else table after table).")
@click.option(
    "--interval",
    type=FiniteRange(min=0.1, max=3600),
    default=2.0,
    show_default=True,
    metavar="S",
    help="With --watch: seconds between refreshes.",
)
def status(control_path: str | None, config_path: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Devices with state and counters, buffer, plugins, uptime."""
    from firmware_host.cli.render import status_table

    if watch:
        from firmware_host.cli.watch import watch as watch_loop

        def render() -> str:
            reply = ask(control_path, config_path, {"cmd": "status"})
            return json.dumps(reply) if as_json else status_table(reply)

        watch_loop(render, interval, sys.stdout, terminal=sys.stdout.isatty(), lines=as_json)
        return
    reply = ask(control_path, config_path, {"cmd": "status"})
    if as_json:
        emit_json(reply)
    else:
        click.echo(status_table(reply))


@main.command()
@control_option
@config_option
@click.option("--wait", is_flag=True, help="Return once the runtime has exited (exit 1 at --timeout).")
@click.option(
    "--timeout",
    type=FiniteRange(min=0, max=86400),
    default=60.0,
    show_default=True,
    metavar="S",
    help="With --wait: give up after this many seconds.",
)
def stop(control_path: str | None, config_path: str | None, wait: bool, timeout: float) -> None:
    """Orderly shutdown of a running runtime."""
    pid = ask(control_path, config_path, {"cmd": "ping"})["pid"] if wait else None
    ask(control_path, config_path, {"cmd": "stop"})
    click.echo("stopping: the runtime drains its buffer and exits")
    if pid is None:
        return
    from firmware_host.cli.waitexit import wait_for_exit

    path = resolve_control(control_path, config_path)
    if not wait_for_exit(path, pid, timeout):
        fail(f"the runtime (pid {pid}) is still running after {timeout:g} s", EXIT_FAILURE)
    click.echo("stopped")


# -- talking to a board: send, request ---------------------------------------------------


class FrameTypeParam(click.ParamType[int]):
    """A frame type: 0..255, decimal or 0x hex."""

    name = "TYPE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value), 0)
            except ValueError:
                self.fail(f"{value!r} is not a number (e.g. 240 or 0xf0)", param, ctx)
        if not 0 <= number <= 0xFF:
            self.fail(f"{value!r} is not a frame type from 0 to 255 (0xff)", param, ctx)
        return number


def body_options(fn: Any) -> Any:
    for option in (
        click.option("--file", "body_file", metavar="F", help="The body: the bytes of file F ('-': stdin)."),
        click.option("--text", metavar="S", help="The body: S (UTF-8; a line for text codecs)."),
        click.option("--hex", "hex_body", metavar="H", help="The body as hex digits, e.g. 01ff."),
        click.option("--type", "frame_type", type=FrameTypeParam(), help="fh1 frame type (default 0xf0, a command)."),
    ):
        fn = option(fn)
    return fn


def frame_body(hex_body: str | None, text: str | None, body_file: str | None, *, required: bool) -> dict[str, str]:
    """The request's body arguments from --hex, --text or --file (one of them); exit 2 for a bad one."""
    from firmware_host.control.protocol import MAX_BODY

    given = [name for name, v in (("--hex", hex_body), ("--text", text), ("--file", body_file)) if v is not None]
    if len(given) > 1:
        fail(f"give one of --hex, --text, --file, not {' and '.join(given)}", EXIT_USAGE)
    if required and not given:
        fail("give the body with --hex H, --text S or --file F", EXIT_USAGE)
    if text is not None:
        return {"text": text}
    if hex_body is not None:
        try:
            data = bytes.fromhex(hex_body)
        except ValueError:
            fail(f"--hex {hex_body[:40]!r}: expected hex digits, two per byte (e.g. 01ff)", EXIT_USAGE)
    elif body_file is not None:
        try:
            if body_file == "-":
                data = sys.stdin.buffer.read(MAX_BODY + 1)
            else:
                with open(body_file, "rb") as f:
                    data = f.read(MAX_BODY + 1)  # bounded: never more than one over the limit
        except OSError as exc:
            fail(f"--file {body_file}: {exc.strerror or exc}", EXIT_USAGE)
    else:
        return {}
    if len(data) > MAX_BODY:
        fail(f"the body is longer than {MAX_BODY} bytes", EXIT_USAGE)
    return {"hex": data.hex()}


@main.command("send")
@click.argument("device")
@body_options
@control_option
@config_option
@json_option
def send_cmd(
    device: str,
    frame_type: int | None,
    hex_body: str | None,
    text: str | None,
    body_file: str | None,
    control_path: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Send one downlink frame to DEVICE through its codec (a running runtime)."""
    request: dict[str, Any] = {"cmd": "send", "device": device, **frame_body(hex_body, text, body_file, required=True)}
    if frame_type is not None:
        request["type"] = frame_type
    reply = ask(control_path, config_path, request)
    if as_json:
        emit_json(reply)
    else:
        click.echo(f"sent {reply['bytes']} bytes to {device} (type 0x{reply['type']:02x}, seq {reply['seq']})")


@main.command("request")
@click.argument("device")
@body_options
@click.option(
    "--timeout",
    type=FiniteRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="S",
    help="Seconds to wait for the ack of each attempt (at most 60).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    metavar="N",
    help="Send again this many times when no ack comes (at most 10), backing off.",
)
@control_option
@config_option
@json_option
def request_cmd(
    device: str,
    frame_type: int | None,
    hex_body: str | None,
    text: str | None,
    body_file: str | None,
    timeout: float,
    retries: int,
    control_path: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Send an fh1 command to DEVICE and print its ack's reply as hex (exit 1: no ack)."""
    request: dict[str, Any] = {
        "cmd": "request",
        "device": device,
        "timeout": timeout,
        "retries": retries,
        **frame_body(hex_body, text, body_file, required=False),
    }
    if frame_type is not None:
        request["type"] = frame_type
    # the runtime bounds the attempts (and refuses more than it allows at once)
    wait = (min(retries, 10) + 1) * (min(timeout, 60.0) + 5.0) + 5.0
    reply = ask(control_path, config_path, request, timeout=wait)
    if as_json:
        emit_json(reply)
        return
    click.echo(reply["reply"])
    if reply.get("fields"):
        click.echo(json.dumps(reply["fields"], default=str))


# -- tail -------------------------------------------------------------------------------


@main.command()
@click.argument("devices", nargs=-1, metavar="[DEVICE]...")
@control_option
@config_option
@json_option
@click.option("--hex", "as_hex", is_flag=True, help="Show every payload byte, in hex.")
def tail(
    devices: Sequence[str], control_path: str | None, config_path: str | None, as_json: bool, as_hex: bool
) -> None:
    """Frames of a running runtime as they arrive (all devices, or those named), until Ctrl-C."""
    from firmware_host.cli.tail import follow, main_out, tail_request
    from firmware_host.control.client import open_stream
    from firmware_host.errors import ControlError, NoRuntime

    path = resolve_control(control_path, config_path)
    try:
        try:
            stream = open_stream(path, tail_request(devices))
        except NoRuntime as exc:
            fail(f"{exc} (start one with: firmware-host run --control {path} ...)", EXIT_NO_RUNTIME)
        except ControlError as exc:
            fail(str(exc), exc.exit_code)
        with stream:
            try:
                code = follow(stream, as_json=as_json, as_hex=as_hex, out=main_out(), err=sys.stderr)
            except ControlError as exc:
                fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        code = EXIT_OK  # Ctrl-C is how a tail ends
    sys.exit(code)


# -- devices, boards, plugins -----------------------------------------------------------


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
def devices(ctx: click.Context, as_json: bool) -> None:
    """Serial ports on this host with the board each matches; add/remove on a running runtime."""
    if ctx.invoked_subcommand is not None:
        return
    from firmware_host.config.schema import ConfigError
    from firmware_host.transport.detect import list_devices

    try:
        found = list_devices()
    except ConfigError as exc:  # an invalid board file (shipped or $FIRMWARE_HOST_BOARDS)
        fail(str(exc), EXIT_USAGE)
    if as_json:
        emit_json(found)
        return
    from firmware_host.cli.render import table

    click.echo(
        table(
            ("port", "description", "vid:pid", "serial", "board"),
            [[d["port"], d["description"], d["vid_pid"], d["serial"], d["board"]] for d in found],
        )
    )


@devices.command("add")
@click.argument("name")
@click.argument("port")
@click.option("--codec", help="Codec (fh1, nmea, lines, or a plugin's).")
@click.option("--board", help="Board supplying codec, baudrate and schema: a name, or a board file (.toml).")
@click.option("--baudrate", type=click.IntRange(min=1))
@click.option(
    "--decode/--no-decode",
    default=None,
    help="Decode the frames' values by the board's schema, or keep bytes and text only (default: the board's choice).",
)
@control_option
@config_option
def devices_add(
    name: str,
    port: str,
    codec: str | None,
    board: str | None,
    baudrate: int | None,
    decode: bool | None,
    control_path: str | None,
    config_path: str | None,
) -> None:
    """Start reading a new device on a running runtime."""
    request: dict[str, Any] = {"cmd": "devices.add", "name": name, "port": port}
    if board is not None and board.endswith(".toml"):  # a board file: the runtime's directory is not ours
        from firmware_host.config.boards import board_file_path

        board = board_file_path(board)
    for key, value in (("codec", codec), ("board", board), ("baudrate", baudrate), ("decode", decode)):
        if value is not None:
            request[key] = value
    ask(control_path, config_path, request)
    click.echo(f"added {name} on {port}")


@devices.command("remove")
@click.argument("name")
@control_option
@config_option
def devices_remove(name: str, control_path: str | None, config_path: str | None) -> None:
    """Stop a device's reader in order; its buffered frames stay and flush."""
    ask(control_path, config_path, {"cmd": "devices.remove", "name": name})
    click.echo(f"removed {name}")


@main.group(invoke_without_command=True)
@click.option("--boards-dir", "boards_dirs", multiple=True, metavar="DIR", help="Extra board definitions.")
@json_option
@click.pass_context
def boards(ctx: click.Context, boards_dirs: Sequence[str], as_json: bool) -> None:
    """Known board definitions; `boards header BOARD` prints a board's C header."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = tuple(boards_dirs)  # `boards --boards-dir DIR header ...` finds DIR's boards too
        return
    from firmware_host.config.boards import load_boards
    from firmware_host.config.schema import ConfigError

    try:
        known = load_boards(boards_dirs)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if as_json:
        emit_json({name: b.to_dict() for name, b in sorted(known.items())})
        return
    from firmware_host.cli.render import table

    click.echo(
        table(
            ("board", "codec", "baudrate", "usb", "emulated rate", "description"),
            [
                [
                    b.name,
                    b.codec,
                    b.baudrate,
                    f"{b.vid:04x}:{b.pid:04x}" if b.vid is not None and b.pid is not None else None,
                    f"{b.emulator.rate:g} Hz",
                    b.description,
                ]
                for _, b in sorted(known.items())
            ],
        )
    )


@boards.command("header")
@click.argument("board")
@click.option("--boards-dir", "boards_dirs", multiple=True, metavar="DIR", help="Extra board definitions.")
@click.pass_obj
def boards_header(group_dirs: tuple[str, ...], board: str, boards_dirs: Sequence[str]) -> None:
    """A C header from BOARD's payload schema: per frame type, a packed struct
    and an encode function on tools/c/fh1_encoder.h."""
    from firmware_host.config.boards import find_board, load_boards
    from firmware_host.config.schema import ConfigError
    from firmware_host.values.cheader import c_header

    try:
        known = load_boards([*group_dirs, *boards_dirs])
        found = find_board(board, known)
        if found is None:
            fail(f"unknown board {board!r} (boards: {', '.join(sorted(known))}; or a board file .toml)", EXIT_USAGE)
        schema = found.schema
        if schema is None or not schema.frames:
            what = "its schema is csv (text lines)" if schema is not None else "it has no [schema]"
            fail(f"board {board!r}: {what}; the C header is for binary layouts ([[schema.frames]])", EXIT_USAGE)
        if found.codec != "fh1":
            fail(f"board {board!r} uses the {found.codec} codec; the C header encodes fh1 frames", EXIT_USAGE)
        click.echo(c_header(found.name, schema.frames, source=found.source), nl=False)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


@main.command()
@config_option
@json_option
def plugins(config_path: str | None, as_json: bool) -> None:
    """Discovered plugins, their periodic tasks and state."""
    from firmware_host.config.schema import ConfigError
    from firmware_host.plugins.host import plugins_report, read_plugin_table

    table, source = None, None
    if config_path:
        # only [plugins.*]: the rest of the config may name codecs the plugins provide
        try:
            table, source = read_plugin_table(config_path)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
    report = plugins_report(table, source=source)
    if as_json:
        emit_json(report)
        return
    from firmware_host.cli.render import table as render_table

    click.echo(
        render_table(
            ("plugin", "enabled", "source", "state"),
            [[p["name"], "yes" if p["enabled"] else "no", p["source"], p["state"]] for p in report["plugins"]],
        )
    )
    for p in report["plugins"]:
        if p.get("error"):
            click.echo(f"{p['name']}: {p['error']}")
    tasks = [
        [
            p["name"],
            t["name"],
            f"{t['interval']:g} s",
            t["missed_policy"],
            "-" if t["timeout"] is None else f"{t['timeout']:g} s",
        ]
        for p in report["plugins"]
        for t in p["tasks"]
    ]
    if tasks:
        click.echo()
        click.echo(render_table(("plugin", "task", "interval", "missed", "timeout"), tasks))


@main.group("config")
def config_group() -> None:
    """Check a config without running it, or print a sample."""


@config_group.command("check")
@click.option("-c", "--config", "config_path", required=True, metavar="FILE", help="Config file (TOML).")
@control_option
@click.option("--summary", "summary_path", metavar="FILE", help="Check that run --summary FILE could be written.")
@click.option("--boards-dir", "boards_dirs", multiple=True, metavar="DIR", help="Extra board definitions.")
def config_check(
    config_path: str, control_path: str | None, summary_path: str | None, boards_dirs: Sequence[str]
) -> None:
    """Validate everything `run -c FILE` would (plugins, boards, codecs, sinks, device URLs,
    the control socket path) without opening a port: exit 0, or 2 with one line per problem."""
    from firmware_host.cli.configcmd import check_config_file

    result = check_config_file(
        config_path, control_path=control_path, summary_path=summary_path, boards_dirs=boards_dirs
    )
    if result.problems:
        for problem in result.problems:
            click.echo(f"firmware-host: {problem}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(result.summary())


@config_group.command("sample")
def config_sample() -> None:
    """Print a commented config that `config check` accepts."""
    from firmware_host.cli.configcmd import SAMPLE

    click.echo(SAMPLE, nl=False)


@main.group()
def spool() -> None:
    """Inspect a disk spool while no runtime uses it."""


@spool.command("stats")
@click.argument("path")
@json_option
def spool_stats_cmd(path: str, as_json: bool) -> None:
    """Frames and bytes per device in the spool at PATH."""
    from firmware_host.errors import SpoolBusy, SpoolError
    from firmware_host.spool import spool_stats

    try:
        stats = spool_stats(path)
    except (SpoolBusy, SpoolError, OSError) as exc:
        fail(str(exc), EXIT_USAGE)
    if as_json:
        emit_json(stats)
        return
    from firmware_host.cli.render import table

    click.echo(f"{path}: {stats['frames']} frames, {stats['bytes']} bytes (file {stats['file_bytes']} bytes)")
    click.echo(
        table(
            ("device", "frames", "bytes"),
            [[name, d["frames"], d["bytes"]] for name, d in sorted(stats["devices"].items())],
        )
    )


@spool.command("export")
@click.argument("path")
@click.option("-o", "--output", metavar="FILE", help="Write here instead of standard output.")
@click.option("--device", metavar="NAME", help="Only this device's frames.")
def spool_export_cmd(path: str, output: str | None, device: str | None) -> None:
    """The spooled frames as jsonl records, oldest first (the spool is left as it is)."""
    from firmware_host.errors import SpoolBusy, SpoolError
    from firmware_host.spool import spool_export

    try:
        if output:
            with open(output, "wb") as out:
                count = spool_export(path, out, device)
        else:
            count = spool_export(path, sys.stdout.buffer, device)
            sys.stdout.buffer.flush()
    except BrokenPipeError:  # the reader left (`| head`): nothing more to say to anyone
        reader_left()
    except (SpoolBusy, SpoolError, OSError) as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"exported {count} frames", err=True)


@main.command()
@click.argument("board", required=False)
@click.option("-n", "count", type=click.IntRange(1, 256), default=1, show_default=True, help="How many boards.")
@click.option("--rate", type=FiniteRange(min=0, min_open=True), metavar="HZ", help="Frames per second each.")
@click.option("--dir", "directory", metavar="DIR", help="Where to put the stable port symlinks.")
@click.option("--noise", type=FiniteRange(0, 1), default=0.0, help="Probability of line noise per frame.")
@click.option("--corrupt", type=FiniteRange(0, 1), default=0.0, help="Probability of a corrupted frame.")
@click.option("--skip", type=FiniteRange(0, 1), default=0.0, help="Probability of a skipped seq.")
@click.option("--burst", type=click.IntRange(min=0), default=0, help="Send frames in bursts of this many.")
@click.option(
    "--unplug-every", type=FiniteRange(min=0), default=0.0, metavar="S", help="Unplug and replug every S seconds."
)
@click.option("--duration", type=FiniteRange(min=0), metavar="S", help="Stop after S seconds.")
@click.option("--seed", type=int, help="Random seed for reproducible faults.")
@click.option("--boards-dir", "boards_dirs", multiple=True, metavar="DIR", help="Extra board definitions.")
@click.option("--acks/--no-acks", default=True, show_default=True, help="fh1 boards ack the host's commands.")
@click.option(
    "--ack-drop-first", type=click.IntRange(min=0), default=0, metavar="N", help="Leave the first N commands unacked."
)
@click.option(
    "--ack-drop", type=FiniteRange(0, 1), default=0.0, metavar="P", help="Then lose each ack with probability P."
)
@click.option("--ack-delay", type=FiniteRange(0, 60), default=0.0, metavar="S", help="Send each ack S seconds late.")
@click.option("--replay", "replay_path", metavar="FILE", help="Play a recording (`record`) instead of a board.")
@click.option("--speed", metavar="X", help="With --replay: X times the recorded pace; 0 or max: as fast as possible.")
@click.option("--drop", type=FiniteRange(0, 1), help="With --replay: probability of a byte lost per frame.")
@click.option("--codec", metavar="NAME", help="With --replay: the device's codec (default: the recording's).")
@click.pass_context
def emulate(
    ctx: click.Context,
    board: str | None,
    count: int,
    rate: float | None,
    directory: str | None,
    noise: float,
    corrupt: float,
    skip: float,
    burst: int,
    unplug_every: float,
    duration: float | None,
    seed: int | None,
    boards_dirs: Sequence[str],
    acks: bool,
    ack_drop_first: int,
    ack_drop: float,
    ack_delay: float,
    replay_path: str | None,
    speed: str | None,
    drop: float | None,
    codec: str | None,
) -> None:
    """Virtual boards on pty pairs, or a recording played on one (--replay);
    prints the port paths and runs until stopped."""
    if directory is not None and os.path.lexists(directory) and not os.path.isdir(directory):
        fail(f"emulate --dir {directory}: exists and is not a directory", EXIT_USAGE)
    if replay_path is not None:
        sys.exit(
            replay_command(ctx, board, replay_path, speed, directory, noise, corrupt, skip, drop, seed, codec, duration)
        )
    if board is None:
        fail("emulate: give a BOARD, or --replay FILE (see: firmware-host emulate --help)", EXIT_USAGE)
    for name, value in (("--speed", speed), ("--drop", drop), ("--codec", codec)):
        if value is not None:
            fail(f"emulate: {name} goes with --replay FILE", EXIT_USAGE)
    from firmware_host.emulation.fleet import emulate_main

    sys.exit(
        emulate_main(
            board=board,
            count=count,
            rate=rate,
            directory=directory,
            noise=noise,
            corrupt=corrupt,
            skip=skip,
            burst=burst,
            unplug_every=unplug_every,
            duration=duration,
            seed=seed,
            boards_dirs=list(boards_dirs),
            acks=acks,
            ack_drop_first=ack_drop_first,
            ack_drop=ack_drop,
            ack_delay=ack_delay,
        )
    )


# -- record and replay ------------------------------------------------------------------


def replay_command(
    ctx: click.Context,
    board: str | None,
    path: str,
    speed: str | None,
    directory: str | None,
    noise: float,
    corrupt: float,
    skip: float,
    drop: float | None,
    seed: int | None,
    codec: str | None,
    duration: float | None,
) -> int:
    """``emulate --replay FILE``: the options that make sense with it, checked."""
    from click.core import ParameterSource

    if board is not None:
        fail(f"emulate: --replay plays a recording, not a board ({board!r})", EXIT_USAGE)
    for param in ("count", "rate", "burst", "unplug_every", "boards_dirs"):
        if ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE:
            fail(f"emulate --replay: --{param.replace('_', '-')} does not apply to a replay", EXIT_USAGE)
    from firmware_host.emulation.replay import ReplayFaults, replay_main, speed_value

    try:
        factor = 1.0 if speed is None else speed_value(speed)
        faults = ReplayFaults(noise=noise, corrupt=corrupt, drop=drop or 0.0, skip=skip, seed=seed or 0)
    except ValueError as exc:
        fail(f"emulate --replay: {exc}", EXIT_USAGE)
    return replay_main(path, speed=factor, faults=faults, codec=codec, directory=directory, duration=duration)


@main.command()
@click.argument("target", metavar="DEVICE|PORT")
@click.option("-o", "--output", required=True, metavar="FILE", help="The recording file to write.")
@click.option("--duration", type=FiniteRange(min=0, min_open=True), metavar="S", help="Stop after S seconds.")
@click.option(
    "--buffer",
    type=click.IntRange(4096, 64 * 1024 * 1024),
    default=1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Bytes held for a writer that falls behind (beyond: reads lost, counted).",
)
@click.option("--baudrate", type=click.IntRange(50, 4_000_000), help="PORT only: the line speed (default: 115200).")
@click.option("--codec", metavar="NAME", help="PORT only: the device's codec, written in the header for replays.")
@click.option(
    "--board", metavar="NAME", help="PORT only: the device's board (codec, options, baudrate): a name or a .toml file."
)
@control_option
@config_option
def record(
    target: str,
    output: str,
    duration: float | None,
    buffer: int,
    baudrate: int | None,
    codec: str | None,
    board: str | None,
    control_path: str | None,
    config_path: str | None,
) -> None:
    """Record a port's raw bytes with their receive times (docs/recording.md):
    a DEVICE of the running runtime, or a PORT (a path or URL) no runtime holds.
    Stops on Ctrl-C or --duration."""
    from firmware_host.cli.record import PortSource, is_port, record_device_main, record_port_main

    if not is_port(target):
        for name, value in (("--baudrate", baudrate), ("--codec", codec), ("--board", board)):
            if value is not None:
                fail(f"record: {name} is for a PORT; the runtime knows its device {target!r}", EXIT_USAGE)
        path = resolve_control(control_path, config_path)
        sys.exit(record_device_main(path, target, output, duration, buffer))
    source = PortSource(url=target, baudrate=baudrate or 115200, codec=codec)
    if board is not None:
        from firmware_host.config.boards import find_board, load_boards
        from firmware_host.errors import ConfigError

        try:
            known = load_boards()
            spec = find_board(board, known)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        if spec is None:
            fail(
                f"record: unknown board {board!r} (known: {', '.join(sorted(known)) or 'none'}; or a board file .toml)",
                EXIT_USAGE,
            )
        if board.endswith(".toml"):
            board = spec.source  # the recording names the file wherever it is replayed from
        if codec is not None and codec != spec.codec:
            fail(f"record: board {board!r} speaks {spec.codec}, not {codec}", EXIT_USAGE)
        source = PortSource(
            url=target,
            baudrate=baudrate or spec.baudrate,
            codec=spec.codec,
            codec_options=dict(spec.codec_options),
            board=board,
        )
    elif codec is not None:
        from firmware_host.codecs import BUILTIN_CODECS

        if codec not in BUILTIN_CODECS:
            fail(f"record: unknown codec {codec!r} (known: {', '.join(sorted(BUILTIN_CODECS))})", EXIT_USAGE)
    sys.exit(record_port_main(source, output, duration, buffer))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: Sequence[str]) -> None:
    """Benchmark the runtime against a thread-per-port baseline (--help for options)."""
    from firmware_host.cli.bench import bench_main

    try:
        sys.exit(bench_main(args))
    except FileNotFoundError as exc:
        fail(str(exc), EXIT_FAILURE)


if __name__ == "__main__":  # pragma: no cover
    main()
