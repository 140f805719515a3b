"""No silent loss at the edges of delivery: a run with no sink is refused;
``--emulate`` adds its default sink only when nothing else is configured;
the stdout sink's reader leaving (``| head -2``) ends the run like a Unix
filter, exit 0."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from firmware_host.testing import assert_accounting
from tests.conftest import cli
from tests.test_run_emulate import popen

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "text", ['[[devices]]\nname = "d"\nport = "/dev/ttyACM0"\ncodec = "lines"\n', "[buffer]\ncapacity = 100\n"]
)
def test_no_sink_at_all_is_a_config_error(tmp_path: Path, short_tmp: Path, text: str) -> None:
    """Frames read only to go nowhere: refused before anything starts, exit 2,
    one line saying how to add a sink."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    result = cli("run", "-c", str(cfg), "--duration", "5", "--control", str(short_tmp / "c.sock"), "-q")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no sinks" in result.stderr and "[[sinks]]" in result.stderr
    assert "Traceback" not in result.stderr


def stdout_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "stdout.toml"
    cfg.write_text("[buffer]\nflush_interval = 0.05\n[plugins.stdout]\n")
    return cfg


def test_emulate_adds_no_default_sink_when_a_plugin_gives_one(tmp_path: Path, short_tmp: Path) -> None:
    summary = tmp_path / "summary.json"
    result = cli(
        "run",
        "-c",
        str(stdout_config(tmp_path)),
        "--emulate",
        "env-sensor",
        "--duration",
        "1",
        "--control",
        str(short_tmp / "c.sock"),
        "--summary",
        str(summary),
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    final = json.loads(summary.read_text())
    assert_accounting(final)
    flushed = sum(d["flushed"] for d in final["devices"].values())
    assert flushed > 0 and result.stdout.count("\n") == flushed  # every frame went to stdout
    assert [s["name"] for s in final["sinks"]] == ["stdout"]
    assert not (tmp_path / "frames.jsonl").exists()


def test_head_2_ends_the_run_with_exit_0(tmp_path: Path, short_tmp: Path) -> None:
    """`run -c stdout.toml --emulate env-sensor -q | head -2`: the reader takes
    two lines and leaves; the stdout sink (the last one) closes on EPIPE and
    the run drains and exits 0, with the accounting law in its summary."""
    summary = tmp_path / "summary.json"
    proc = popen(
        "run",
        "-c",
        str(stdout_config(tmp_path)),
        "--emulate",
        "env-sensor",
        "--control",
        str(short_tmp / "c.sock"),
        "--summary",
        str(summary),
        "-q",
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        proc.stdout.close()  # what `head -2` does after its two lines
        started = time.monotonic()
        proc.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
    assert [json.loads(line)["device"] for line in lines]
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    print(f"exit {elapsed:.2f} s after the reader left")
    final = json.loads(summary.read_text())
    assert_accounting(final)
    sink = final["sinks"][0]
    assert sink["state"] == "closed"
    # what was left had nowhere to go: not delivered (lost), and missed by the sink, never "flushed"
    lost = sum(d["lost"] for d in final["devices"].values())
    assert lost == sink["missed"] and sink["pending"] == 0
    if lost:
        assert f"{lost} frames not delivered: every sink had closed" in err


def test_head_2_as_a_shell_pipeline(tmp_path: Path, short_tmp: Path) -> None:
    """The same, as the issue wrote it, through a real shell pipe."""
    import shlex
    import sys

    from tests.test_run_emulate import _env

    cmd = (
        f"{shlex.quote(sys.executable)} -m firmware_host run -c {shlex.quote(str(stdout_config(tmp_path)))}"
        f" --emulate env-sensor -q --control {shlex.quote(str(short_tmp / 'c.sock'))}"
        f" --summary {shlex.quote(str(tmp_path / 'summary.json'))} | head -2"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert_accounting(json.loads((tmp_path / "summary.json").read_text()))
