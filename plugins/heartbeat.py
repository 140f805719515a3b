"""``heartbeat``: keeps fh1 devices aware of the host and the host aware of them.

Every ``interval`` s each connected ``fh1`` device gets a heartbeat frame
(type 0xF2, empty payload, downlink seq counting up). A watchdog marks a
device ``stale`` in this plugin's status (``status --json`` →
``plugins[..].info.devices.NAME.stale``) once no valid frame has arrived
from it for ``stale_after`` s, and clears the mark when frames resume.

    [plugins.heartbeat]
    interval = 5         # seconds between pings (default 5)
    stale_after = 15     # seconds of silence before "stale" (default 3 × interval)
"""

from __future__ import annotations

import time
from typing import Any

from firmware_host import PluginContext

HEARTBEAT = 0xF2
#: bounds of ``interval`` and ``stale_after``, seconds: a shorter timer is a
#: busy loop; a longer one (more than a day, or three for the watchdog) is a typo
MIN_INTERVAL, MAX_INTERVAL, MAX_STALE_AFTER = 0.01, 86400.0, 3 * 86400.0


def setup(ctx: PluginContext) -> None:
    opts = ctx.take_options({"interval": (float, 5.0), "stale_after": (float, None)})
    interval: float = opts["interval"]
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ctx.option_error(
            "interval", f"expected a number from {MIN_INTERVAL:g} to {MAX_INTERVAL:g} (seconds), got {interval!r}"
        )
    stale_after: float = opts["stale_after"] if opts["stale_after"] is not None else 3 * interval
    if not MIN_INTERVAL <= stale_after <= MAX_STALE_AFTER:
        raise ctx.option_error(
            "stale_after",
            f"expected a number from {MIN_INTERVAL:g} to {MAX_STALE_AFTER:g} (seconds), got {stale_after!r}",
        )

    devices: dict[str, dict[str, Any]] = {}
    ctx.info["devices"] = devices
    # (frames counter, monotonic time it last changed), per device
    last_change: dict[str, tuple[int, float]] = {}

    def entry(name: str) -> dict[str, Any]:
        return devices.setdefault(name, {"stale": False, "silent_for": 0.0, "pings": 0, "unsent": 0})

    def fh1_devices() -> list[str]:
        return [name for name, dc in ctx.devices().items() if dc.codec == "fh1"]

    async def ping() -> None:
        for name in fh1_devices():
            try:
                sent = ctx.send(name, HEARTBEAT, b"")
            except KeyError:  # removed meanwhile
                continue
            entry(name)["pings" if sent else "unsent"] += 1

    async def watchdog() -> None:
        status = await ctx.status()
        now = time.monotonic()
        for name in fh1_devices():
            d = status["devices"].get(name)
            if d is None:
                continue
            seen = last_change.get(name)
            if seen is None or d["frames"] != seen[0]:
                seen = last_change[name] = (d["frames"], now)
            silent = now - seen[1]
            e = entry(name)
            stale = silent >= stale_after
            if stale != e["stale"]:
                if stale:
                    ctx.log.warning("%s: stale, no frames for %.1f s", name, silent)
                else:
                    ctx.log.info("%s: frames again, no longer stale", name)
            e["stale"], e["silent_for"] = stale, round(silent, 3)

    ctx.every(interval, ping, missed="skip", timeout=interval, name="ping")
    # checked a few times per stale_after, so a device is marked within ~25 % of it
    check = min(1.0, stale_after / 4)
    ctx.every(check, watchdog, missed="skip", timeout=max(check, 1.0), name="watchdog")
