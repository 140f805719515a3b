"""The live view of ``firmware-host run``: what it renders, how it falls back
without a terminal or without rich, and what a person sees on a terminal,
read back through a VT emulator (pyte)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pyte
import pytest

from firmware_host.cancel import CancellationToken
from firmware_host.cli.liveview import attach_live_view, render_view, run_live_view, summary_line
from firmware_host.config.schema import config_from_dict
from firmware_host.runtime import Runtime
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(30)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def device(state: str = "connected", frames: int = 0, last_error: str | None = None) -> dict[str, Any]:
    return {
        "state": state,
        "frames": frames,
        "rejected": 0,
        "gaps": 0,
        "reconnects": 0,
        "buffered": 0,
        "dropped": 0,
        "last_error": last_error,
    }


STATUS: dict[str, Any] = {
    "uptime": 3.2,
    "buffer": {"capacity": 100, "depth": 4, "bytes": 40, "dropped": 1},
    "devices": {
        "b": {**device(frames=50), "rejected": 1, "gaps": 2, "buffered": 4, "dropped": 1},
        "a": {**device("backoff"), "reconnects": 3},
    },
    "sinks": [
        {"name": "jsonl", "state": "ok", "delivered": 46, "missed": 0, "pending": 4, "failures": 0, "last_error": None}
    ],
}


def text_of(renderable: Any, width: int = 100) -> list[str]:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(renderable)
    return [line.rstrip() for line in out.getvalue().splitlines()]


# ------------------------------------------------------------------ what it shows


def test_render_view_heads_sinks_and_devices() -> None:
    lines = text_of(render_view(STATUS, {"a": None, "b": 12.5}, height=20))
    assert lines[0].startswith("up 3s  2 devices, 1 connected  12.5 frames/s  buffer 4/100 frames, 40 bytes")
    assert lines[1].split() == ["sink", "state", "delivered", "missed", "pending", "failures"]
    assert lines[2].split() == ["jsonl", "ok", "46", "0", "4", "0"]
    assert lines[3].split()[:3] == ["device", "state", "frames/s"]
    # the one needing attention first
    assert lines[4].split() == ["a", "backoff", "-", "0", "0", "0", "3", "0", "0"]
    assert lines[5].split() == ["b", "connected", "12.5", "50", "1", "2", "0", "4", "1"]
    assert len(lines) == 6


def test_render_view_shows_last_errors_where_set() -> None:
    status = json.loads(json.dumps(STATUS))
    status["devices"]["a"]["last_error"] = "[Errno 2] No such file: /dev/ttyACM9"
    status["sinks"][0].update(state="failing", failures=3, last_error="disk full")
    lines = text_of(render_view(status, {}, height=20), width=140)
    assert lines[1].split()[-1] == "last_error" and lines[2].endswith("disk full")
    assert lines[3].split()[-1] == "last_error"
    assert lines[4].endswith("[Errno 2] No such file: /dev/ttyACM9") and lines[5].endswith("-")


def test_a_fleet_taller_than_the_terminal_is_cut_with_a_count() -> None:
    status = json.loads(json.dumps(STATUS))
    status["devices"] = {f"d{i:02}": device() for i in range(60)}
    status["devices"]["d42"] = device("backoff", last_error="x" * 300)  # a long error: still one line
    lines = text_of(render_view(status, {}, height=23), width=100)
    assert len(lines) == 23 and all(len(line) <= 100 for line in lines)
    assert lines[4].startswith("d42 ") and lines[4].endswith("…")
    assert lines[-1] == "… 42 more devices (42 connected)"
    assert [line.split()[0] for line in lines[5:-1]] == [f"d{i:02}" for i in range(17)]


def test_summary_line() -> None:
    line = summary_line(STATUS, {"a": None, "b": 12.5})
    assert line.startswith("2 devices (1 connected): 12.5 frames/s, 50 frames, 1 rejected, 2 gaps")
    assert line.endswith("not connected: a")


# ---------------------------------------------------------- without a live view


class FakeRuntime:
    def __init__(self) -> None:
        self.calls = 0
        self._called = asyncio.Event()

    async def status(self) -> dict[str, Any]:
        self.calls += 1
        self._called.set()
        status = json.loads(json.dumps(STATUS))
        status["devices"]["b"]["frames"] = 50 * self.calls
        return status

    async def wait_calls(self, n: int, timeout: float = 10.0) -> None:
        """Await the view's ``n``th status call (an event, not a poll)."""
        async with asyncio.timeout(timeout):
            while self.calls < n:
                self._called.clear()
                await self._called.wait()


