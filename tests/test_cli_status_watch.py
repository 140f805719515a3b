"""Issue 19: ``status --watch`` refreshes the human status until Ctrl-C,
which ends it with exit 0: in place on a terminal (a real pty), table after
table into a pipe. A real runtime on emulated boards."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, cli, cli_runtime

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sock() -> Iterator[Path]:
    with cli_runtime("env-sensor:2", "fh-watch-") as (_, path):
        yield path


def read_until(fd: int, done: Callable[[str], bool], timeout: float = 20) -> str:
    got = b""
    deadline = time.monotonic() + timeout
    while not done(got.decode(errors="replace")):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not seen in {timeout}s: {got[-2000:]!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            assert chunk, f"output ended: {got[-2000:]!r}"
            got += chunk
    return got.decode(errors="replace")


def watch(sock: Path, *extra: str, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_host",
            "status",
            "--watch",
            "--interval",
            "0.2",
            "--control",
            str(sock),
            *extra,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=stdout,
        stderr=subprocess.PIPE,
        # Ctrl-C as a terminal delivers it: a runner that started us in the
        # background (SIGINT ignored, inherited) must not make the child deaf to it
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def test_into_a_pipe_tables_follow_each_other_and_ctrl_c_exits_0(sock: Path) -> None:
    proc = watch(sock, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        text = read_until(proc.stdout.fileno(), lambda t: t.count("\ndevice ") >= 3)
        assert interrupt(proc) == (0, b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "\x1b[" not in text  # no terminal codes into a pipe
    blocks = [b for b in text.split("\n\n") if b.startswith("every 0.2s, ")]
    assert len(blocks) >= 2
    assert all("env-sensor-0" in b for b in blocks[:2])


def test_on_a_terminal_it_redraws_in_place(sock: Path) -> None:
    master, slave = os.openpty()
    try:
        proc = watch(sock, stdout=slave)
        os.close(slave)
        slave = -1
        try:
            text = read_until(master, lambda t: t.count("\x1b[H") >= 3 and t.endswith("\x1b[J"))
            assert interrupt(proc) == (0, b"")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    frames = text.split("\x1b[H")[1:]
    assert len(frames) >= 3
    for frame in frames[:2]:
        # each redraw: the header, the table, every line cleared to its end, the rest of the screen cleared
        assert frame.startswith("every 0.2s, ") and frame.endswith("\x1b[J")
        assert "env-sensor-0" in frame
        assert all(line.endswith("\x1b[K") for line in frame.removesuffix("\x1b[J").splitlines())


def test_json_watch_prints_one_status_per_line(sock: Path) -> None:
    proc = watch(sock, "--json", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        text = read_until(proc.stdout.fileno(), lambda t: t.count("\n") >= 2)
        assert interrupt(proc) == (0, b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    first, second = text.splitlines()[:2]
    assert json.loads(first)["uptime"] <= json.loads(second)["uptime"]


def test_watch_interval_is_bounded(sock: Path) -> None:
    res = cli("status", "--watch", "--interval", "0", "--control", str(sock))
    assert res.returncode == 2 and "--interval" in res.stderr and len(res.stderr.splitlines()) == 1
