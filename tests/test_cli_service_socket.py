"""Issue 19, the control socket of a service: ``[control] group`` and
``mode`` let an operator's group in; ``stop --wait`` returns once the
runtime has exited. Real subprocess runs, real sockets."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from firmware_host.config.schema import ConfigError, config_from_dict
from tests.conftest import cli, cli_popen

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="fh-svc-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def other_group() -> str:
    """A group the socket can be given: one that is not ours already (root may
    give any; another user only its own, so then our own primary group)."""
    if os.geteuid() == 0:
        for name in ("nogroup", "nobody", "daemon"):
            try:
                if grp.getgrnam(name).gr_gid != os.getgid():
                    return name
            except KeyError:
                continue
    return grp.getgrgid(os.getgid()).gr_name


def start(directory: Path, control: str) -> tuple[subprocess.Popen[str], Path]:
    sock = directory / "run" / "ctl.sock"  # the server makes the directory
    cfg = directory / "c.toml"
    cfg.write_text(
        f'[control]\nsocket = "{sock}"\n{control}\n[[sinks]]\ntype = "jsonl"\npath = "{directory / "o.jsonl"}"\n'
    )
    proc = cli_popen("run", "-c", str(cfg), "--allow-empty", "-q")
    deadline = time.monotonic() + 20
    while cli("status", "--control", str(sock)).returncode != 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the runtime never answered"
    return proc, sock


def stop_and_reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_the_socket_gets_the_group_and_mode_and_stop_wait_returns_after_the_exit(short_dir: Path) -> None:
    group = other_group()
    gid = grp.getgrnam(group).gr_gid
    proc, sock = start(short_dir, f'group = "{group}"\nmode = "0660"\n')
    try:
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, gid)
        made = os.stat(sock.parent)  # made by the runtime: its group may pass through
        assert (stat.S_IMODE(made.st_mode), made.st_gid) == (0o710, gid)
        res = cli("stop", "--wait", "--timeout", "30", "--control", str(sock))
        # it returned only once the process was gone: no wait needed here
        assert proc.poll() is not None, res.stdout
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[-1] == "stopped"
        assert not os.path.lexists(sock)
        assert cli("status", "--control", str(sock)).returncode == 3
    finally:
        stop_and_reap(proc)
    assert proc.returncode == 0


def test_stop_wait_waits_for_a_slow_drain(short_dir: Path) -> None:
    """The drain outlasts the stop's reply: the stdout sink writes into a pipe
    nobody reads, so the runtime exits only at the end of its grace."""
    sock = short_dir / "ctl.sock"
    cfg = short_dir / "c.toml"
    cfg.write_text("[buffer]\nflush_interval = 0.05\n[shutdown]\ngrace = 0.5\n[plugins.stdout]\n")
    proc = cli_popen("run", "-c", str(cfg), "--emulate", "nucleo-imu:4", "--control", str(sock), "-q")
    try:
        deadline = time.monotonic() + 30
        while True:  # until the unread pipe is full and frames wait for the stdout sink
            assert proc.poll() is None and time.monotonic() < deadline, "the stdout sink never backed up"
            res = cli("status", "--json", "--control", str(sock))
            if res.returncode == 0 and json.loads(res.stdout)["sinks"][0]["pending"] > 500:
                break
        res = cli("stop", "--wait", "--timeout", "30", "--control", str(sock))
        assert res.returncode == 0, res.stderr
        assert proc.poll() is not None  # returned after the exit, not after the reply
    finally:
        stop_and_reap(proc)


def test_the_default_mode_is_0600(short_dir: Path) -> None:
    proc, sock = start(short_dir, "")
    try:
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        assert cli("stop", "--wait", "--control", str(sock)).returncode == 0
    finally:
        stop_and_reap(proc)


def test_stop_wait_gives_up_at_the_timeout(short_dir: Path) -> None:
    proc, sock = start(short_dir, "")
    try:
        res = cli("stop", "--wait", "--timeout", "0", "--control", str(sock))
        assert res.returncode == 1, res.stdout + res.stderr
        assert "is still running after 0 s" in res.stderr and len(res.stderr.splitlines()) == 1
        proc.communicate(timeout=30)  # the stop itself went through
        assert proc.returncode == 0
    finally:
        stop_and_reap(proc)


def test_stop_wait_without_a_runtime_is_exit_3(short_dir: Path) -> None:
    res = cli("stop", "--wait", "--control", str(short_dir / "none.sock"))
    assert res.returncode == 3, res.stderr


BAD_MODES = ['"0666"', '"0644"', '"0400"', '"600x"', '"07777"', '"60"', "600", '"4660"', '""']


@pytest.fixture(scope="module")
def bad_mode_checks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[CompletedProcess[str]]]]:
    """``config check`` of a config with each bad mode, each in its own directory, all
    started at once: they are independent, so the module waits for the slowest."""

    def check(mode: str) -> CompletedProcess[str]:
        cfg = tmp_path_factory.mktemp("mode") / "c.toml"
        cfg.write_text(f"[control]\nmode = {mode}\n")
        return cli("config", "check", "-c", str(cfg))

    with ThreadPoolExecutor(len(BAD_MODES)) as pool:
        yield {mode: pool.submit(check, mode) for mode in BAD_MODES}


@pytest.mark.parametrize("mode", BAD_MODES)
def test_a_bad_mode_is_refused_at_load(mode: str, bad_mode_checks: dict[str, Future[CompletedProcess[str]]]) -> None:
    with pytest.raises(ConfigError, match=r"control\.mode.*octal mode string"):
        config_from_dict({"control": {"mode": json.loads(mode) if mode.startswith('"') else int(mode)}})
    res = bad_mode_checks[mode].result(timeout=60)
    assert res.returncode == 2 and "control.mode" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("mode", ["0600", "600", "0620", "0640", "0660"])
def test_good_modes_load(mode: str) -> None:
    assert config_from_dict({"control": {"mode": mode}}).control.mode_bits == int(mode, 8)


def test_an_unknown_group_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"control\.group.*no group named 'no-such-group-fh'"):
        config_from_dict({"control": {"group": "no-such-group-fh"}})
