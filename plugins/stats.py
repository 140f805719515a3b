"""``stats``: a one-line summary per device in the log every ``interval`` s.

[plugins.stats]
interval = 10    # seconds (default 10)
"""

from __future__ import annotations

import time

from firmware_host import PluginContext

#: bounds of ``interval``, seconds: a shorter timer is a busy loop, a longer one a typo
MIN_INTERVAL, MAX_INTERVAL = 0.01, 86400.0


def setup(ctx: PluginContext) -> None:
    opts = ctx.take_options({"interval": (float, 10.0)})
    interval: float = opts["interval"]
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ctx.option_error(
            "interval", f"expected a number from {MIN_INTERVAL:g} to {MAX_INTERVAL:g} (seconds), got {interval!r}"
        )
    # frames seen at the previous summary, for a rate over the last interval
    previous: dict[str, tuple[int, float]] = {}
    rates: dict[str, float] = {}
    ctx.info["rates"] = rates

    async def summary() -> None:
        status = await ctx.status()
        now = time.monotonic()
        for name, d in status["devices"].items():
            before = previous.get(name)
            rate = (d["frames"] - before[0]) / (now - before[1]) if before and now > before[1] else 0.0
            previous[name] = (d["frames"], now)
            rates[name] = round(rate, 3)
            ctx.log.info(
                "%s: %s frames=%d (%.1f/s) rejected=%d gaps=%d flushed=%d buffered=%d dropped=%d reconnects=%d",
                name,
                d["state"],
                d["frames"],
                rate,
                d["rejected"],
                d["gaps"],
                d["flushed"],
                d["buffered"],
                d["dropped"],
                d["reconnects"],
            )

    # a summary that cannot get a status within an interval is not worth waiting for
    ctx.every(interval, summary, missed="skip", timeout=max(interval, 1.0), name="summary")
