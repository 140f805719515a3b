"""The out-of-the-box run: ``firmware-host run --emulate`` and ``emulate`` as a
user runs them (subprocesses), ``boards``/``devices``, and the live view."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
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

from firmware_host.cancel import CancellationToken
from firmware_host.cli.liveview import attach_live_view, render_view, run_live_view, summary_line
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
        "3",
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
    assert per_device["nucleo-imu-0"] > 1000  # 1 kHz for about 3 s
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


# --------------------------------------------------------------------- live view


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


STATUS = {
    "uptime": 3.2,
    "buffer": {"capacity": 100, "depth": 4, "bytes": 40, "dropped": 1},
    "devices": {
        "b": {
            "state": "connected",
            "frames": 50,
            "rejected": 1,
            "gaps": 2,
            "reconnects": 0,
            "buffered": 4,
            "dropped": 1,
        },
        "a": {"state": "backoff", "frames": 0, "rejected": 0, "gaps": 0, "reconnects": 3, "buffered": 0, "dropped": 0},
    },
}


def test_render_view_and_summary_line() -> None:
    lines = render_view(STATUS, {"a": None, "b": 12.5})
    assert "buffer 4/100 frames" in lines[0] and "1 dropped" in lines[0]
    assert lines[1].split()[:3] == ["device", "state", "frames/s"]
    assert lines[2].split()[:3] == ["a", "backoff", "-"] and lines[3].split()[:3] == ["b", "connected", "12.5"]
    line = summary_line(STATUS, {"a": None, "b": 12.5})
    assert line.startswith("2 devices (1 connected): 12.5 frames/s, 50 frames, 1 rejected, 2 gaps")
    assert line.endswith("not connected: a")


class FakeRuntime:
    def __init__(self) -> None:
        self.calls = 0
        self._called = asyncio.Event()

    async def status(self) -> dict[str, Any]:
        self.calls += 1
        self._called.set()
        status = json.loads(json.dumps(STATUS))
        status["devices"]["b"]["frames"] = 50 * self.calls
        return status

    async def wait_calls(self, n: int, timeout: float = 10.0) -> None:
        """Await the live view's ``n``th status call (an event, not a poll)."""
        async with asyncio.timeout(timeout):
            while self.calls < n:
                self._called.clear()
                await self._called.wait()


def test_live_view_redraws_in_place() -> None:
    stream = FakeTTY()
    rt = FakeRuntime()

    async def main() -> None:
        token = CancellationToken()
        task = asyncio.create_task(run_live_view(rt, token, stream, interval=0.01))
        await rt.wait_calls(4)
        token.cancel()
        await task

    asyncio.run(main())
    text = stream.getvalue()
    height = len(render_view(STATUS, {}))
    assert text.count(f"\x1b[{height}A") >= 3  # moved up over the last view, not a new one below it
    assert "\x1b[2J" not in text and "\x1b[H" not in text  # never a full-screen clear
    assert text.count("\x1b[K\n") >= 4 * height
    assert text.endswith(f"\x1b[{height}A\r\x1b[J")  # erased at the end; the final table replaces it


def test_no_terminal_logs_a_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    rt = FakeRuntime()

    async def main() -> None:
        token = CancellationToken()
        task = asyncio.create_task(run_live_view(rt, token, stream, interval=0.01))
        await rt.wait_calls(3)  # a baseline sample, then two logged ones
        token.cancel()
        await task

    with caplog.at_level(logging.INFO, logger="firmware_host.liveview"):
        asyncio.run(main())
    assert stream.getvalue() == ""
    messages = [r.getMessage() for r in caplog.records if r.name == "firmware_host.liveview"]
    assert len(messages) >= 2 and messages[0].startswith("2 devices (1 connected)")
    # the first line already has a rate: it was "0.0 frames/s" with no earlier sample to compare
    assert "(1 connected): - frames/s" not in messages[0] and " 0.0 frames/s" not in messages[0]
    assert "frames/s" in messages[1]


def test_live_view_runs_with_the_runtime(tmp_path: Path) -> None:
    from firmware_host.config.boards import load_boards
    from firmware_host.emulation.fleet import Fleet

    stream = FakeTTY()

    async def main() -> dict[str, Any]:
        fleet = Fleet([(load_boards()["env-sensor"], 1)], tmp_path / "ports", rate=100.0)
        await fleet.start()
        cfg = dataclasses.replace(config_from_dict({}, source="<test>"), devices=fleet.device_configs())
        rt = Runtime(cfg)
        attach_live_view(rt, stream, interval=0.02)
        await rt.start()
        try:
            await rt.wait_until(
                lambda s: s["devices"]["env-sensor-0"]["frames"] >= 20 and stream.getvalue().count("env-sensor-0") >= 3,
                10,
            )
        finally:
            summary = await rt.shutdown()
            await fleet.stop()
        return summary.status

    law(asyncio.run(main()))
    text = stream.getvalue()
    assert "connected" in text and text.endswith("\r\x1b[J")
