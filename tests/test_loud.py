"""Issue 19, loud failures: a device that cannot be opened says why (status,
log, exit), a run with no device is a usage error, and a run in which no
device ever connected says so. Real subprocess runs, real ptys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_host.cli.render import status_table
from firmware_host.transport.openerror import EACCES_HINT, ENOENT_HINT
from tests.conftest import REPO, cli, cli_popen

pytestmark = pytest.mark.timeout(60)

MISSING = "/dev/ttyFHNOPE9"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A short private directory (a control socket's path is limited to ~107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="fh-loud-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_config(directory: Path, port: str) -> Path:
    path = directory / "c.toml"
    path.write_text(
        f'[[devices]]\nname = "d1"\nport = "{port}"\ncodec = "lines"\nbackoff_initial = 0.05\nbackoff_max = 0.2\n\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{directory / "out.jsonl"}"\n'
    )
    return path


def open_error_lines(stderr: str) -> list[str]:
    """The log's warnings about d1's open (one per change of reason)."""
    return [line for line in stderr.splitlines() if "WARNING" in line and "d1: cannot open" in line]


def test_a_missing_port_is_loud_in_the_log_the_summary_and_the_exit(open_dir: Path) -> None:
    cfg = write_config(open_dir, MISSING)
    summary = open_dir / "s.json"
    res = cli("run", "-c", str(cfg), "--duration", "0.8", "--summary", str(summary), "--control", str(open_dir / "s"))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    reason = f"cannot open {MISSING}: {ENOENT_HINT}"
    # five or so retries in 0.8 s (backoff 0.05 s doubling to 0.2 s), one line: the log
    # says a reason when it changes
    assert open_error_lines(res.stderr) == [open_error_lines(res.stderr)[0]]
    assert open_error_lines(res.stderr)[0].endswith(f"d1: {reason}"), res.stderr
    assert f"firmware-host: device d1 never connected ({reason})" in res.stderr.splitlines()
    assert "firmware-host: no device connected during the run" in res.stderr.splitlines()
    final = json.loads(summary.read_text())
    assert final["never_connected"] == ["d1"]
    assert final["devices"]["d1"]["last_error"] == reason
    assert final["devices"]["d1"]["last_error"].count(MISSING) == 1  # said once, not three times


def wait_status(sock: Path, proc: subprocess.Popen[str], done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        res = cli("status", "--json", "--control", str(sock))
        if res.returncode == 0:
            last = json.loads(res.stdout)
            if done(last):
                return last
    pytest.fail(f"status never showed it: {last}")


def test_status_shows_why_a_device_is_not_connected(open_dir: Path) -> None:
    cfg = write_config(open_dir, MISSING)
    sock = open_dir / "s"
    proc = cli_popen("run", "-c", str(cfg), "--control", str(sock), "-q")
    try:
        status = wait_status(sock, proc, lambda s: s["devices"]["d1"]["last_error"])
        reason = f"cannot open {MISSING}: {ENOENT_HINT}"
        assert status["devices"]["d1"]["last_error"] == reason
        human = cli("status", "--control", str(sock))
        assert human.returncode == 0, human.stderr
        assert f"d1: last_error: {reason}" in human.stdout.splitlines()
        assert cli("stop", "--control", str(sock)).returncode == 0
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # stopped, not timed: not a failure, but the device that never connected is named
    assert proc.returncode == 0, err
    assert f"firmware-host: device d1 never connected ({reason})" in err.splitlines()


def test_status_table_lists_each_devices_last_error() -> None:
    device = {"state": "connected", "frames": 1, "last_error": None}
    status = {
        "uptime": 1.0,
        "buffer": {"depth": 0, "capacity": 10, "bytes": 0, "dropped": 0},
        "devices": {"ok": device, "bad": {**device, "state": "backoff", "last_error": "cannot open x: why"}},
    }
    lines = status_table(status).splitlines()
    assert "bad: last_error: cannot open x: why" in lines
    assert not [line for line in lines if line.startswith("ok: ")]


def without_dac_override() -> None:
    """preexec_fn for root: a file's mode binds root only without CAP_DAC_OVERRIDE
    and CAP_DAC_READ_SEARCH, so both leave the bounding set (the child execs
    without them). Not ``nobody``: the interpreter may live where only root reads."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def root_can_drop_dac_override() -> str | None:
    """Why the mode test cannot run here, or None."""
    if sys.platform != "linux":
        return "dropping capabilities is Linux's (and root ignores a file's mode)"
    probe = subprocess.run(
        [sys.executable, "-c", "import os; os.open('/proc/self/fd', os.O_RDONLY)"],
        preexec_fn=without_dac_override,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return None if probe.returncode == 0 else f"cannot drop CAP_DAC_OVERRIDE here: {probe.stderr.strip()[-200:]}"


def test_a_port_without_permission_says_how_to_get_it(open_dir: Path) -> None:
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        os.chmod(path, 0)
        preexec = None
        if os.geteuid() == 0:
            why = root_can_drop_dac_override()
            if why is not None:
                pytest.skip(why)
            preexec = without_dac_override
        cfg = write_config(open_dir, path)
        summary = open_dir / "s.json"
        res = subprocess.run(
            [
                *(sys.executable, "-m", "firmware_host", "run", "-c", str(cfg), "--duration", "0.8"),
                *("--summary", str(summary), "--control", str(open_dir / "s")),
            ],
            cwd=open_dir,
            env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(open_dir)},
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=preexec,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert res.returncode == 1, res.stderr
    reason = f"cannot open {path}: {EACCES_HINT}"
    assert [line.split("WARNING ", 1)[1] for line in open_error_lines(res.stderr)] == [
        f"firmware_host.uplink: d1: {reason}"
    ], res.stderr
    assert f"firmware-host: device d1 never connected ({reason})" in res.stderr.splitlines()
    assert json.loads(summary.read_text())["devices"]["d1"]["last_error"] == reason


def test_a_run_with_no_device_is_a_usage_error(open_dir: Path) -> None:
    res = cli("run", "--duration", "5", "--control", str(open_dir / "s"), cwd=open_dir)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("firmware-host: no device to read:"), res.stderr
    for needle in ("[[devices]]", "--emulate", "devices add", "--allow-empty"):
        assert needle in lines[0]
    assert not (open_dir / "frames.jsonl").exists()


def test_allow_empty_starts_with_no_device(open_dir: Path) -> None:
    cfg = open_dir / "c.toml"
    cfg.write_text(f'[[sinks]]\ntype = "jsonl"\npath = "{open_dir / "out.jsonl"}"\n')
    summary = open_dir / "s.json"
    res = cli("run", "-c", str(cfg), "--allow-empty", "--duration", "0.3", "-q", "--summary", str(summary))
    # no device was asked for: none failing to connect is no failure
    assert res.returncode == 0, res.stderr
    assert json.loads(summary.read_text())["never_connected"] == []


def test_a_device_that_connects_is_not_reported(open_dir: Path) -> None:
    master, slave = os.openpty()
    try:
        cfg = write_config(open_dir, os.ttyname(slave))
        summary = open_dir / "s.json"
        res = cli("run", "-c", str(cfg), "--duration", "0.5", "-q", "--summary", str(summary))
    finally:
        os.close(slave)
        os.close(master)
    assert res.returncode == 0, res.stderr
    assert "never connected" not in res.stderr
    assert json.loads(summary.read_text())["never_connected"] == []
