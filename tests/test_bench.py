"""The benchmark harness runs end to end in its tiny configuration and writes
its JSON with every scenario and target (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "firmware_host", "bench", "--quick", "--json", str(out),
                           "--png", str(tmp_path / "bench.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"machine", "scenarios", "targets", "primary_loop", "elapsed_s"} <= set(result)
    assert {"nproc", "cpu_model", "python", "uvloop"} <= set(result["machine"])
    sc = result["scenarios"]
    assert set(sc) == {"startup", "flood", "paced", "idle", "memory", "overload"}
    primary = result["primary_loop"]
    flood = sc["flood"]["variants"]
    assert {primary, "baseline"} <= set(flood)
    assert flood[primary]["delivered"] > 0 and flood["baseline"]["delivered"] > 0
    assert "ratio_vs_baseline" in flood[primary]
    paced = sc["paced"]["variants"][primary]
    assert {"cpu_pct", "dropped", "every_frame_in_sink", "latency_ms", "ready_s"} <= set(paced)
    assert {"p50", "p99", "max"} <= set(paced["latency_ms"])
    assert "cpu_pct" in sc["idle"]["variants"][primary]
    assert {"rss_full_mb", "shutdown_exit_s", "in_sink"} <= set(sc["memory"]["variants"][primary])
    assert {"rss_max_dev_pct", "samples", "overload_x"} <= set(sc["overload"])
    assert {"wall_ms_median", "cpu_ms_median"} <= set(sc["startup"]["help"])
    assert result["targets"] and all({"target", "goal", "value", "met"} <= set(t) for t in result["targets"])
    assert "scenario" in proc.stdout  # the table
