"""What ``firmware-host run`` does: config + emulation + runtime + signals.

Kept out of cli.py so the CLI only parses and prints, and so tests can drive
the same path in-process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from firmware_host.cli.configcmd import socket_path_problem, summary_path_problem
from firmware_host.cli.logs import choose_level, configured_log, run_logging
from firmware_host.cli.sdnotify import SdNotifier
from firmware_host.cli.secondsignal import SecondSignal, run_loop, within
from firmware_host.config._check import READABLE_URL_SCHEMES
from firmware_host.config.schema import (
    Config,
    ConfigError,
    SinkConfig,
    config_from_dict,
    default_control_socket,
    load_config,
    require_a_sink,
)
from firmware_host.errors import RuntimeFailure, UsageError
from firmware_host.gctune import tune_gc

T = TypeVar("T")
log = logging.getLogger("firmware_host")

DEFAULT_SINK_PATH = "frames.jsonl"

#: a run with nothing to read would wait forever, silently: say how to give it a device
NO_DEVICE = (
    "no device to read: add a [[devices]] table to the config (docs/config.md), or run with --emulate;"
    " to start empty and add devices at run time (firmware-host devices add NAME PORT), pass --allow-empty"
)


@dataclass
class RunOptions:
    config_path: str | None = None
    emulate: list[str] = field(default_factory=list)
    duration: float | None = None
    control_path: str | None = None
    summary_path: str | None = None
    boards_dirs: list[str] = field(default_factory=list)
    quiet: bool = False  # no live view, no periodic summary, no final table
    verbose: int = 0  # -v: log one level more per v
    quieter: int = 0  # -q: log one level less per q
    log_level: str | None = None  # --log-level, beats [log] level
    log_format: str | None = None  # --log-format, beats [log] format
    allow_empty: bool = False  # --allow-empty: start with no device, add them over the control socket
    # the process is the CLI's: once the run is over, nothing left behind (a
    # sink's thread stuck in a write) may hold its exit (secondsignal.settle);
    # off for a run_main called inside another program, which owns its threads
    exit_bounded: bool = False


def run_main(opts: RunOptions) -> int:
    """Exit status: 0 ok, 1 runtime failure or frames lost, 2 usage/config error.

    After a second signal this returns within ``secondsignal.LIMIT`` seconds
    of it. With ``opts.exit_bounded`` (the CLI, whose process ends after this)
    a thread the run left that would hold the exit ends the process with
    ``os._exit`` and this status: after a second signal at once, after any
    other end within ``secondsignal.EXIT_LIMIT`` (firmware_host.cli.secondsignal).
    A program calling this itself keeps its process and its threads; a task
    of the run deaf to its cancel is given up (and named) after
    ``secondsignal.SETTLE_TEARDOWN`` seconds for it too, so this returns."""
    log_config = configured_log(opts.config_path)
    level = choose_level(opts.log_level or log_config.level, opts.verbose, opts.quieter)
    second = SecondSignal(exiting=opts.exit_bounded)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with run_logging(level, opts.log_format or log_config.format):
            code = _run_main(opts, second)
    except BaseException:
        second.failing()  # click's Abort, a bug: that exit is bounded too (the CLI's only)
        raise
    finally:
        if not opts.exit_bounded:  # a program that called this gets its handlers back
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    second.leave(code)
    return code


def _run_main(opts: RunOptions, second: SecondSignal) -> int:
    # a summary that cannot be written would fail only after the whole run
    problem = summary_path_problem(opts.summary_path) if opts.summary_path else None
    if problem is not None:
        print(f"firmware-host: {problem}", file=sys.stderr)
        return 2
    raise_fd_limit()
    try:
        code, final_status = _event_loop_run(_run(opts, second), second, settle=opts.exit_bounded)
    except (ConfigError, UsageError) as exc:
        print(f"firmware-host: {exc}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
        print(f"firmware-host: {exc}", file=sys.stderr)
        return 1
    # written after the event loop ended: no blocking file I/O on the loop
    if opts.summary_path:
        try:
            _write_summary(opts.summary_path, final_status)
        except OSError as exc:  # checked at start, but the directory may have gone since
            print(f"firmware-host: cannot write --summary {opts.summary_path}: {exc.strerror or exc}", file=sys.stderr)
            code = 1
    _report_never_connected(final_status)
    if not opts.quiet:
        from firmware_host.cli.render import status_table

        # after a second signal, only what is left of its second (the lost line comes after)
        _print_bounded(status_table(final_status) + "\n", second.output_time(PRINT_TIMEOUT))
    lost = sum(d["lost"] for d in final_status["devices"].values())
    sinks = final_status.get("sinks") or []
    if lost and sinks and all(s["state"] == "closed" for s in sinks):
        # like a Unix filter whose reader left (`| head`): not a failure, but said
        print(f"firmware-host: {lost} frames not delivered: every sink had closed", file=sys.stderr)
    elif lost:
        print(f"firmware-host: {lost} frames lost (not delivered within the grace period)", file=sys.stderr)
        return 1
    return code


def _report_never_connected(status: dict[str, Any]) -> None:
    """A line on stderr per device that never connected during the run."""
    for name in status.get("never_connected", []):
        reason = status["devices"].get(name, {}).get("last_error") or "no error recorded"
        print(f"firmware-host: device {name} never connected ({reason})", file=sys.stderr)


def raise_fd_limit() -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard limit, for this process.

    Every tty costs five descriptors (pyserial's tty and its two cancel
    pipes), so the usual soft limit of 1024 caps a gateway near 190 ports
    while the hard limit (often 4096 or more) allows many more. Done here, at
    process start, not in the library: a program that embeds the runtime
    owns its own limits.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    # an unlimited hard limit is still capped by the kernel (fs.nr_open on
    # Linux, OPEN_MAX on macOS): try the usual ceilings, highest first
    for target in (hard, 1 << 20, 10240):
        if target == resource.RLIM_INFINITY or target <= soft or (hard != resource.RLIM_INFINITY and target > hard):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.debug("open files limit (RLIMIT_NOFILE) raised from %d to %d", soft, target)
        return
    shown = "unlimited" if hard == resource.RLIM_INFINITY else hard
    log.debug("open files limit (RLIMIT_NOFILE) stays at %d (hard limit %s)", soft, shown)


def _event_loop_run(coro: Coroutine[Any, Any, T], second: SecondSignal, settle: bool = False) -> T:
    try:
        import uvloop  # optional extra [fast]
    except ImportError:
        fast = False
    else:
        fast = True
    if not fast:
        # outside the except block: an error logged during the run must not
        # carry "No module named 'uvloop'" as its context
        return run_loop(coro, asyncio.new_event_loop, second, settle)
    # typed where uvloop is installed, Any where mypy cannot see it: either way T
    result: T = run_loop(coro, uvloop.new_event_loop, second, settle)
    return result


def build_config(opts: RunOptions, boards: Any, **known: Any) -> Config:
    # the serial transport opens every port of a run: a URL scheme it cannot
    # read (a typo like sockt://) is a config error now, not a retry loop later
    if opts.config_path:
        return load_config(opts.config_path, boards=boards, url_schemes=READABLE_URL_SCHEMES, **known)
    return config_from_dict({}, source="<no config>", boards=boards, url_schemes=READABLE_URL_SCHEMES, **known)


async def _run(opts: RunOptions, second: SecondSignal) -> tuple[int, dict[str, Any]]:
    from firmware_host.config.boards import load_boards
    from firmware_host.runtime import Runtime

    # SIGHUP never ends the run: ignored until the runtime can reopen sinks
    # (_run_until_stopped), and again after it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # files are read off the loop, like every other blocking call
    boards = await asyncio.to_thread(load_boards, opts.boards_dirs)
    # plugins first: the config may name their codecs and sink types
    from firmware_host.plugins.host import start_plugins

    plugins = await start_plugins(opts.config_path)
    fleet = None
    # under systemd (Type=notify): READY, STATUS, STOPPING and the watchdog's pings
    notifier = SdNotifier.from_environ()
    if notifier is not None:
        notifier.start_watchdog()
    try:
        cfg = await asyncio.to_thread(
            build_config, opts, boards, known_codecs=plugins.known_codecs(), known_sinks=plugins.known_sinks()
        )
        control = (
            opts.control_path
            or cfg.control.socket
            or os.environ.get("FIRMWARE_HOST_CONTROL")
            or default_control_socket()
        )
        problem = socket_path_problem(control)
        if problem is not None:  # before the emulator starts: bind() would refuse it later
            raise UsageError(problem)
        if opts.emulate:
            from firmware_host.emulation.fleet import Fleet, parse_emulate_spec

            try:
                fleet = Fleet(parse_emulate_spec(opts.emulate, boards))
            except ValueError as exc:  # an unknown board, a bad count, a codec it cannot play
                raise UsageError(f"--emulate: {exc}") from exc
            await fleet.start()
            log.info("emulating %s (ports in %s)", ", ".join(d.name for d in fleet.devices), fleet.directory)
            taken = {d.name for d in cfg.devices}
            extra = [d for d in fleet.device_configs() if d.name not in taken]
            cfg = dataclasses.replace(cfg, devices=[*cfg.devices, *extra])
            if not cfg.sinks and not plugins.sinks:  # the default only when nothing else is configured
                cfg = dataclasses.replace(cfg, sinks=[SinkConfig("jsonl", {"path": DEFAULT_SINK_PATH})])
        no_device = not cfg.devices and not cfg.templates and not opts.allow_empty
        if no_device and opts.config_path is None:
            raise UsageError(NO_DEVICE)  # a bare `run` lacks devices first of all: say how to add one
        require_a_sink(cfg, len(plugins.sinks))
        if no_device:
            raise UsageError(NO_DEVICE)
        rt = Runtime(cfg, control_path=control, boards=boards)
        rt.on_start.append(_tune_gc)
        plugins.attach(rt)
        if not opts.quiet:
            from firmware_host.cli.liveview import attach_live_view

            # a live view on a terminal (log lines to stderr print above it), else a log line every 10 s
            attach_live_view(rt, sys.stdout, logs=sys.stderr)
        if notifier is not None:
            rt.on_start.append(notifier.ready)  # last: once every other part is up
            rt.on_stop.insert(0, notifier.stopping)  # first: the moment the shutdown begins
        summary = await _run_until_stopped(rt, opts.duration, second)
    finally:
        if fleet is not None:
            # the runtime has stopped reading: a write parked on a full pty is not waited for
            await _until_exit(fleet.stop(timeout=0.0), second)
        await _until_exit(plugins.aclose(), second)  # runs still going at shutdown end by the grace deadline
        if notifier is not None:
            await _until_exit(notifier.aclose(), second)
    if summary.failure is not None:
        print(f"firmware-host: {summary.failure}", file=sys.stderr)
        return 1, summary.status
    never = summary.status.get("never_connected", [])
    if opts.duration is not None and rt.devices and len(never) == len(rt.devices):
        # a timed run that read nothing it was asked to: a failure, not "0 frames, ok"
        print("firmware-host: no device connected during the run", file=sys.stderr)
        return 1, summary.status
    return 0, summary.status


async def _until_exit(aw: Coroutine[Any, Any, None], second: SecondSignal) -> None:
    """Await ``aw``; after a second signal only while the exit's teardown may
    wait (a plugin's run in progress would otherwise hold it to the grace)."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.wait((task,), timeout=second.left())
    finally:
        if not task.done():
            task.cancel()  # not awaited: the loop's teardown bounds what is left
    if task.done() and not task.cancelled():
        task.result()  # its error, as if awaited


async def _tune_gc(rt: Any) -> None:
    tune_gc()  # as the runtime starts: what start-up allocated is frozen


async def _run_until_stopped(rt: Any, duration: float | None, second: SecondSignal) -> Any:
    """``rt.run``: the first SIGINT/SIGTERM drains, a second one abandons the
    drain; SIGHUP reopens the sinks' files (logrotate's convention) and never
    stops the run."""
    loop = asyncio.get_running_loop()
    reopening: set[asyncio.Task[None]] = set()  # held until done (the loop keeps only weak references)

    def on_hangup() -> None:
        log.info("SIGHUP: reopening the sinks' files")
        task = loop.create_task(rt.reopen_sinks(), name="reopen-sinks")
        reopening.add(task)
        task.add_done_callback(reopening.discard)

    def on_signal(signame: str) -> None:
        if rt.stopped.is_set():
            # a program's own run_main keeps its process: only the run ends at once
            now = "exiting now" if second.exiting else "ending the run now"
            log.warning("%s again: %s, without waiting for the drain", signame, now)
            second.arm()  # before anything that could fail to return
            rt.abort()
        else:
            log.warning("%s: draining (send it again to exit at once)", signame)
            rt.request_stop(signame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        return await rt.run(duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # from here on (teardown, summary, exit) a signal is a second one: the rest
        # is bounded to a second, not a KeyboardInterrupt that would unbound it
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, second.late_signal)


#: seconds the final status table may wait for a slow stdout reader
PRINT_TIMEOUT = 0.5


def _print_bounded(text: str, timeout: float = PRINT_TIMEOUT) -> None:
    """``text`` on stdout, given up after ``PRINT_TIMEOUT``: a pipe nobody reads
    (the stdout sink's reader, stuck) must not hold the exit. Written to the
    descriptor from a daemon thread, so no lock of ``sys.stdout`` is held if
    it never returns."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # an in-memory stdout (tests): it cannot block
        print(text, end="", flush=True)
        return
    data = text.encode(sys.stdout.encoding or "utf-8", "replace")

    def write() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass  # the reader left: nothing to tell it

    if not within(timeout, write, "status-table"):
        log.warning("stdout is not being read: the final status table was not printed")


def _write_summary(path: str, status: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:  # at exit, after the loop's work is done
        json.dump(status, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
