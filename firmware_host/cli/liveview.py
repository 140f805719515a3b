"""What ``firmware-host run`` shows while it runs.

On a terminal: a small table redrawn in place about once a second (cursor up
and clear-to-end-of-line per line, never a full-screen clear, so it does not
flicker). Without a terminal (a service, a pipe): one summary line logged
every 10 s. Both only read ``rt.status()``; ``--quiet`` turns them off.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from typing import Any, TextIO

from firmware_host.cancel import CancellationToken
from firmware_host.cli.render import table

__all__ = ["attach_live_view", "render_view", "run_live_view", "summary_line"]

log = logging.getLogger("firmware_host.liveview")

TTY_INTERVAL = 1.0
LOG_INTERVAL = 10.0
_UP = "\x1b[{}A"  # cursor up n lines
_EOL = "\x1b[K"  # clear to end of line
_EOS = "\x1b[J"  # clear from the cursor to the end of the screen (lines below the view)


def _rates(status: dict[str, Any], prev: dict[str, Any] | None, elapsed: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, d in status["devices"].items():
        before = prev["devices"].get(name) if prev else None
        out[name] = (d["frames"] - before["frames"]) / elapsed if before is not None and elapsed > 0 else None
    return out


def render_view(status: dict[str, Any], rates: dict[str, float | None]) -> list[str]:
    """The live view's lines (no terminal codes)."""
    buf = status["buffer"]
    head = (
        f"firmware-host  up {status['uptime']:.0f}s  buffer {buf['depth']}/{buf['capacity']} frames, "
        f"{buf['bytes']} bytes, {buf['dropped']} dropped"
    )
    rows = []
    for name, d in sorted(status["devices"].items()):
        rate = rates.get(name)
        rows.append(
            [
                name,
                d["state"],
                "-" if rate is None else f"{rate:.1f}",
                d["frames"],
                d["rejected"],
                d["gaps"],
                d["reconnects"],
                d["buffered"],
                d["dropped"],
            ]
        )
    body = table(("device", "state", "frames/s", "frames", "rejected", "gaps", "reconn", "buffered", "dropped"), rows)
    return [head, *body.splitlines()]


def summary_line(status: dict[str, Any], rates: dict[str, float | None]) -> str:
    """One log line for the whole runtime."""
    devices = status["devices"].values()
    connected = sum(1 for d in devices if d["state"] == "connected")
    known = [r for r in rates.values() if r is not None]
    rate = f"{sum(known):.1f}" if known else "-"  # no earlier sample yet: unknown, not zero
    buf = status["buffer"]
    down = sorted(n for n, d in status["devices"].items() if d["state"] != "connected")
    text = (
        f"{len(status['devices'])} devices ({connected} connected): {rate} frames/s, "
        f"{sum(d['frames'] for d in devices)} frames, {sum(d['rejected'] for d in devices)} rejected, "
        f"{sum(d['gaps'] for d in devices)} gaps; buffer {buf['depth']}/{buf['capacity']}, "
        f"{buf['dropped']} dropped"
    )
    if down:
        text += f"; not connected: {', '.join(down[:5])}{' …' if len(down) > 5 else ''}"
    return text


class _Screen:
    """Redraws a block of lines in place at the bottom of the terminal output."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.height = 0

    def draw(self, lines: list[str]) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)
        # a wrapped line would take two rows and throw the cursor-up count off
        lines = [line[:width] for line in lines]
        out = [_UP.format(self.height)] if self.height else []
        out += [f"\r{line}{_EOL}\n" for line in lines]
        if len(lines) < self.height:
            out.append(_EOS)
        self.stream.write("".join(out))
        self.stream.flush()
        self.height = len(lines)

    def erase(self) -> None:
        if self.height:
            self.stream.write(_UP.format(self.height) + "\r" + _EOS)
            self.stream.flush()
            self.height = 0


async def run_live_view(
    rt: Any, token: CancellationToken, stream: TextIO | None = None, interval: float | None = None
) -> None:
    """Until ``token`` is cancelled: the live view on a terminal, else a log line
    every ``interval`` (default 1 s on a terminal, 10 s otherwise)."""
    stream = stream if stream is not None else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if interval is None:
        interval = TTY_INTERVAL if tty else LOG_INTERVAL
    screen = _Screen(stream) if tty else None
    prev: dict[str, Any] | None = None
    prev_t = time.monotonic()
    try:
        if not tty:  # the first log line comes after one interval: give it a rate to compare with
            prev, prev_t = await rt.status(), time.monotonic()
        while not token.is_cancelled:
            if prev is not None or not tty:  # a terminal gets its first view at once
                await token.run_until_cancelled(asyncio.sleep(interval))
                if token.is_cancelled:
                    break
            status = await rt.status()
            now = time.monotonic()
            rates = _rates(status, prev, now - prev_t)
            prev, prev_t = status, now
            if screen is not None:
                screen.draw(render_view(status, rates))
            else:
                log.info("%s", summary_line(status, rates))
    except (OSError, ValueError) as exc:  # a closed or broken stdout must not stop the runtime
        log.debug("live view stopped: %s", exc)
    finally:
        if screen is not None:
            try:
                screen.erase()  # the final summary table replaces the view
            except (OSError, ValueError):
                pass


def attach_live_view(rt: Any, stream: TextIO | None = None, interval: float | None = None) -> None:
    """Run the live view (or periodic summary) from ``rt.start()`` until shutdown begins."""
    state: dict[str, Any] = {}

    async def on_start(runtime: Any) -> None:
        token = runtime.tasks_token.child_token()
        state["token"] = token
        state["task"] = asyncio.create_task(run_live_view(runtime, token, stream, interval), name="liveview")

    async def on_stop(runtime: Any) -> None:
        if "task" in state:
            state["token"].cancel()
            await state["task"]

    rt.on_start.append(on_start)
    rt.on_stop.append(on_stop)
