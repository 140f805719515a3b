"""Shutdown is bounded whatever the sinks do: a real `firmware-host run`
whose only sink is stuck in a write (the stdout plugin on a pipe the test
holds open and never reads) exits within `grace` + 1 s of SIGTERM, and
within 1 s of a second one, with the summary written and the undelivered
frames reported as lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from firmware_host import encode_packet
from firmware_host.testing import assert_accounting
from tests.conftest import REPO, cli, cli_popen
from tests.test_shutdown import wait_status

pytestmark = pytest.mark.timeout(60)

#: what a loaded 2-core CI machine may add to a bound (process exit included);
#: the old behaviour was no exit at all
SLACK = 1.5
FRAMES = 3000  # ~170 bytes a line: several times what a pipe buffer holds


def stuck_stdout_config(path, port, grace, live=None):
    """The stdout plugin's sink (stuck on a full pipe), and a jsonl sink at ``live``."""
    sinks = f'[[sinks]]\ntype = "jsonl"\npath = "{live}"\n' if live else ""
    path.write_text(f"""
[buffer]
flush_interval = 0.05
batch_size = 500

[shutdown]
grace = {grace}

[[devices]]
name = "imu0"
port = "{port}"
codec = "fh1"

[plugins.stdout]

{sinks}""")


async def start_stuck(fh_ports, short_tmp, tmp_path, grace, quiet=True, hung=None, site=None):
    """A run whose stdout pipe is full and never read: its sink write hangs.
    With ``hung``: the ``hung`` plugin's sink instead (``HUNG_PLUGIN``, from ``site``)."""
    port = fh_ports.new()
    sock, summary = str(short_tmp / "c.sock"), tmp_path / "summary.json"
    cfg = tmp_path / "run.toml"
    stuck_stdout_config(cfg, port.path, grace, live=tmp_path / "live.jsonl")
    env = None
    if hung is not None:
        text = cfg.read_text().replace("[plugins.stdout]", f'[plugins.hung]\nhow = "{hung}"')
        cfg.write_text(text)
        env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    args = ["run", "-c", str(cfg), "--control", sock, "--summary", str(summary), *(["-q"] if quiet else [])]
    proc = cli_popen(*args, cwd=tmp_path, env=env)
    try:
        await wait_status(sock, lambda s: s["devices"]["imu0"]["state"] == "connected")
        await port.write(b"".join(encode_packet(0, s, bytes(64)) for s in range(FRAMES)))
        # every frame read; the sink took what the pipe holds and is now stuck
        status = await wait_status(
            sock, lambda s: s["devices"]["imu0"]["frames"] == FRAMES and s["devices"]["imu0"]["buffered"] > 0
        )
    except BaseException:
        finish(proc)  # a run left behind stays stuck for ever, holding its pty
        raise
    return proc, sock, summary, status


async def exit_time(proc: subprocess.Popen[str], started: float, wait: float = 30) -> float:
    """Seconds from ``started`` to the exit, without reading the stuck pipe."""
    await asyncio.to_thread(proc.wait, wait)
    return time.monotonic() - started


def finish(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    _out, err = proc.communicate(timeout=10)
    return err


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "with-status-table"])
async def test_sigterm_exits_within_grace_with_a_stuck_sink(fh_ports, short_tmp, tmp_path, quiet):
    """Without -q the final status table goes to the same stuck stdout: it is
    given up after half a second (PRINT_TIMEOUT), within the same bound."""
    grace = 1.0
    proc, _sock, summary, _status = await start_stuck(fh_ports, short_tmp, tmp_path, grace, quiet)
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        elapsed = await exit_time(proc, started)
    finally:
        err = finish(proc)
    print(f"exit {elapsed:.2f} s after SIGTERM (grace {grace} s)")
    assert elapsed < grace + 1 + SLACK, err
    assert proc.returncode == 1 and "Traceback" not in err
    final = json.loads(summary.read_text())
    assert_accounting(final)
    d = final["devices"]["imu0"]
    assert d["lost"] == d["buffered"] > 0 and d["frames"] == FRAMES
    assert f"{d['lost']} frames lost" in err
    # per sink: the stuck one lost what it never had; the live one lost nothing
    stuck, live = final["sinks"]
    assert (stuck["name"], live["name"]) == ("stdout", "jsonl")
    assert stuck["lost"] == d["lost"] and live["lost"] == 0 and live["delivered"] == FRAMES
    assert len((tmp_path / "live.jsonl").read_text().splitlines()) == FRAMES


