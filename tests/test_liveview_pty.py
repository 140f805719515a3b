"""What a person sees: a real ``firmware-host run --emulate env-sensor:60`` on
a pty of 24 rows × 100 columns, a log line in the middle of the run (SIGHUP's
"reopening the sinks' files") and Ctrl-C's SIGINT at the end, everything the
child wrote replayed through a VT emulator (pyte) with its scrollback."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte
import pytest

from firmware_host.cli.liveview import DEVICE_COLUMNS
from firmware_host.config.boards import BOARDS_ENV_VAR
from firmware_host.testing import assert_accounting

REPO = Path(__file__).resolve().parents[1]
ROWS, COLUMNS = 24, 100

# the live view's rows (9 columns) and the final table's (10 columns)
LIVE_ROW = re.compile(r"env-sensor-\d+ +[a-z]+ +(-|\d+\.\d)( +\d+){6}")
FINAL_ROW = re.compile(r"env-sensor-(\d+) +closed( +\d+){8}")
MORE = re.compile(r"… (\d+) more devices \((\d+) connected\)")
HUP_LINE = "INFO firmware_host: SIGHUP: reopening the sinks' files"
INT_LINE = "WARNING firmware_host: SIGINT: draining (send it again to exit at once)"


class Terminal:
    """A child on the slave side of a pty of ROWS × COLUMNS; what it writes is
    fed to a pyte screen that keeps its scrollback."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = {
            k: v
            for k, v in os.environ.items()
            # the size comes from the pty, as on a real terminal
            if k not in (BOARDS_ENV_VAR, "FIRMWARE_HOST_CONTROL", "COLUMNS", "LINES")
        }
        env.update(PYTHONPATH=str(REPO), TERM="xterm-256color")
        self.child = subprocess.Popen(
            [sys.executable, "-m", "firmware_host", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        os.close(slave)  # the child holds it: end of file once the child exits
        self.master = master
        self.screen = pyte.HistoryScreen(COLUMNS, ROWS, history=10_000)
        self.stream = pyte.ByteStream(self.screen)
        self.eof = False
        self.raw = bytearray()  # every byte, for what was drawn and erased again

    def _read(self, deadline: float) -> None:
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the slave side is closed
            data = b""
        if data:
            self.raw += data
            self.stream.feed(data)
        else:
            self.eof = True

    def wait_for(self, what: str, seen: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not seen():
            if self.eof or time.monotonic() > deadline:
                raise AssertionError(f"never saw {what}; the screen:\n" + "\n".join(self.display()))
            self._read(deadline)

    def read_to_exit(self, timeout: float) -> int:
        self.wait_for("the end of the output", lambda: self.eof, timeout)
        return self.child.wait(timeout)

    def display(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def history(self) -> list[str]:
        return ["".join(line[x].data for x in range(COLUMNS)).rstrip() for line in self.screen.history.top]

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait(5)
        os.close(self.master)


def check_live_view(lines: list[str]) -> None:
    """One intact view on the screen: a head line, the sink, the device table cut
    to the rows there are, with the count of the rest."""
    view = lines[next(i for i, line in enumerate(lines) if line.startswith("up ")) :]
    view = [line for line in view if line]
    assert len(view) <= ROWS - 1, view
    assert re.match(r"up \d+s  60 devices, \d+ connected  ", view[0]), view[0]
    assert view[1].split() == ["sink", "state", "delivered", "missed", "pending", "failures"]
    assert view[2].split()[:2] == ["jsonl", "ok"] and len(view[2].split()) == 6
    assert tuple(view[3].split()) == DEVICE_COLUMNS
    rows = view[4:-1]
    assert all(LIVE_ROW.fullmatch(row) for row in rows), rows
    more = MORE.fullmatch(view[-1])
    assert more is not None and len(rows) + int(more.group(1)) == 60, view[-1]


def no_stale_view(lines: list[str]) -> None:
    stale = [line for line in lines if line.startswith("up ") or "frames/s" in line or MORE.search(line)]
    assert stale == [], stale


@pytest.mark.timeout(40)
def test_sixty_devices_in_24_rows_with_a_log_line_in_the_middle(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    args = ["run", "--emulate", "env-sensor:60", "--control", str(tmp_path / "c.sock"), "--summary", str(summary)]
    term = Terminal(args, tmp_path)
    try:
        # the view, cut to 24 rows with a count of the devices left out
        term.wait_for("the live view", lambda: any(MORE.fullmatch(line) for line in term.display()), 20)
        check_live_view(term.display())
        no_stale_view(term.history())

        # a log line while it is up: printed above it, and the view redrawn below
        os.kill(term.child.pid, signal.SIGHUP)

        def redrawn_below() -> bool:
            lines = term.display()
            at = [i for i, line in enumerate(lines) if line.endswith(HUP_LINE)]
            return bool(at) and any(MORE.fullmatch(line) for line in lines[at[0] :])

        term.wait_for("the log line above a redrawn view", redrawn_below, 10)
        check_live_view(term.display())
        no_stale_view(term.history())

        os.kill(term.child.pid, signal.SIGINT)  # what Ctrl-C sends
        assert term.read_to_exit(20) == 0
        history, display = term.history(), term.display()
    finally:
        term.close()

    everything = history + display
    # each log line once, whole
    assert sum(line.endswith(HUP_LINE) for line in everything) == 1
    assert sum(line.endswith(INT_LINE) for line in everything) == 1
    # the live view is gone without a trace: no copy of it anywhere in the scrollback
    no_stale_view(everything)
    # the final table, intact: its headers once, each device's row once with every column
    device_header = "device         state   frames  rejected  gaps  reconnects  flushed  dropped  buffered  lost"
    assert everything.count(device_header) == 1
    assert sum(line.startswith("uptime ") for line in everything) == 1
    start = everything.index(device_header)
    rows = everything[start + 1 : start + 61]
    matches = [FINAL_ROW.fullmatch(row) for row in rows]
    assert all(matches), rows
    assert sorted(int(m.group(1)) for m in matches if m) == list(range(60))
    # and what it printed last stays on the screen: the sink table ends it
    last = [line for line in display if line]
    assert last[-2].split() == ["sink", "state", "delivered", "missed", "pending", "lost", "failures", "last_error"]
    assert last[-1].split()[:2] == ["jsonl", "ok"] and len(last[-1].split()) == 8
    assert_accounting(json.loads(summary.read_text()))


@pytest.mark.timeout(30)
def test_quiet_shows_no_live_view_and_no_table(tmp_path: Path) -> None:
    args = ["run", "-q", "--emulate", "env-sensor:2", "--duration", "1.5", "--control", str(tmp_path / "c.sock")]
    term = Terminal(args, tmp_path)
    try:
        assert term.read_to_exit(20) == 0
        everything = term.history() + term.display()
    finally:
        term.close()
    assert [line for line in everything if line] == []  # -q: warnings only, and there were none
    assert b"frames/s" not in term.raw  # not even drawn and erased
