"""Paced CPU of two or more builds, alternating, in one time window.

    python tools/bench_ab.py --runs 4 new=uvloop old=uvloop:/path/to/old/checkout
    python tools/bench_ab.py pure=uvloop-pure cobs=uvloop
    python tools/bench_ab.py w20=uvloop w50=uvloop@0.05

Each argument is ``label=variant[@window][:source]``: ``variant`` is a runtime
variant of tools/bench.py (``asyncio``, ``uvloop``, either with ``-pure``);
``window`` is written to the config as ``[serial] read_coalesce`` (seconds);
``source`` is a checkout whose ``firmware_host`` the runtime imports instead (put first on
PYTHONPATH), e.g. a ``git worktree`` of an older commit. The builds run in turn,
``--runs`` times, so a machine whose speed drifts treats them alike; the full
bench (tools/bench.py) runs each variant once, minutes apart. Per window: 48 paced
ports at 921600 baud (the bench's Feeder and RuntimeProc), a warm-up, then the
runtime's CPU over ``--seconds``. No latency tailer and no baseline.

``--baud 38400`` paces the ports at about one frame per read: the runtime's cost
per read (wakeup, syscall, messages) then dominates, not its cost per frame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tools/bench.py
from tools import bench


def window(variant: str, source: str | None, seconds: float, devices: int, read_coalesce: float | None = None) -> float:
    """Paced CPU, % of a core, of one runtime over one window."""
    saved = os.environ.get("PYTHONPATH")
    if source:
        os.environ["PYTHONPATH"] = source + (os.pathsep + saved if saved else "")
    try:
        with bench.Rig("ab", devices, "paced", stamp=True) as rig:  # stamped, as tools/bench.py paced
            cons = rig.start(variant, capacity=100_000, read_coalesce=read_coalesce)
            assert isinstance(cons, bench.RuntimeProc)  # variants here are never the baseline
            cons.wait_ready()
            rig.feeder.send("go")
            time.sleep(1.0)
            c0, t0 = cons.cpu(), time.monotonic()
            time.sleep(seconds)
            pct = 100 * (cons.cpu() - c0) / (time.monotonic() - t0)
            rig.feeder.stop()
            final = cons.stop()
            if final["exit"] != 0:
                raise RuntimeError(f"{variant} exited {final['exit']}: {cons.stderr_text()}")
            return pct
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+", metavar="label=variant[@window][:source]")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--devices", type=int, default=48)
    ap.add_argument(
        "--baud", type=int, default=bench.BAUD, help=f"line rate of every paced port (default {bench.BAUD})"
    )
    args = ap.parse_args(argv)
    if not 1200 <= args.baud <= 4_000_000:
        ap.error(f"--baud must be in 1200..4000000, got {args.baud}")
    bench.BAUD = args.baud  # read by the Feeder and the runtime's config
    builds: list[tuple[str, str, str | None, float | None]] = []
    for spec in args.builds:
        label, sep, rest = spec.partition("=")
        rest, _, source = rest.partition(":")
        variant, at, win = rest.partition("@")
        try:
            coalesce = float(win) if at else None
        except ValueError:
            coalesce = -1.0
        if not sep or variant.partition("-")[0] not in bench._BOOT or (coalesce is not None and coalesce < 0):
            ap.error(f"expected label=variant[@window][:source], got {spec!r}")
        if source and not (Path(source) / "firmware_host").is_dir():
            ap.error(f"{source} holds no firmware_host package")
        builds.append((label, variant, source or None, coalesce))
    results: dict[str, list[float]] = {label: [] for label, _, _, _ in builds}
    for _ in range(args.runs):
        for label, variant, source, coalesce in builds:
            pct = window(variant, source, args.seconds, args.devices, coalesce)
            results[label].append(round(pct, 1))
            print(f"{label}: {pct:.1f}%", file=sys.stderr, flush=True)
    for label, values in results.items():
        print(f"{label:12s} median {statistics.median(values):5.1f}%  runs {', '.join(map(str, values))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
