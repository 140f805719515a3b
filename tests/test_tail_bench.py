"""tools/bench.py --tail in its tiniest configuration (--smoke): the tail scenario runs,
its client streams every frame or counts it lost (a smoke test: no timing
is asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.test_bench import run_all


@pytest.mark.timeout(120)
def test_bench_tail_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_all(
        [sys.executable, "tools/bench.py", "--smoke", "--only", "tail", "--json", str(out), "--png", ""],
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tail = json.loads(out.read_text())["scenarios"]["tail"]
    assert tail["every_frame_streamed_or_counted_lost"] and tail["every_frame_in_sink"] and tail["dropped"] == 0
    (run,) = tail["runs"]["with"]
    assert run["tail"]["ended"] and run["tail"]["exit"] == 0 and run["tail"]["streamed"] > 0
    assert {"cpu_pct_without", "cpu_pct_with_tail", "cpu_pct_added"} <= set(tail)
