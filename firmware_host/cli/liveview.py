"""What ``firmware-host run`` shows while it runs.

On a terminal, with rich installed (the ``[ui]`` extra): a live view drawn by
``rich.live.Live`` about once a second, a head line, one line per sink and one
per device, cut to the terminal's height with a "… N more devices" line, so a
fleet taller than the screen never pushes stale copies into the scrollback.
Log lines written to the same terminal meanwhile print above the view. At the
end the view is erased: the final status table (run.py) replaces it and stays.

Without a terminal (a service, a pipe), or without rich: one summary line
logged every 10 s. Both read one ``rt.status()`` per refresh, off the hot
path; ``--quiet`` turns them off.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from firmware_host.cancel import CancellationToken

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["attach_live_view", "render_view", "rich_available", "run_live_view", "summary_line"]

log = logging.getLogger("firmware_host.liveview")

TTY_INTERVAL = 1.0
LOG_INTERVAL = 10.0
#: seconds the view may take to erase itself at shutdown (a terminal that stopped reading)
STOP_TIMEOUT = 1.0

DEVICE_COLUMNS = ("device", "state", "frames/s", "frames", "rejected", "gaps", "reconn", "buffered", "dropped")
SINK_COLUMNS = ("sink", "state", "delivered", "missed", "pending", "failures")
_TEXT_COLUMNS = frozenset({"device", "sink", "state", "last_error"})


def rich_available() -> bool:
    try:
        import rich.live  # noqa: F401  (only asked whether it is there)
    except ImportError:
        return False
    return True


def _rates(status: dict[str, Any], prev: dict[str, Any] | None, elapsed: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, d in status["devices"].items():
        before = prev["devices"].get(name) if prev else None
        out[name] = (d["frames"] - before["frames"]) / elapsed if before is not None and elapsed > 0 else None
    return out


def _total_rate(rates: dict[str, float | None]) -> str:
    known = [r for r in rates.values() if r is not None]
    return f"{sum(known):.1f}" if known else "-"  # no earlier sample yet: unknown, not zero


def summary_line(status: dict[str, Any], rates: dict[str, float | None]) -> str:
    """One log line for the whole runtime."""
    devices = status["devices"].values()
    connected = sum(1 for d in devices if d["state"] == "connected")
    buf = status["buffer"]
    down = sorted(n for n, d in status["devices"].items() if d["state"] != "connected")
    text = (
        f"{len(status['devices'])} devices ({connected} connected): {_total_rate(rates)} frames/s, "
        f"{sum(d['frames'] for d in devices)} frames, {sum(d['rejected'] for d in devices)} rejected, "
        f"{sum(d['gaps'] for d in devices)} gaps; buffer {buf['depth']}/{buf['capacity']}, "
        f"{buf['dropped']} dropped"
    )
    if down:
        text += f"; not connected: {', '.join(down[:5])}{' …' if len(down) > 5 else ''}"
    return text


def _head(status: dict[str, Any], rates: dict[str, float | None]) -> str:
    devices = status["devices"].values()
    connected = sum(1 for d in devices if d["state"] == "connected")
    buf = status["buffer"]
    return (
        f"up {status['uptime']:.0f}s  {len(status['devices'])} devices, {connected} connected  "
        f"{_total_rate(rates)} frames/s  buffer {buf['depth']}/{buf['capacity']} frames, {buf['bytes']} bytes, "
        f"{buf['dropped']} dropped"
    )


def _device_order(item: tuple[str, dict[str, Any]]) -> tuple[bool, str]:
    name, d = item
    return (d["state"] == "connected", name)  # the ones needing attention first, then by name


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    # one line per row whatever the width: a wrapped cell would make the view
    # taller than the rows counted for it
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        # last_error is the one column that gives way (cut with "…") when the width runs out
        grid.add_column(
            name,
            justify="left" if name in _TEXT_COLUMNS else "right",
            no_wrap=name != "last_error",
            overflow="ellipsis",
        )
    for row in rows:
        grid.add_row(*(Text(cell, no_wrap=True, overflow="ellipsis") for cell in row))
    return grid


def render_view(status: dict[str, Any], rates: dict[str, float | None], height: int) -> RenderableType:
    """The live view, at most ``height`` lines: the head line, the sinks, and as
    many devices as fit (those not connected first), then "… N more devices"."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [Text(_head(status, rates), no_wrap=True, overflow="ellipsis")]
    used = 1
    sinks = status.get("sinks") or []
    if sinks:
        with_error = any(s.get("last_error") for s in sinks)
        columns = SINK_COLUMNS + (("last_error",) if with_error else ())
        rows = [[_cell(s.get("name" if c == "sink" else c)) for c in columns] for s in sinks]
        parts.append(_table(columns, rows))
        used += 1 + len(rows)
    devices = sorted(status["devices"].items(), key=_device_order)
    room = max(0, height - used - 1)  # the device table's header
    shown = devices if len(devices) <= room else devices[: max(0, room - 1)]  # a line for "… N more"
    with_error = any(d.get("last_error") for _, d in shown)
    columns = DEVICE_COLUMNS + (("last_error",) if with_error else ())
    rows = []
    for name, d in shown:
        rate = rates.get(name)
        numbers = [d[c] for c in ("frames", "rejected", "gaps", "reconnects", "buffered", "dropped")]
        rows.append(
            [name, d["state"], "-" if rate is None else f"{rate:.1f}", *map(str, numbers)]
            + ([_cell(d.get("last_error"))] if with_error else [])
        )
    if room > 0:
        parts.append(_table(columns, rows))
    hidden = devices[len(shown) :]
    if hidden:
        up = sum(1 for _, d in hidden if d["state"] == "connected")
        parts.append(Text(f"… {len(hidden)} more devices ({up} connected)", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


class _LinesAbove:
    """A log handler's stream while the view is up: each line printed through
    the view's console, so it lands above the view instead of through it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.partial = ""

    def write(self, text: str) -> int:
        from rich.text import Text

        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.console.print(Text(line), soft_wrap=True)  # as written: no markup, no highlighting
        return len(text)

    def flush(self) -> None:
        pass  # whole lines only; the console writes each at once


class _LiveScreen:
    """rich's Live on ``stream``, and the root log handlers writing to ``logs``
    (when that is a terminal too) printing above it while it is up."""

    def __init__(self, stream: TextIO, logs: TextIO | None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console: Console = Console(file=stream)  # its size, colours and terminal checks from the stream
        self.live: Live = Live(
            console=self.console,
            auto_refresh=False,  # refreshed by show(), once per status; no thread of its own
            transient=True,  # erased at the end: the final status table replaces it
            redirect_stdout=False,  # sys.stdout may be the stdout sink's: never swap it
            redirect_stderr=False,  # log lines are routed explicitly (below)
            vertical_overflow="ellipsis",  # render_view fits the height; this only backs it up
        )
        self.logs = logs
        self.routed: list[logging.StreamHandler[Any]] = []

    def start(self) -> None:
        self.live.start()
        if self.logs is not None and _isatty(self.logs):
            above = _LinesAbove(self.console)
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is self.logs:
                    handler.setStream(above)
                    self.routed.append(handler)

    def show(self, status: dict[str, Any], rates: dict[str, float | None]) -> None:
        self.live.update(render_view(status, rates, self.console.size.height - 1), refresh=True)

    def stop(self) -> None:
        from rich.text import Text

        try:
            # stop() redraws the last view uncut before erasing it: were the
            # terminal made smaller since, it would spill into the scrollback
            self.live.update(Text(""))
            self.live.stop()
        finally:
            for handler in self.routed:
                handler.setStream(self.logs)
            self.routed.clear()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


async def run_live_view(
    rt: Any,
    token: CancellationToken,
    stream: TextIO | None = None,
    interval: float | None = None,
    logs: TextIO | None = None,
) -> None:
    """Until ``token`` is cancelled: the live view on a terminal (log lines to
    ``logs`` print above it), else a log line every ``interval`` (default 1 s
    for the view, 10 s for the log line)."""
    stream = stream if stream is not None else sys.stdout
    screen = _LiveScreen(stream, logs) if _isatty(stream) and rich_available() else None
    if screen is not None and not screen.console.is_dumb_terminal:  # TERM=dumb cannot move the cursor
        await _show_live(rt, token, screen, TTY_INTERVAL if interval is None else interval)
    else:
        await _log_summaries(rt, token, LOG_INTERVAL if interval is None else interval)


async def _show_live(rt: Any, token: CancellationToken, screen: _LiveScreen, interval: float) -> None:
    prev: dict[str, Any] | None = None
    prev_t = time.monotonic()
    try:
        screen.start()
        while not token.is_cancelled:
            status = await rt.status()
            now = time.monotonic()
            rates = _rates(status, prev, now - prev_t)
            prev, prev_t = status, now
            # rendered and written off the loop: a 60-row table costs milliseconds
            await asyncio.to_thread(screen.show, status, rates)
            await token.run_until_cancelled(asyncio.sleep(interval))
    except (OSError, ValueError) as exc:  # a closed or broken stdout must not stop the runtime
        log.debug("live view stopped: %s", exc)
    finally:
        try:
            await asyncio.wait_for(asyncio.to_thread(screen.stop), STOP_TIMEOUT)
        except (OSError, ValueError, TimeoutError) as exc:
            log.debug("live view not erased: %s", exc or "the terminal is not being read")


async def _log_summaries(rt: Any, token: CancellationToken, interval: float) -> None:
    # the first line comes after one interval: give it a rate to compare with
    prev, prev_t = await rt.status(), time.monotonic()
    while not token.is_cancelled:
        await token.run_until_cancelled(asyncio.sleep(interval))
        if token.is_cancelled:
            break
        status = await rt.status()
        now = time.monotonic()
        log.info("%s", summary_line(status, _rates(status, prev, now - prev_t)))
        prev, prev_t = status, now


def attach_live_view(
    rt: Any, stream: TextIO | None = None, interval: float | None = None, logs: TextIO | None = None
) -> None:
    """Run the live view (or periodic summary) from ``rt.start()`` until shutdown
    begins; log lines written to ``logs`` (stderr) print above the view."""
    state: dict[str, Any] = {}

    async def on_start(runtime: Any) -> None:
        token = runtime.tasks_token.child_token()
        state["token"] = token
        state["task"] = asyncio.create_task(run_live_view(runtime, token, stream, interval, logs), name="liveview")

    async def on_stop(runtime: Any) -> None:
        if "task" in state:
            state["token"].cancel()
            await state["task"]

    rt.on_start.append(on_start)
    rt.on_stop.append(on_stop)
