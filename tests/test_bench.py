"""The benchmark harness runs end to end in its tiniest configuration (--smoke:
--quick with shorter windows and flush interval) and writes its JSON with every
scenario and target (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


def run_all(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``cmd`` in a session of its own, so a timeout ends the runtimes, feeders and
    brokers it started too (killing the bench alone leaves them running, holding ptys)."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.timeout(120)
def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_all(
        [
            sys.executable,
            "-m",
            "firmware_host",
            "bench",
            "--smoke",
            "--json",
            str(out),
            "--png",
            str(tmp_path / "bench.png"),
        ],
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"machine", "scenarios", "targets", "primary_loop", "elapsed_s"} <= set(result)
    assert {"nproc", "cpu_model", "python", "uvloop"} <= set(result["machine"])
    sc = result["scenarios"]
    assert set(sc) == {"startup", "flood", "paced", "idle", "memory", "overload", "sinks3", "mqtt", "decode"}
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
    three = sc["sinks3"]
    assert three["live_sinks_have_every_frame"] and three["sent"] == three["jsonl_lines"] == three["sqlite_rows"] > 0
    stuck = three["sinks"]["stdout"]  # its first write hangs (state "retrying" only after its timeout)
    assert stuck["delivered"] < three["sent"] and stuck["pending"] > 0
    mqtt = sc["mqtt"]
    assert mqtt["every_frame_acked_and_consumed"] and mqtt["with_mqtt"]["sent"] == mqtt["at_consumer"] > 0
    assert {"cpu_pct", "cpu_pct_jsonl_only", "json_mode_frames_per_s_acked"} <= set(mqtt)
    assert sc["decode"]["method"] == "side_by_side"  # the two runtimes at once
    for run in sc["decode"]["rates"].values():  # --quick: at 921600 baud only
        assert run["decode"]["fields_in_sink"] and not run["no_decode"]["fields_in_sink"]
        assert run["decode"]["undecoded"] == 0 and run["decode"]["in_sink"] == run["decode"]["sent"] > 0
        assert run["no_decode"]["in_sink"] == run["no_decode"]["sent"] > 0
    assert result["targets"] and all({"target", "goal", "value", "met"} <= set(t) for t in result["targets"])
    assert "scenario" in proc.stdout  # the table


def test_bench_decode_pairs_method(tmp_path):
    """--decode-method pairs: decoding and not one after the other, each run's frames all in its sink."""
    out = tmp_path / "bench.json"
    proc = run_all(
        [
            sys.executable,
            str(REPO / "tools" / "bench.py"),
            *("--smoke", "--only", "decode", "--no-baseline"),
            *("--decode-method", "pairs", "--decode-rounds", "2", "--json", str(out)),
        ],
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    decode = json.loads(out.read_text())["scenarios"]["decode"]
    assert decode["method"] == "pairs"
    (run,) = decode["rates"].values()
    assert len(run["decode"]["cpu_pct_runs"]) == len(run["no_decode"]["cpu_pct_runs"]) == 2
    assert run["decode"]["fields_in_sink"] and not run["no_decode"]["fields_in_sink"]
    for side in (run["decode"], run["no_decode"]):
        assert side["in_sink"] == side["sent"] > 0 and side["dropped"] == 0


def test_bench_ab_alternates_builds(tmp_path):
    """tools/bench_ab.py: one window per build, the old one imported from another checkout."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(REPO / "firmware_host", old / "firmware_host")
    marker = old / "firmware_host" / "IMPORTED"
    init = old / "firmware_host" / "__init__.py"
    init.write_text(init.read_text() + "\n__import__('pathlib').Path(__file__).with_name('IMPORTED').touch()\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "bench_ab.py"),
            "--runs",
            "1",
            "--seconds",
            "0.1",
            "--devices",
            "2",
            "new=asyncio-pure",
            f"old=asyncio:{old}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["new", "old"]
    assert all("median" in line for line in lines)
    assert marker.exists()  # the "old" build really ran from its own checkout
    bad = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_ab.py"), f"x=uvloop:{tmp_path}"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert bad.returncode == 2 and "holds no firmware_host package" in bad.stderr


def test_bench_icount_pipeline_delivers_every_frame(tmp_path):
    """tools/bench_icount.py's counted run, without valgrind: 2 ports, 3 ticks
    of 5 frames, every frame decoded and flushed; bad arguments get one line."""
    data = tmp_path / "reads.pickle"
    code = (
        "import pickle, sys; sys.path.insert(0, 'tools'); import bench_icount as b; "
        f"pickle.dump(b.make_reads(2, 5, 3), open({str(data)!r}, 'wb'))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=30)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_icount.py"), "--child", str(data)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.split() == ["frames", "30", "flushed", "30", "expected", "30"]
    bad = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_icount.py"), "--source", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert bad.returncode == 2 and "holds no firmware_host package" in bad.stderr
