"""Shared helpers for the project's own tests (the fixtures come from our
own test kit, firmware_host.testing, loaded through its pytest11 entry point)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]


# A suite run is repeatable: hypothesis draws the same examples every time, so
# a CI failure is one anyone can reproduce, and no run fails on a case nobody
# has seen locally. HYPOTHESIS_PROFILE=explore draws new random examples (and
# keeps failures in .hypothesis/): run it on purpose, then pin what it finds
# with @example.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _child_bytecode_cache() -> str | None:
    """Hundreds of tests start ``python -m firmware_host``. Where PYTHONDONTWRITEBYTECODE
    is set (some CI machines export it), each child compiled the whole package from
    source again (~0.1 s a ``run``). The children of this session share one bytecode
    cache instead, in a directory of their own: still nothing written into the
    checkout, and nothing they do differs. Returns that directory (None: nothing done)."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return None
    cache = tempfile.mkdtemp(prefix="fh-tests-pyc-")
    os.environ["PYTHONPYCACHEPREFIX"] = cache  # inherited by every child from here on
    del os.environ["PYTHONDONTWRITEBYTECODE"]  # this process itself still writes none
    return cache


#: the children's bytecode cache, removed when the session ends (None: not ours)
CHILD_BYTECODE_CACHE = _child_bytecode_cache()


def pytest_unconfigure(config: pytest.Config) -> None:
    if CHILD_BYTECODE_CACHE is not None:
        shutil.rmtree(CHILD_BYTECODE_CACHE, ignore_errors=True)


def cli(
    *args: str, cwd: str | os.PathLike[str] | None = None, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m firmware_host ARGS`` as a user would, capture output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "firmware_host", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: the environment CLI children run in: this checkout first, and no control socket from the caller's shell
CLI_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
CLI_ENV.pop("FIRMWARE_HOST_CONTROL", None)


async def cli_async(
    *args: str, timeout: float = 40.0, cwd: str | os.PathLike[str] | None = None
) -> tuple[int, str, str]:
    """``python -m firmware_host ARGS`` from async code: (exit status, stdout, stderr)."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_host",
        *args,
        env=CLI_ENV,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_popen(
    *args: str, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_host", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def cli_runtime(emulate: str, prefix: str) -> Iterator[tuple[Path, Path]]:
    """A ``firmware-host run --emulate EMULATE`` in the background, answering on
    its control socket: (its working directory, its socket); stopped in order after."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    sock = work / "ctl.sock"
    proc = cli_popen("run", "--emulate", emulate, "--control", str(sock), "-q", cwd=work)
    try:
        deadline = time.monotonic() + 20
        while cli("status", "--control", str(sock)).returncode != 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the runtime never answered"
        yield work, sock
    finally:
        if proc.poll() is None:
            cli("stop", "--control", str(sock))
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        shutil.rmtree(work, ignore_errors=True)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def seqs_by_device(records: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        out.setdefault(r["device"], []).append(r["seq"])
    return out


def toml_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to ~107 bytes)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="fh-"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem of 2 MiB (a tmpfs), to fill up: ENOSPC as a full
    disk gives it. Mounting needs root (CI runs as root); skipped otherwise."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Fill ``directory``'s filesystem to the last byte; returns the filler
    file (delete it to give the space back)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 4096, 1):  # big steps, then the last bytes
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def kill_jsonl_path(path: Path) -> None:
    """Make every later write of a running jsonl sink on ``path`` fail: the
    file is moved away and a directory takes its place (the sink notices the
    move before its next batch, and a directory cannot be reopened)."""
    path.rename(path.with_name(path.name + ".gone"))
    path.mkdir()


def c_compiler(purpose: str) -> str:
    """The system C compiler; without one the test skips, saying what it could not build."""
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if found is None:
        pytest.skip(f"no C compiler (cc, gcc or clang) on PATH: cannot build {purpose}")
    return found
