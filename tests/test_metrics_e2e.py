"""End to end: a real ``firmware-host run`` subprocess with ``[metrics] listen``,
scraped by a real HTTP client and compared with ``status --json``.

The emulated boards keep sending, so the two are compared as a sandwich:
every counter of the scrape lies between ``status --json`` taken just before
and just after it (the in-process test, tests/test_metrics.py, checks exact
equality on a quiescent runtime).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from firmware_host.control.http import DEVICE_COUNTERS, SINK_COUNTERS
from tests.conftest import cli, cli_popen
from tests.test_metrics import fetch, free_port, one, samples

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """``proc``'s stderr up to the line containing ``needle`` (read raw: select
    on a buffered text stream could miss lines already in its buffer)."""
    assert proc.stderr is not None
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while needle.encode() not in seen and time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    text = seen.decode(errors="replace")
    assert needle in text, f"no {needle!r} within {timeout}s; stderr so far: {text}"
    return text


def status_json(sock: str) -> dict:
    done = cli("status", "--json", "--control", sock)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_scrape_a_running_firmware_host_run(tmp_path: Path) -> None:
    port = free_port()
    sock = str(Path(tempfile.mkdtemp(prefix="fh-")) / "c.sock")  # Unix socket paths must stay short
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n[control]\nsocket = "{sock}"\n')
    proc = cli_popen("run", "-q", "-v", "-c", str(cfg), "--emulate", "nucleo-imu:2", cwd=tmp_path)
    try:
        wait_for_line(proc, f"metrics and health on http://127.0.0.1:{port}/metrics", 20)
        before = status_json(sock)
        code, ctype, text = fetch(f"http://127.0.0.1:{port}/metrics")
        after = status_json(sock)
        assert code == 200 and ctype.startswith("text/plain; version=")
        found = samples(text)
        assert set(before["devices"]) == set(after["devices"]) and len(before["devices"]) == 2
        for name in before["devices"]:
            for key in DEVICE_COUNTERS:
                got = one(found, f"firmware_host_device_{key}_total", device=name)
                assert before["devices"][name][key] <= got <= after["devices"][name][key], (name, key)
        for i, (b, a) in enumerate(zip(before["sinks"], after["sinks"], strict=True)):
            for key in SINK_COUNTERS:
                got = one(found, f"firmware_host_sink_{key}_total", sink=b["name"], index=str(i))
                assert b[key] <= got <= a[key], (b["name"], key)
        assert one(found, "firmware_host_buffer_capacity") == before["buffer"]["capacity"]
        assert one(found, "process_open_fds") > 0
        code, _, body = fetch(f"http://127.0.0.1:{port}/healthz")
        assert (code, json.loads(body)) == (200, {"healthy": True, "reasons": []})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err  # (what was read before is not in err)
    assert "Traceback" not in err


def test_missing_prometheus_client_is_one_line_exit_2(tmp_path: Path) -> None:
    """With ``listen`` set and the extra not installed: one line, exit 2."""
    hide = tmp_path / "hide" / "prometheus_client"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError(\"No module named 'prometheus_client'\")\n")
    repo = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[metrics]\nlisten = "127.0.0.1:9464"\n')
    sock = str(Path(tempfile.mkdtemp(prefix="fh-")) / "c.sock")
    done = cli(
        "run",
        "-q",
        "-c",
        str(cfg),
        "--emulate",
        "nucleo-imu:1",
        "--control",
        sock,
        cwd=tmp_path,
        env={"PYTHONPATH": f"{hide.parent}:{repo}"},
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("firmware-host: ") and "pip install 'firmware-host[metrics]'" in line
    assert "Traceback" not in done.stderr