async def test_second_signal_exits_within_a_second_with_a_stuck_sink(fh_ports, short_tmp, tmp_path):
    proc, sock, summary, _status = await start_stuck(fh_ports, short_tmp, tmp_path, grace=30.0)
    try:
        proc.send_signal(signal.SIGTERM)
        # the drain is under way (readers closed), the sink still stuck
        await wait_status(sock, lambda s: s["devices"]["imu0"]["state"] == "closed")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        elapsed = await exit_time(proc, started)
    finally:
        err = finish(proc)
    print(f"exit {elapsed:.2f} s after the second SIGTERM")
    assert elapsed < 1 + SLACK, err
    assert proc.returncode == 1 and "Traceback" not in err
    final = json.loads(summary.read_text())
    assert_accounting(final)
    assert final["devices"]["imu0"]["lost"] > 0
    assert f"{final['devices']['imu0']['lost']} frames lost" in err


#: a plugin whose sink never finishes a write, each time leaving behind
#: something else that an exit can wait on (``how``)
HUNG_PLUGIN = """
import asyncio
import threading
import time
from collections.abc import AsyncIterator

from firmware_host import Sink


async def deaf():
    # swallows every cancel: only the end of the process ends it
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


class Hung(Sink):
    name = "hung"

    def __init__(self, how):
        self.how = how
        self.never = threading.Event()

    async def write(self, frames):
        if self.how == "executor":  # a blocking client library's call, in the default executor
            await asyncio.get_running_loop().run_in_executor(None, self.never.wait)
        elif self.how == "thread":  # a thread of its own (not a daemon) that never returns
            threading.Thread(target=self.never.wait, name="hung-write").start()
            await asyncio.Event().wait()
        elif self.how == "deaf":  # a coroutine that ignores cancellation
            await deaf()
        else:
            await asyncio.Event().wait()

    async def close(self):
        if self.how == "deaf":
            await deaf()
        elif self.how == "block":  # a sink bug: blocking I/O on the loop
            time.sleep(3600)


def setup(ctx):
    how = ctx.take_options({"how": (str, ...)})["how"]
    ctx.add_sink(Hung(how))
    if how == "task":  # a periodic task whose run never ends (given the grace after one signal)
        ctx.every(0.05, asyncio.Event().wait)
"""


