"""The out-of-the-box run: ``firmware-host run --emulate`` and ``emulate`` as a
user runs them (subprocesses) and ``boards``/``devices``; the live view is in
test_liveview.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_host.config.boards import BOARDS_ENV_VAR
from firmware_host.config.schema import config_from_dict
from firmware_host.emulation.fleet import DEFAULT_FLEET
from firmware_host.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (BOARDS_ENV_VAR, "FIRMWARE_HOST_CONTROL")}
    env["PYTHONPATH"] = str(REPO)
    return env


def popen(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_host", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_host", *args],
        cwd=cwd,
        env={**_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


class Runs:
    """The slow runs, started together so the module's wall time is the longest one."""

    def __init__(self) -> None:
        self.procs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
        self.results: dict[str, tuple[int, str, str, Path]] = {}

    def start(self, key: str, cwd: Path, *args: str) -> None:
        self.procs[key] = (popen(*args, cwd=cwd), cwd)

    def result(self, key: str) -> tuple[int, str, str, Path]:
        if key not in self.results:
            proc, cwd = self.procs[key]
            out, err = proc.communicate(timeout=30)
            self.results[key] = (proc.returncode, out, err, cwd)
        return self.results[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    sockets = Path(tempfile.mkdtemp(prefix="fh-"))  # Unix socket paths must stay short
    r = Runs()
    r.start(
        "default",
        tmp_path_factory.mktemp("default"),
        "run",
        "--emulate",
        "--duration",
        "2",
        "--control",
        str(sockets / "a.sock"),
    )
    r.start(
        "imu2",
        tmp_path_factory.mktemp("imu2"),
        "run",
        "--emulate",
        "nucleo-imu:2",
        "--duration",
        "1.5",
        "--summary",
        "s.json",
        "--control",
        str(sockets / "b.sock"),
    )
    r.start("emulate", tmp_path_factory.mktemp("emulate"), "emulate", "env-sensor", "-n", "2", "--duration", "2")
    try:
        yield r
    finally:
        for proc, _ in r.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        shutil.rmtree(sockets, ignore_errors=True)


def law(status: dict[str, Any]) -> None:
    for name, d in status["devices"].items():
        assert d["frames"] == d["flushed"] + d["dropped"] + d["buffered"], (name, d)


# --------------------------------------------------------------------- run --emulate


def test_run_emulate_default_fleet(runs: Runs) -> None:
    code, out, err, cwd = runs.result("default")
    assert code == 0, err
    assert "Traceback" not in err
    records = [json.loads(line) for line in (cwd / "frames.jsonl").read_text().splitlines()]
    per_device: dict[str, int] = {}
    for r in records:
        per_device[r["device"]] = per_device.get(r["device"], 0) + 1
    assert set(per_device) == {f"{name}-0" for name in DEFAULT_FLEET}
    assert per_device["nucleo-imu-0"] > 1000  # 1 kHz for about 2 s
    # the summary table: every device, nothing lost, nothing rejected
    lines = out.splitlines()
    assert lines[0].startswith("uptime ") and "0 dropped" in lines[0]
    devices_part = lines[2 : lines.index("")]  # then one line per sink
    rows = {line.split()[0]: line.split() for line in devices_part}
    assert set(rows) == set(per_device)
    assert lines[lines.index("") + 1].split()[:2] == ["sink", "state"]
    for name, row in rows.items():
        frames, rejected, lost = int(row[2]), int(row[3]), int(row[9])
        assert (frames, rejected, lost) == (per_device[name], 0, 0)


def test_run_emulate_two_boards_with_summary(runs: Runs) -> None:
    code, _out, err, cwd = runs.result("imu2")
    assert code == 0, err
    status = json.loads((cwd / "s.json").read_text())
    assert set(status["devices"]) == {"nucleo-imu-0", "nucleo-imu-1"}
    law(status)
    for d in status["devices"].values():
        assert d["frames"] > 500 and d["rejected"] == d["gaps"] == d["lost"] == d["buffered"] == 0
    assert len((cwd / "frames.jsonl").read_text().splitlines()) == sum(d["frames"] for d in status["devices"].values())


def test_emulate_prints_paths(runs: Runs) -> None:
    code, out, err, _ = runs.result("emulate")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["env-sensor-0", "env-sensor-1"]
    for line in lines:
        name, path = line.split()
        assert Path(path).name == name and Path(path).is_absolute()
        assert not Path(path).exists()  # removed at exit
    assert "env-sensor-0: sent 0" in err  # nobody opened the ports


def test_emulate_serves_another_process(tmp_path: Path) -> None:
    """The emulator in one process, the runtime in another: what users do."""
    proc = popen("emulate", "env-sensor", "--rate", "200", "--duration", "20", cwd=tmp_path)
    try:
        assert proc.stdout is not None
        name, path = proc.stdout.readline().split()

        async def main() -> dict[str, Any]:
            cfg = config_from_dict({"devices": [{"name": name, "port": path, "board": "env-sensor"}]}, source="<test>")
            rt = Runtime(cfg)
            await rt.start()
            try:
                await rt.wait_until(lambda s: s["devices"][name]["frames"] >= 50, 10)
            finally:
                summary = await rt.shutdown()
            return summary.status

        status = asyncio.run(main())
        law(status)
        d = status["devices"][name]
        assert d["rejected"] == d["gaps"] == 0 and d["frames"] >= 50
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# --------------------------------------------------------------------- boards, devices, errors


def test_boards_json() -> None:
    result = cli("boards", "--json")
    assert result.returncode == 0, result.stderr
    boards = json.loads(result.stdout)
    assert set(DEFAULT_FLEET) <= set(boards)
    imu = boards["nucleo-imu"]
    assert imu["vid_pid"] == "0483:374b" and imu["codec"] == "fh1" and imu["emulator"]["rate"] == 1000.0
    text = cli("boards")
    assert text.returncode == 0 and "nucleo-imu" in text.stdout and "0483:374b" in text.stdout


def test_devices_json() -> None:
    result = cli("devices", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert isinstance(found, list)
    for d in found:  # whatever this host has
        assert set(d) == {"port", "description", "vid_pid", "serial", "board"}


def test_devices_with_an_invalid_board_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("name = 3\n")
    result = cli("devices", env={BOARDS_ENV_VAR: str(tmp_path)})
    assert result.returncode == 2
    assert (
        result.stderr == f"firmware-host: {tmp_path / 'bad.toml'}: name: expected a board name "
        "(1 to 64 letters, digits, '.', '_' or '-'), got 3\n"
    )


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (("run", "--emulate", "nope", "--duration", "1"), "firmware-host: --emulate: unknown board 'nope' (known: "),
        (("emulate", "nope"), "firmware-host: emulate: unknown board 'nope' (known: "),
        (("emulate", "env-sensor:0"), "firmware-host: emulate: bad count '0'"),
        (("emulate", "env-sensor", "--boards-dir", "/nonexistent/boards"), "firmware-host: /nonexistent/boards: "),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], start: str) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(start) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "frames.jsonl").exists()
