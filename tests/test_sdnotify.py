"""systemd ``Type=notify`` against a real ``NOTIFY_SOCKET`` the test binds.

Both a socket path and an abstract name (``@…``); a real ``firmware-host
run`` subprocess and a runtime in this process: READY=1 arrives once the
control socket answers, WATCHDOG=1 pings come at half ``WATCHDOG_USEC``, and
STOPPING=1 follows SIGTERM. A send never blocks or raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.cli.sdnotify import SdNotifier, summary_line
from firmware_host.control.client import request, request_sync
from firmware_host.runtime import Runtime
from firmware_host.testing import assert_accounting
from firmware_host.testing.harness import make_config
from tests.conftest import cli_popen

pytestmark = pytest.mark.timeout(30)

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the ``NOTIFY_SOCKET`` value naming it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    directory = tempfile.mkdtemp(prefix="fh-")  # Unix socket paths must stay short
    if request.param == "path":
        name = os.path.join(directory, "notify")
        sock.bind(name)
    else:
        name = f"@fh-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name[1:])
    try:
        yield sock, name
    finally:
        sock.close()
        for leftover in Path(directory).iterdir():
            leftover.unlink()
        os.rmdir(directory)


def receive(sock: socket.socket, deadline: float) -> dict[str, str]:
    """One datagram as its ``VAR=value`` lines; TimeoutError at ``deadline``."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_a_real_run_under_systemd(notify_socket: tuple[socket.socket, str], tmp_path: Path) -> None:
    sock, name = notify_socket
    control = os.path.join(tempfile.mkdtemp(prefix="fh-"), "c.sock")
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "100000"}  # pings every 0.05 s
    proc = cli_popen("run", "-q", "--emulate", "nucleo-imu:1", "--control", control, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 20
        pings_before_ready = 0
        while "READY" not in (got := receive(sock, deadline)):
            assert got == {"WATCHDOG": "1"}, got  # the watchdog pings from the start
            pings_before_ready += 1
        # READY once the control socket answers: ask it at once
        request_sync(control, {"cmd": "ping"}, timeout=5)  # raises unless it answers
        assert got["READY"] == "1" and got["MAINPID"] == str(proc.pid)
        assert got["STATUS"].startswith("0/1 devices connected") or got["STATUS"].startswith("1/1 devices connected")
        pings = 0
        while pings < 5:  # the loop keeps pinging
            got = receive(sock, deadline)
            assert got == {"WATCHDOG": "1"}, got
            pings += 1
        proc.send_signal(signal.SIGTERM)
        while "STOPPING" not in (got := receive(sock, deadline)):
            assert got == {"WATCHDOG": "1"}, got
        assert got == {"STOPPING": "1", "STATUS": "stopping: draining to the sinks"}
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_in_process_ready_after_the_control_socket_and_stopping(
    notify_socket: tuple[socket.socket, str], fh_board, tmp_path: Path
) -> None:
    sock, name = notify_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def next_message() -> dict[str, str]:
        async with asyncio.timeout(10):
            data = (await loop.sock_recv(sock, 4096)).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    board, control = fh_board("fh1"), os.path.join(tempfile.mkdtemp(prefix="fh-"), "c.sock")
    cfg = make_config(
        {
            "shutdown": {"grace": 0.5},
            "devices": [board.config("b", **FAST)],
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        }
    )
    notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "60000"})
    assert notifier is not None and notifier.watchdog_interval == pytest.approx(0.03)
    rt = Runtime(cfg, control_path=control)
    rt.on_start.append(notifier.ready)  # as cli/run.py does
    rt.on_stop.insert(0, notifier.stopping)
    notifier.start_watchdog()
    task = asyncio.create_task(rt.run())
    try:
        while "READY" not in (got := await next_message()):
            assert got == {"WATCHDOG": "1"}
        await request(control, {"cmd": "ping"}, timeout=5)  # raises unless it answers
        assert got["STATUS"].endswith("devices connected, 0 frames, 0 dropped, 1/1 sinks ok")
        for _ in range(3):
            assert await next_message() == {"WATCHDOG": "1"}
        rt.request_stop("test")
        while "STOPPING" not in (got := await next_message()):
            assert got == {"WATCHDOG": "1"}
        summary = await asyncio.wait_for(task, 10)
        assert_accounting(summary.status)
    finally:
        await notifier.aclose()
        if not task.done():
            rt.request_stop("test failed")
            await task
    assert notifier.failed == 0


async def test_a_stuck_loop_stops_the_pings(notify_socket: tuple[socket.socket, str]) -> None:
    sock, name = notify_socket
    sock.setblocking(False)
    notifier = SdNotifier(name, watchdog_interval=0.01)
    notifier.start_watchdog()
    try:
        async with asyncio.timeout(5):  # the loop runs: it pings
            for _ in range(2):
                assert await asyncio.get_running_loop().sock_recv(sock, 100) == b"WATCHDOG=1"
        sent = notifier.sent
        time.sleep(0.1)  # the loop is stuck (on purpose): nobody pings
        assert notifier.sent == sent
    finally:
        await notifier.aclose()


async def test_a_send_never_blocks_or_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "firmware_host.sdnotify")
    directory = tempfile.mkdtemp(prefix="fh-")
    # nobody listens at this path: each send fails, the first one is logged as a warning
    gone = SdNotifier(os.path.join(directory, "gone"))
    assert gone.notify("READY=1") is False and gone.notify("STATUS=x") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gone" in warnings[0].getMessage()
    await gone.aclose()
    # a receiver that never reads: its queue fills, sends fail at once (EAGAIN), never block
    full = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    full.bind(os.path.join(directory, "full"))
    notifier = SdNotifier(os.path.join(directory, "full"))
    started = time.monotonic()
    results = [notifier.notify("STATUS=" + "x" * 500) for _ in range(2000)]
    assert time.monotonic() - started < 5
    assert results[0] is True and results[-1] is False and notifier.failed > 0
    await notifier.aclose()
    full.close()
    for leftover in Path(directory).iterdir():
        leftover.unlink()
    os.rmdir(directory)


def test_from_environ() -> None:
    assert SdNotifier.from_environ({}) is None
    assert SdNotifier.from_environ({"NOTIFY_SOCKET": ""}) is None
    n = SdNotifier.from_environ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000"})
    assert n is not None and n.address == "\0x" and n.shown == "@x" and n.watchdog_interval == 1.5
    n._sock.close()
    for env in (
        {"WATCHDOG_USEC": "nope"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid() + 1)},  # another process's
    ):
        n = SdNotifier.from_environ({"NOTIFY_SOCKET": "/run/x", **env})
        assert n is not None and n.watchdog_interval is None, env
        n._sock.close()
    n = SdNotifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid())})
    assert n is not None and n.watchdog_interval == 0.0005
    n._sock.close()


def test_summary_line() -> None:
    status = {
        "devices": {
            "a": {"state": "connected", "frames": 10, "dropped": 1, "removed": False},
            "b": {"state": "backoff", "frames": 5, "dropped": 0, "removed": False},
            "c": {"state": "closed", "frames": 2, "dropped": 0, "removed": True},
        },
        "sinks": [{"state": "ok"}, {"state": "retrying"}],
    }
    assert summary_line(status) == "1/2 devices connected, 17 frames, 1 dropped, 1/2 sinks ok"
