"""A bounded soak: emulated devices with every wire fault, sink outages, drop-oldest.

    python tools/soak.py [--duration 120] [--devices 16] [--seed 1] [--rate 50] [--json FILE] [--keep] [--verbose]

Everything runs in this process, on one event loop: a ``Fleet`` of emulated
boards (one of each shipped board in turn) on pty pairs, with line noise,
corrupted frames, skipped seqs and unplug/replug; a ``Runtime`` reading them
with a capacity small enough that drop-oldest kicks in whenever the sink is
down; the sink is the jsonl sink behind ``OutageSink``, which fails every
write for ``outage_for`` seconds out of every ``outage_every`` (1 s of every
3 s by default). At the end the emulator stops sending (between frames), the
host reads the rest, outages stop, and the runtime shuts down in order.

Checks (each failure is one line in ``failures``; exit status 1 if any):

* the accounting law ``frames == flushed + dropped + buffered`` per device at
  every sample (each second; ``sample_every``) and after shutdown, with ``buffered == lost == 0``;
* per device, the host's ``frames``/``rejected``/``gaps`` equal what the
  emulator says it put on the wire (``EmulatedDevice.expected()``), which is
  exact for noise, corrupt, skip, overrun and clean unplugs unless the
  emulator itself flags the device ``inexact``;
* the sink: no record twice (one sink: a failed write writes nothing and the
  flusher retries only what survived), records in seq order per device, and
  per device ``flushed <= records <= flushed + dropped`` — a frame can be
  evicted (counted ``dropped``) while a write of it is in flight, and that
  write may still succeed, so ``dropped`` means "not guaranteed delivered",
  never "delivered twice";
* the faults really happened: drops, sink failures, reconnects, corrupted,
  skipped and noise frames are all non-zero;
* memory: VmRSS is sampled at each of those samples; after the warm-up (a quarter of the
  run, at least 4 s and at most 20 s, so the buffer has filled in an outage
  and every device has connected) the largest sample must stay within 1.2 x
  the sample at the end of the warm-up.

It prints a JSON summary. tests/test_soak.py runs the same code for ~12 s.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_host.config.boards import load_boards
from firmware_host.config.schema import config_from_dict
from firmware_host.emulation.fleet import DEFAULT_FLEET, FaultOptions, Fleet
from firmware_host.frames import Frame
from firmware_host.runtime import Runtime
from firmware_host.sinks import JsonlSink, Sink

#: after the warm-up, the largest RSS sample may be at most this times the warm-up one
RSS_FACTOR = 1.2


class SinkDown(ConnectionError):
    """What OutageSink raises while it is down."""


class OutageSink(Sink):
    """Wraps a sink; every write fails for ``down_for`` seconds of every ``every``.

    A failed write raises before the wrapped sink sees anything, as a remote
    sink that refuses the connection would. ``stop_outages()`` ends them.
    """

    def __init__(self, inner: Sink, every: float = 3.0, down_for: float = 1.0) -> None:
        self.inner = inner
        self.name = f"outage({getattr(inner, 'name', 'sink')})"
        self.every = every
        self.down_for = down_for
        self.enabled = True
        self.failures = 0
        self.outages = 0
        self._t0 = 0.0
        self._last_down_period = -1

    def is_down(self) -> bool:
        if not self.enabled:
            return False
        elapsed = time.monotonic() - self._t0
        period, phase = divmod(elapsed, self.every)
        down = phase >= self.every - self.down_for  # the end of each period: the first one starts up
        if down and period != self._last_down_period:
            self._last_down_period = int(period)
            self.outages += 1
        return down

    def stop_outages(self) -> None:
        self.enabled = False

    async def open(self) -> None:
        self._t0 = time.monotonic()
        await self.inner.open()

    async def write(self, frames: Sequence[Frame]) -> None:
        if self.is_down():
            self.failures += 1
            raise SinkDown("sink is down (soak outage)")
        await self.inner.write(frames)

    async def close(self) -> None:
        await self.inner.close()


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def fleet_plan(devices: int, boards: dict[str, Any]) -> list[tuple[Any, int]]:
    """``devices`` emulated boards, the shipped ones in turn (16: 4 of each)."""
    counts: dict[str, int] = {}
    for i in range(devices):
        name = DEFAULT_FLEET[i % len(DEFAULT_FLEET)]
        counts[name] = counts.get(name, 0) + 1
    return [(boards[name], n) for name, n in counts.items()]


def law_breaks(status: dict[str, Any]) -> list[str]:
    return [
        f"{name}: frames {d['frames']} != flushed {d['flushed']} + dropped {d['dropped']} + buffered {d['buffered']}"
        for name, d in status["devices"].items()
        if d["frames"] != d["flushed"] + d["dropped"] + d["buffered"]
    ]


def host_view(d: dict[str, Any]) -> dict[str, int]:
    return {"frames": d["frames"], "rejected": d["rejected"], "gaps": d["gaps"]}


async def soak(
    duration: float = 120.0,
    devices: int = 16,
    *,
    seed: int = 1,
    rate: float = 50.0,
    outage_every: float = 3.0,
    outage_for: float = 1.0,
    unplug_every: float | None = None,
    capacity: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    keep: bool = False,
    sample_every: float = 1.0,
) -> dict[str, Any]:
    """Run the soak; returns the summary (``summary["failures"]`` empty when it passed)."""
    if duration <= 0 or devices <= 0:
        raise ValueError("duration and devices must be > 0")
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fh-soak-"))
    base.mkdir(parents=True, exist_ok=True)
    jsonl = base / "frames.jsonl"
    warmup = max(4.0, min(duration * 0.25, 20.0))
    unplug_every = unplug_every if unplug_every is not None else max(3.0, min(10.0, duration / 3))
    # ~ what a normal flush interval buffers is far below this; a 1 s outage at
    # the fleet's rate (gnss: ~6 sentences per tick) is far above it
    capacity = capacity or 50 * devices
    faults = FaultOptions(noise=0.02, corrupt=0.02, skip=0.02, unplug_every=unplug_every, unplug_for=0.5)
    fleet = Fleet(fleet_plan(devices, load_boards()), base / "ports", faults=faults, rate=rate, seed=seed)
    sink = OutageSink(JsonlSink(path=str(jsonl)), every=outage_every, down_for=outage_for)
    cfg = config_from_dict(
        {"buffer": {"capacity": capacity, "batch_size": 256, "flush_interval": 0.1}, "shutdown": {"grace": 30.0}},
        source="<soak>",
    )
    failures: list[str] = []
    samples: list[tuple[float, int]] = []
    law_samples = 0
    rt: Runtime | None = None
    t_start = time.monotonic()
    try:
        await fleet.start()
        # quick reconnects after each replug (the default backoff would lose seconds)
        cfg = dataclasses.replace(
            cfg, devices=[dataclasses.replace(d, backoff_initial=0.05, backoff_max=0.5) for d in fleet.device_configs()]
        )
        rt = Runtime(cfg, sinks=[sink])
        await rt.start()

        async def sample() -> None:
            nonlocal law_samples
            t0 = time.monotonic()
            while True:
                samples.append((round(time.monotonic() - t0, 2), rss_kb()))
                status = await rt.status()
                law_samples += 1
                failures.extend(f"law at t={samples[-1][0]}s: {b}" for b in law_breaks(status))
                await asyncio.sleep(sample_every)  # the sampling period, not a synchronisation

        sampler = asyncio.create_task(sample())
        try:
            await asyncio.sleep(duration)  # the soak itself, not a synchronisation
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        # the end: no more outages, the devices stop between frames, the host reads the rest
        sink.stop_outages()
        await fleet.stop_sending()
        expected = {d.name: d.expected() for d in fleet.devices}
        try:
            await rt.wait_until(lambda s: all(host_view(s["devices"][n]) == e for n, e in expected.items()), 15.0)
        except TimeoutError:
            pass  # the per-device comparison below names the difference
        summary = await rt.shutdown()
    finally:
        if rt is not None and rt.summary is None:
            await rt.shutdown()
        await fleet.stop()
    final = summary.status
    elapsed = time.monotonic() - t_start

    # -- accounting and the wire --------------------------------------------------------
    failures.extend(f"final law: {b}" for b in law_breaks(final))
    per_device: dict[str, Any] = {}
    for dev in fleet.devices:
        d = final["devices"][dev.name]
        host, want = host_view(d), dev.expected()
        per_device[dev.name] = {
            "host": host,
            "expected": want,
            "flushed": d["flushed"],
            "dropped": d["dropped"],
            "reconnects": d["reconnects"],
            "emulator": dev.counters(),
        }
        if dev.inexact:
            failures.append(f"{dev.name}: the emulator flagged its counts inexact ({dev.counters()})")
        if host != want:
            failures.append(f"{dev.name}: host {host} != emulator {want}")
        if d["buffered"] or d["lost"]:
            failures.append(f"{dev.name}: buffered {d['buffered']}, lost {d['lost']} after an orderly shutdown")

    # -- the sink -----------------------------------------------------------------------------
    records: dict[str, int] = {}
    keys: set[tuple[str, int, float]] = set()
    seq_keys: set[tuple[str, int]] = set()
    last_seq: dict[str, int] = {}
    out_of_order = 0
    total_records = 0
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)  # whole lines only: a torn one fails here
            name = r["device"]
            total_records += 1
            records[name] = records.get(name, 0) + 1
            keys.add((name, r["seq"], r["ts"]))
            seq_keys.add((name, r["seq"]))
            if name in last_seq and r["seq"] <= last_seq[name]:
                out_of_order += 1
            last_seq[name] = r["seq"]
    if len(keys) != total_records or len(seq_keys) != total_records:
        failures.append(
            f"sink: {total_records} records but {len(keys)} unique (device, seq, ts) and "
            f"{len(seq_keys)} unique (device, seq): a frame was delivered twice"
        )
    if out_of_order:
        failures.append(f"sink: {out_of_order} records out of seq order within their device")
    for name, d in final["devices"].items():
        n = records.get(name, 0)
        per_device[name]["sink_records"] = n
        if not d["flushed"] <= n <= d["flushed"] + d["dropped"]:
            failures.append(
                f"{name}: {n} records in the sink, expected flushed {d['flushed']} <= records <= "
                f"flushed + dropped {d['flushed'] + d['dropped']}"
            )

    # -- the faults happened ---------------------------------------------------------------------
    totals = {
        k: sum(d[k] for d in final["devices"].values())
        for k in ("frames", "flushed", "dropped", "rejected", "gaps", "reconnects")
    }
    emulated = {
        k: sum(getattr(dev, k) for dev in fleet.devices)
        for k in (
            "sent",
            "corrupted",
            "skipped",
            "noise_events",
            "noise_frames",
            "unplugs",
            "lost_unplugged",
            "overrun",
        )
    }
    for what, value in (
        ("dropped", totals["dropped"]),
        ("reconnects", totals["reconnects"]),
        ("sink failures", sink.failures),
        ("corrupted", emulated["corrupted"]),
        ("skipped", emulated["skipped"]),
        ("noise events", emulated["noise_events"]),
    ):
        if not value:
            failures.append(f"fault not exercised: {what} is 0")

    # -- memory --------------------------------------------------------------------------------------
    after = [kb for t, kb in samples if t >= warmup]
    baseline = after[0] if after else None
    peak = max(after) if after else None
    if baseline is None or peak is None:
        failures.append(f"rss: no sample after the {warmup:g} s warm-up")
    elif peak > RSS_FACTOR * baseline:
        failures.append(f"rss: grew from {baseline} kB after warm-up to {peak} kB (> {RSS_FACTOR} x)")

    result = {
        "ok": not failures,
        "failures": failures,
        "duration": duration,
        "elapsed": round(elapsed, 2),
        "devices": devices,
        "rate": rate,
        "capacity": capacity,
        "totals": totals,
        "emulator": emulated,
        "sink": {
            "records": total_records,
            "failures": sink.failures,
            "outages": sink.outages,
            "path": str(jsonl) if keep else None,
        },
        "law_samples": law_samples,
        "rss_kb": {"warmup_s": warmup, "baseline": baseline, "max": peak, "bound": RSS_FACTOR, "samples": samples},
        "per_device": per_device,
    }
    if not keep and workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of soak (default 120)")
    parser.add_argument("--devices", type=int, default=16, help="emulated devices (default 16)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=50.0, help="ticks per second per device (default 50)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the jsonl file)")
    parser.add_argument(
        "--verbose", action="store_true", help="log the runtime's warnings (every unplug and outage is one)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.ERROR,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    result = asyncio.run(soak(args.duration, args.devices, seed=args.seed, rate=args.rate, keep=args.keep))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