def run_view_until(stream: io.StringIO, calls: int, logs: io.StringIO | None = None) -> None:
    rt = FakeRuntime()

    async def main() -> None:
        token = CancellationToken()
        task = asyncio.create_task(run_live_view(rt, token, stream, interval=0.01, logs=logs))
        await rt.wait_calls(calls)
        token.cancel()
        await task

    asyncio.run(main())


def test_no_terminal_logs_a_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="firmware_host.liveview"):
        run_view_until(stream, 3)  # a baseline sample, then two logged ones
    assert stream.getvalue() == ""
    messages = [r.getMessage() for r in caplog.records if r.name == "firmware_host.liveview"]
    assert len(messages) >= 2 and messages[0].startswith("2 devices (1 connected)")
    # the first line already has a rate: it was "0.0 frames/s" with no earlier sample to compare
    assert "(1 connected): - frames/s" not in messages[0] and " 0.0 frames/s" not in messages[0]


def test_without_rich_a_terminal_gets_the_summary_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "rich.live", None)  # `import rich.live` raises ImportError
    stream = FakeTTY()
    with caplog.at_level(logging.INFO, logger="firmware_host.liveview"):
        run_view_until(stream, 3)
    assert stream.getvalue() == ""  # nothing drawn
    messages = [r.getMessage() for r in caplog.records if r.name == "firmware_host.liveview"]
    assert len(messages) >= 2 and messages[0].startswith("2 devices (1 connected)")


def test_a_dumb_terminal_gets_the_summary_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TERM", "dumb")  # no cursor movement: a live view cannot redraw in place
    stream = FakeTTY()
    with caplog.at_level(logging.INFO, logger="firmware_host.liveview"):
        run_view_until(stream, 3)
    assert stream.getvalue() == ""
    assert [r for r in caplog.records if r.name == "firmware_host.liveview"]


# -------------------------------------------------- on a terminal, as a person sees it


def screen_of(output: str, columns: int = 80, rows: int = 25) -> tuple[list[str], list[str]]:
    """(scrollback, screen) after a terminal of that size showed ``output``."""
    screen = pyte.HistoryScreen(columns, rows, history=10_000)
    # a tty turns "\n" into "\r\n" (ONLCR); a StringIO does not
    pyte.Stream(screen).feed(output.replace("\n", "\r\n"))
    history = ["".join(line[x].data for x in range(columns)).rstrip() for line in screen.history.top]
    return history, [line.rstrip() for line in screen.display]


def test_log_lines_print_above_the_view_and_it_is_erased_at_the_end() -> None:
    stream = FakeTTY()
    logs = stream  # one terminal for both, as usual
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    other = logging.StreamHandler(io.StringIO())  # writes elsewhere: left alone
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(other)
    rt = FakeRuntime()
    seen: dict[str, list[str]] = {}

    async def main() -> None:
        token = CancellationToken()
        task = asyncio.create_task(run_live_view(rt, token, stream, interval=0.01, logs=logs))
        await rt.wait_calls(3)
        logging.getLogger("test.liveview").warning("in the middle")
        await rt.wait_calls(6)  # redrawn since, below the line
        seen["during"] = screen_of(stream.getvalue())[1]
        token.cancel()
        await task

    try:
        asyncio.run(main())
    finally:
        root.removeHandler(handler)
        root.removeHandler(other)
    assert handler.stream is logs and other.stream is not logs  # given back
    during = [line for line in seen["during"] if line]
    assert during[0] == "LOG in the middle"
    assert during[1].startswith("up ") and during[-1].split()[:2] == ["b", "connected"]
    history, final = screen_of(stream.getvalue())
    assert history == [] and [line for line in final if line] == ["LOG in the middle"]  # the view erased


def test_live_view_runs_with_the_runtime(tmp_path: Path) -> None:
    from firmware_host.config.boards import load_boards
    from firmware_host.emulation.fleet import Fleet

    stream = FakeTTY()

    async def main() -> dict[str, Any]:
        fleet = Fleet([(load_boards()["env-sensor"], 1)], tmp_path / "ports", rate=100.0)
        await fleet.start()
        cfg = dataclasses.replace(config_from_dict({}, source="<test>"), devices=fleet.device_configs())
        rt = Runtime(cfg)
        attach_live_view(rt, stream, interval=0.02)
        await rt.start()
        try:
            await rt.wait_until(
                lambda s: s["devices"]["env-sensor-0"]["frames"] >= 20 and stream.getvalue().count("env-sensor-0") >= 3,
                10,
            )
            during = screen_of(stream.getvalue())
        finally:
            summary = await rt.shutdown()
            await fleet.stop()
        assert during[0] == [] and during[1][2].split()[:2] == ["env-sensor-0", "connected"]
        return summary.status

    assert_accounting(asyncio.run(main()))
    history, final = screen_of(stream.getvalue())
    assert history == [] and not any(final)  # erased: the final table takes its place