@pytest.fixture(scope="module")
def hung_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for PYTHONPATH: the ``hung`` plugin, installed by its entry point."""
    root = tmp_path_factory.mktemp("hung-site")
    (root / "hungplug.py").write_text(HUNG_PLUGIN)
    info = root / "hungplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hungplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[firmware_host.plugins]\nhung = hungplug\n")
    return root


async def second_signal_exit(fh_ports, short_tmp, tmp_path, hung_site, how):
    """(seconds from the second SIGTERM to the exit, stderr, the run's process)."""
    proc, sock, _summary, _status = await start_stuck(fh_ports, short_tmp, tmp_path, 30.0, hung=how, site=hung_site)
    try:
        proc.send_signal(signal.SIGTERM)
        # the drain under way, and the live sink done: what is lost is the hung sink's alone
        await wait_status(
            sock,
            lambda s: (
                s["devices"]["imu0"]["state"] == "closed"
                and any(k["name"] == "jsonl" and k["delivered"] == FRAMES for k in s["sinks"])
            ),
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        elapsed = await exit_time(proc, started, wait=10)
    finally:
        err = finish(proc)
    print(f"exit {elapsed:.2f} s after the second SIGTERM ({how})")
    return elapsed, err, proc


@pytest.mark.parametrize("how", ["executor", "thread", "deaf", "task"])
async def test_second_signal_exit_is_bounded_whatever_is_left_behind(fh_ports, short_tmp, tmp_path, hung_site, how):
    """What a sink or a plugin leaves behind cannot hold the exit after a
    second signal, and the summary and the lost line still come out: a
    default-executor thread that never returns (asyncio.run's teardown joined
    it), a thread of its own (joined at interpreter exit), a write and a close
    that swallow every cancel (awaited by the close, and by asyncio.run's
    teardown), a plugin task's run (given the rest of the grace)."""
    elapsed, err, proc = await second_signal_exit(fh_ports, short_tmp, tmp_path, hung_site, how)
    assert elapsed < 1 + SLACK, err
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "did not end within" not in err  # not the watchdog: the bounded way out
    final = json.loads((tmp_path / "summary.json").read_text())
    assert_accounting(final)
    d = final["devices"]["imu0"]
    assert d["lost"] > 0 and f"{d['lost']} frames lost" in err
    hung, live = final["sinks"]
    assert (hung["name"], hung["lost"], live["lost"]) == ("hung", d["lost"], 0)


@pytest.mark.parametrize("then", [None, "SIGINT"], ids=["one-signal", "then-ctrl-c"])
async def test_one_signal_exit_is_bounded_whatever_a_sink_left_behind(fh_ports, short_tmp, tmp_path, hung_site, then):
    """One SIGTERM: the drain gives the stuck sink up at the grace, and then the
    thread it left in a write (the default executor's, which the interpreter
    joins at exit, as it joins a sink's own threads) must not hold the exit for
    ever: the interpreter's exit gets EXIT_LIMIT (3 s), then the process ends
    with the run's status, naming the thread; the summary and the lost line
    are out before. A Ctrl-C once the summary is out is a second signal: the
    rest takes at most a second (it was a KeyboardInterrupt that unbounded
    the exit again)."""
    grace = 1.0
    proc, _sock, summary, _status = await start_stuck(
        fh_ports, short_tmp, tmp_path, grace, hung="executor", site=hung_site
    )
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if then is not None:
            async with asyncio.timeout(10):  # across processes no event says "written": look, bounded
                while not summary.exists():
                    await asyncio.sleep(0.02)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
        elapsed = await exit_time(proc, started, wait=20)
    finally:
        err = finish(proc)
    print(f"exit {elapsed:.2f} s after the last signal (grace {grace} s, then {then})")
    assert elapsed < (grace + 3 if then is None else 1) + SLACK, err
    assert proc.returncode == 1 and "Traceback" not in err, err
    if then is None:
        assert "the process did not exit within 3s of the run's end: exiting now (still running: " in err, err
    else:
        assert "SIGINT again: exiting now" in err, err
    final = json.loads(summary.read_text())
    assert_accounting(final)
    d = final["devices"]["imu0"]
    assert d["lost"] > 0 and f"{d['lost']} frames lost" in err


def test_the_watchdogs_are_the_clis_alone_and_come_after_the_summary():
    """Only a process that ends with the run (the CLI) gets a watchdog, and
    the run's end sets none before ``leave``: a slow --summary write was killed
    by one. An in-process caller's watchdog is never started."""
    from firmware_host.cli.secondsignal import SecondSignal

    cli = SecondSignal(exiting=True)
    cli.settle()
    assert cli._watchdog is None and cli.left() is not None  # the teardown bounded, nothing else
    cli.leave(0)
    assert cli._watchdog is not None  # the interpreter's exit
    cli.disarm()
    assert cli._watchdog is None
    caller = SecondSignal(exiting=False)
    caller.arm()
    assert caller._watchdog is None and caller.left() is not None
    caller.leave(0)
    caller.failing()
    assert caller._watchdog is None


async def test_second_signal_exit_is_bounded_even_when_the_loop_is_blocked(fh_ports, short_tmp, tmp_path, hung_site):
    """The last resort: a sink's close blocks the event loop for ever. The
    watchdog armed by the second signal ends the process 1 s after it, exit 1,
    saying so; no summary can be written from a loop that no longer runs."""
    elapsed, err, proc = await second_signal_exit(fh_ports, short_tmp, tmp_path, hung_site, "block")
    assert elapsed < 1 + SLACK, err
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "the run did not end within 1s of the second signal: exiting now" in err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_jsonl_path_that_is_not_a_file_is_refused_at_start(tmp_path, short_tmp, kind):
    """A FIFO nobody reads used to block start-up for ever, deaf to SIGTERM."""
    path = tmp_path / "out.jsonl"
    if kind == "fifo":
        import os

        os.mkfifo(path)
    else:
        path.mkdir()
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[[sinks]]\ntype = "jsonl"\npath = "{path}"\n')
    result = cli(
        "run",
        "-c",
        str(cfg),
        "--allow-empty",
        "--duration",
        "5",
        "--control",
        str(short_tmp / "c.sock"),
        "-q",
        timeout=20,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "not a regular file" in result.stderr, result.stderr


async def deaf_forever() -> None:
    """A task body that swallows every cancel."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


def drop_quietly(tasks: list[asyncio.Task[Any]]) -> None:
    """Tasks a test's run gave up, on a closed loop: dropped with the test
    without asyncio's "destroyed but it is pending" at collection."""
    for task in tasks:
        task.get_coro().close()
        task._log_destroy_pending = False  # type: ignore[attr-defined]


def test_a_task_given_up_at_the_runs_end_is_named(capfd):
    """After one signal (or none) the loop's teardown gives a task deaf to its
    cancel SETTLE_TEARDOWN, then leaves it: the run's end says which (it was
    dropped without a word)."""
    from firmware_host.cli.secondsignal import SecondSignal, run_loop

    async def main() -> None:
        asyncio.get_running_loop().create_task(deaf_forever(), name="deaf")
        asyncio.get_running_loop().create_task(deaf_forever())  # unnamed: its coroutine names it
        await asyncio.sleep(0)

    second = SecondSignal(exiting=False)
    second.teardown_by = time.monotonic() + 0.1  # settle() keeps a bound already set: 0.1 s, not 2
    run_loop(main(), asyncio.new_event_loop, second, settle=True)
    assert len(second.tasks_left) == 2
    second.leave(0)
    err = capfd.readouterr().err
    assert err.count("the run's end gave up waiting for ") == 1, err
    assert "task deaf, task " in err and "deaf_forever" in err, err  # its given name, else its coroutine's
    drop_quietly(second.tasks_left)


def test_an_in_process_run_gives_up_a_deaf_task(capfd, monkeypatch):
    """``run_main`` called inside another program (no ``settle``: it owns its
    process) still gives what ignores its cancel SETTLE_TEARDOWN in all, from
    the teardown's start: it used to wait for a deaf task for ever, so the
    call never returned. A deaf task and a deaf async generator share the
    one bound (each with its own would take twice as long)."""
    from firmware_host.cli import secondsignal

    monkeypatch.setattr(secondsignal, "SETTLE_TEARDOWN", 1.0)

    async def deaf_generator() -> AsyncIterator[int]:
        try:
            yield 1
        finally:
            await deaf_forever()

    async def main() -> None:
        asyncio.get_running_loop().create_task(deaf_forever(), name="deaf")
        agen = deaf_generator()
        await agen.__anext__()  # left suspended: the teardown's shutdown_asyncgens closes it
        main.agen = agen  # type: ignore[attr-defined]  # held past the run, as a leak would

    second = secondsignal.SecondSignal(exiting=False)
    started = time.monotonic()
    secondsignal.run_loop(main(), asyncio.new_event_loop, second, settle=False)
    assert time.monotonic() - started < 1.9  # one bound of 1 s, not one for each wait
    assert len(second.tasks_left) == 2 and "deaf" in [t.get_name() for t in second.tasks_left]
    second.leave(0)
    assert second._watchdog is None  # the caller's process: no watchdog, no exit
    err = capfd.readouterr().err
    assert "the run's end gave up waiting for task BaseEventLoop.shutdown_asyncgens, task deaf " in err, err
    assert "(still running after 1s)" in err, err
    drop_quietly(second.tasks_left)


def test_an_in_process_run_returns_with_a_thread_stuck_in_the_executor(capfd, monkeypatch):
    """A thread of the run's default executor that never returns (a sink's
    write stuck on a dead mount) no longer holds an in-process ``run_main``:
    the executor is not joined without a bound, and ``leave`` names it."""
    import threading

    from firmware_host.cli import secondsignal

    monkeypatch.setattr(secondsignal, "SETTLE_TEARDOWN", 0.3)
    release = threading.Event()

    async def main() -> None:
        asyncio.get_running_loop().run_in_executor(None, release.wait)  # never awaited: stuck

    second = secondsignal.SecondSignal(exiting=False)
    started = time.monotonic()
    try:
        secondsignal.run_loop(main(), asyncio.new_event_loop, second, settle=False)
        second.leave(0)
        assert time.monotonic() - started < 5
        err = capfd.readouterr().err
        assert "the run's end gave up waiting for thread asyncio_0 (still running after 0.3s)" in err, err
    finally:
        release.set()


def test_a_late_signal_to_an_in_process_run_does_not_say_exiting(capfd):
    """The CLI's process exits after a late signal; a program that called
    ``run_main`` keeps its process, so it is told only the run's end is hurried."""
    import signal

    from firmware_host.cli.secondsignal import SecondSignal

    caller = SecondSignal(exiting=False)
    caller.late_signal(signal.SIGINT, None)
    cli_run = SecondSignal(exiting=True)
    cli_run.late_signal(signal.SIGTERM, None)
    cli_run.disarm()
    err = capfd.readouterr().err
    assert "SIGINT again: ending the run now" in err and "SIGINT again: exiting now" not in err, err
    assert "SIGTERM again: exiting now" in err, err
