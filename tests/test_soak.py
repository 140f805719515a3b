"""The bounded soak of tools/soak.py, shortened for CI (~8 s).

16 emulated devices (4 of each shipped board) with noise, corrupted frames,
skipped seqs and unplug/replug; the jsonl sink down 1 s of every 3 s; a
buffer small enough that every outage drops the oldest frames. What it checks
and why each check is exact is written in tools/soak.py; here every check must
pass, and the run must have exercised each fault. The full run is
``python tools/soak.py --duration 120 --devices 16``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from firmware_host import Sink

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fh_soak_tool", REPO / "tools" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look the module up by name
    spec.loader.exec_module(module)
    return module


def test_short_soak_is_exact_and_bounded(tmp_path: Path) -> None:
    tool = load_tool()
    # 8 s: four outages (2 s apart, 0.7 s each), two unplugs a device, 16 law samples
    result = asyncio.run(
        tool.soak(
            duration=8.0, devices=16, seed=7, workdir=tmp_path, outage_every=2.0, outage_for=0.7, sample_every=0.5
        )
    )
    brief = {k: v for k, v in result.items() if k not in ("per_device", "rss_kb")}
    assert result["failures"] == [], json.dumps(brief, indent=1)
    assert result["ok"]
    totals, emulated = result["totals"], result["emulator"]
    # the accounting law was checked while running, not only at the end
    assert result["law_samples"] >= 10
    # the host saw exactly what went on the wire, summed over the fleet
    assert totals["frames"] == emulated["sent"] + emulated["noise_frames"]
    # every fault happened: outages dropped frames, devices were unplugged and came back
    assert totals["dropped"] > 0 and result["sink"]["failures"] > 0 and result["sink"]["outages"] >= 3
    # every replugged device came back (one per device may still be unplugged when the run ends)
    assert emulated["unplugs"] >= 16 and totals["reconnects"] >= emulated["unplugs"] - 16
    assert emulated["corrupted"] > 0 and emulated["skipped"] > 0 and emulated["noise_events"] > 0
    # everything flushed is in the sink; what is there beyond it was in flight when evicted
    assert totals["flushed"] <= result["sink"]["records"] <= totals["flushed"] + totals["dropped"]
    rss = result["rss_kb"]
    assert rss["max"] <= tool.RSS_FACTOR * rss["baseline"], rss


def test_outage_sink_fails_whole_writes_only_while_down() -> None:
    tool = load_tool()

    class Recorder(Sink):
        def __init__(self) -> None:
            self.batches: list[int] = []

        async def write(self, frames: object) -> None:
            self.batches.append(len(frames))  # type: ignore[arg-type]

    async def main() -> None:
        inner = Recorder()
        sink = tool.OutageSink(inner, every=3.0, down_for=1.0)
        await sink.open()
        sink._t0 -= 2.5  # half-way through the first outage (the second of each three seconds 2..3)
        with pytest.raises(tool.SinkDown):
            await sink.write([1, 2, 3])
        assert inner.batches == [] and sink.failures == 1 and sink.outages == 1
        sink._t0 += 1.0  # t = 1.5: up
        await sink.write([1, 2])
        assert inner.batches == [2]
        sink._t0 -= 1.0  # the same outage again: still one outage
        with pytest.raises(tool.SinkDown):
            await sink.write([1])
        assert sink.outages == 1
        sink.stop_outages()
        await sink.write([1])
        assert inner.batches == [2, 1]

    asyncio.run(main())
