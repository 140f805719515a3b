"""Security: what tests/test_control.py and tests/test_cli_control.py do not already show.

Already tested there (and listed in docs/reliability.md): the socket is 0600
and removed on close; a missing directory is created 0700; a group/other
writable directory is refused unless sticky; a symlink or a regular file at
the socket path is refused (in-process and through the CLI); a stale socket is
replaced and a live one refused; a 10 MB line gets ``request too long`` and
the connection is closed; 64 connections at most.

Here: another user really cannot connect (root only: it needs a second uid);
a directory owned by another user is refused (root only); the socket path is
never followed through a symlink, also when the link points at a live or
stale socket or is swapped in while running; the request bound is exact and a
10 MB line costs no memory; configs and control requests cannot make the
runtime import anything: plugins come only from installed entry points, sink
types and codecs only from the registries, and a canary module that would
leave a marker file if imported is never imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from firmware_host import ConfigError, Runtime, config_from_dict
from firmware_host.control.client import request
from firmware_host.control.protocol import MAX_REQUEST
from firmware_host.errors import ControlError
from firmware_host.plugins.host import start_plugins
from firmware_host.runtime import RuntimeFailure
from firmware_host.testing import assert_accounting
from tests.conftest import cli

pytestmark = pytest.mark.timeout(60)

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")


@pytest.fixture
def sockdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="fhs")  # short: Unix socket paths are limited to 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextlib.asynccontextmanager
async def runtime_on(path: str) -> AsyncIterator[Runtime]:
    rt = Runtime(config_from_dict({}), control_path=path)
    await rt.start()
    try:
        yield rt
    finally:
        summary = await rt.shutdown()
        assert_accounting(summary.status)


async def start_fails(path: str) -> str:
    rt = Runtime(config_from_dict({}), control_path=path)
    with pytest.raises(RuntimeFailure) as err:
        await rt.start()
    return str(err.value)


def connect_as(uid: int, path: str) -> int:
    """Fork, become ``uid``, connect to ``path``; the child's exit status is the errno (0: connected)."""
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, no event loop, just the syscall
        code = 99
        try:
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            code = 0
        except OSError as exc:
            code = exc.errno or 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- who can connect ---------------------------------------------------------------------------


@root_only
def test_another_user_cannot_connect(sockdir: str) -> None:
    # a sticky world-writable directory (like /tmp) is accepted, so the socket's
    # own 0600 mode is the only thing keeping the other user out
    shared = os.path.join(sockdir, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    os.chmod(sockdir, 0o755)
    path = os.path.join(shared, "ctl.sock")

    async def main() -> None:
        async with runtime_on(path):
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            assert await asyncio.to_thread(connect_as, NOBODY, path) == errno.EACCES
            assert await asyncio.to_thread(connect_as, os.getuid(), path) == 0  # the owner can
            assert (await request(path, {"cmd": "ping"}))["pong"]

    asyncio.run(main())


@root_only
def test_a_directory_owned_by_another_user_is_refused(sockdir: str) -> None:
    theirs = os.path.join(sockdir, "theirs")
    os.mkdir(theirs, 0o700)
    os.chown(theirs, NOBODY, NOBODY)
    path = os.path.join(theirs, "ctl.sock")
    msg = asyncio.run(start_fails(path))
    assert msg == f"refusing the control socket directory {theirs}: owned by another user (uid {NOBODY})"
    assert not os.path.lexists(path)


# -- the socket path is never followed -----------------------------------------------------------


def test_a_symlink_to_a_live_socket_is_refused_and_the_other_runtime_untouched(sockdir: str) -> None:
    real = os.path.join(sockdir, "real.sock")
    link = os.path.join(sockdir, "link.sock")

    async def main() -> None:
        async with runtime_on(real) as first:
            os.symlink(real, link)
            assert await start_fails(link) == f"refusing the control socket {link}: it is a symlink"
            assert os.path.islink(link) and stat.S_ISSOCK(os.lstat(real).st_mode)
            status = await request(real, {"cmd": "status"})
            assert status["control"]["requests"] == 1 and status["control"]["errors"] == 0
            assert not first.stopped.is_set()

    asyncio.run(main())


def test_a_symlink_to_a_stale_socket_is_refused_not_unlinked(sockdir: str) -> None:
    # a stale socket is removed and replaced; through a link that unlink would hit the target
    stale = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    link = os.path.join(sockdir, "ctl.sock")
    os.symlink(stale, link)
    assert asyncio.run(start_fails(link)) == f"refusing the control socket {link}: it is a symlink"
    assert stat.S_ISSOCK(os.lstat(stale).st_mode) and os.path.islink(link)


def test_a_symlink_swapped_in_while_running_is_left_alone_at_close(sockdir: str) -> None:
    path = os.path.join(sockdir, "ctl.sock")
    precious = os.path.join(sockdir, "precious")
    Path(precious).write_text("keep me")

    async def main() -> None:
        async with runtime_on(path):
            os.unlink(path)
            os.symlink(precious, path)

    asyncio.run(main())
    assert os.path.islink(path) and Path(precious).read_text() == "keep me"


# -- requests are bounded -------------------------------------------------------------------------


async def send_line(path: str, line: bytes) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(line)
        await writer.drain()
        return json.loads(await reader.readline())  # type: ignore[no-any-return]
    finally:
        writer.close()


def test_the_request_bound_is_exact(sockdir: str) -> None:
    """MAX_REQUEST bytes before the newline are served; one more is refused (the
    error says "max 65536 bytes", the newline not counted)."""
    path = os.path.join(sockdir, "ctl.sock")
    head = b'{"cmd": "ping", "pad": "'

    def ping_of(n: int) -> bytes:
        return head + b"p" * (n - len(head) - 2) + b'"}\n'

    async def main() -> None:
        async with runtime_on(path):
            served = await send_line(path, ping_of(MAX_REQUEST))
            assert served["ok"] is False and "unknown argument 'pad'" in str(served["error"])
            refused = await send_line(path, ping_of(MAX_REQUEST + 1))
            assert refused == {"ok": False, "error": f"request too long (max {MAX_REQUEST} bytes)", "code": 2}

    asyncio.run(main())


def test_a_10mb_line_costs_no_memory(sockdir: str) -> None:
    """The server discards an over-long line as it arrives: Python allocations
    (tracemalloc, both ends of the connection live in this process) peak at a
    small multiple of MAX_REQUEST while 10 MB stream in, 3 times, not at the
    line's size. The client writes one reused 64 KiB chunk and
    waits for room (drain) before each write, so it holds little itself."""
    path = os.path.join(sockdir, "ctl.sock")
    chunk = b"x" * 65536
    total = 10 * 1024 * 1024

    async def flood() -> dict[str, object]:
        reader, writer = await asyncio.open_unix_connection(path)

        async def send() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                for _ in range(total // len(chunk)):
                    writer.write(chunk)
                    await writer.drain()
                writer.write(b"\n")
                await writer.drain()
                writer.write_eof()

        sender = asyncio.create_task(send())
        reply = json.loads(await reader.readline())
        await sender
        writer.close()
        return reply  # type: ignore[no-any-return]

    async def main() -> int:
        async with runtime_on(path):
            await send_line(path, b'{"cmd": "ping"}\n')  # warm: buffers and tasks exist
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                for _ in range(3):
                    reply = await flood()
                    assert reply == {"ok": False, "error": f"request too long (max {MAX_REQUEST} bytes)", "code": 2}
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
            assert (await request(path, {"cmd": "ping"}))["pong"]  # still serving
            return peak

    peak = asyncio.run(main())
    # measured ~0.6 MB: the transport's 256 KiB reads, the reader's 2 x 64 KiB, the
    # client's write buffer; a server that kept the line would peak above 10 MB
    assert peak < 2 * 1024 * 1024, f"{peak} bytes at peak for a 10 MB line"


# -- configs and requests cannot execute code ----------------------------------------------------

CANARY = "fh_canary_mod"


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module that leaves a marker file when imported, importable from the
    test process (sys.path) and from a CLI started in ``tmp_path`` (``python -m``
    puts the working directory first on sys.path)."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / f"{CANARY}.py").write_text(
        textwrap.dedent(f"""\
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("imported")
        def setup(ctx): pass
        class Sink: pass
        class Codec: pass
        """)
    )
    pkg = tmp_path / "fh_canary_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(CANARY, None)
    yield marker
    sys.modules.pop(CANARY, None)


def not_imported(marker: Path) -> None:
    assert not marker.exists(), "the canary module was imported"
    assert CANARY not in sys.modules and "fh_canary_pkg" not in sys.modules


PLUGIN_NAMES = [
    "os:system",
    "../evil",
    CANARY,
    f"{CANARY}:setup",
    f"{CANARY}.py",
    "fh_canary_pkg",
    f"./{CANARY}",
    "firmware_host_plugins.stats",
    "firmware_host_plugins.stats:setup",
    "builtins:exec",
    "__import__",
]


@pytest.mark.parametrize("name", PLUGIN_NAMES)
def test_a_plugin_name_that_is_not_an_installed_entry_point_imports_nothing(
    tmp_path: Path, canary: Path, name: str
) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"[plugins.{json.dumps(name)}]\ninterval = 1\n")
    with pytest.raises(ConfigError) as err:
        asyncio.run(start_plugins(str(cfg)))
    assert f"plugins.{name}: no installed plugin named {name!r}" in str(err.value)
    not_imported(canary)


SINK_TYPES = [
    "os.system",
    f"{CANARY}:Sink",
    CANARY,
    "fh_canary_pkg",
    "firmware_host.sinks.jsonl:JsonlSink",
    "subprocess.Popen",
]


@pytest.mark.parametrize("sink_type", SINK_TYPES)
def test_a_sink_type_or_codec_that_names_code_is_a_config_error(canary: Path, sink_type: str) -> None:
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.type: unknown sink type"):
        config_from_dict({"sinks": [{"type": sink_type, "path": "x"}]}, source="gw.toml")
    with pytest.raises(ConfigError, match=r"devices\[0\]\.codec: unknown codec"):
        config_from_dict({"devices": [{"name": "d", "port": "/dev/null", "codec": sink_type}]}, source="gw.toml")
    not_imported(canary)


def test_control_requests_cannot_name_code(sockdir: str, canary: Path) -> None:
    path = os.path.join(sockdir, "ctl.sock")

    async def main() -> None:
        async with runtime_on(path) as rt:
            for args in (
                {"codec": f"{CANARY}:Codec"},
                {"codec": "os.system"},
                {"board": CANARY},
                {"board": f"../{CANARY}.toml"},
                {"codec": "fh1", "name": f"{CANARY}:x"},
            ):
                req = {"cmd": "devices.add", "name": "d1", "port": "/dev/null", **args}
                with pytest.raises(ControlError) as err:
                    await request(path, req)
                assert err.value.exit_code == 2, err.value
                assert "d1" not in rt.devices
            with pytest.raises(ControlError) as err:
                await request(path, {"cmd": f"{CANARY}:setup"})
            assert str(err.value).startswith('unknown command "fh_canary_mod:setup"')

    asyncio.run(main())
    not_imported(canary)


def test_the_cli_refuses_such_configs_with_exit_2_and_imports_nothing(tmp_path: Path, canary: Path) -> None:
    sock = tempfile.mkdtemp(prefix="fhs")
    try:
        cases = {
            "plugin.toml": f'[plugins."{CANARY}:setup"]\n',
            "traversal.toml": '[plugins."../evil"]\n',
            "sink.toml": '[[sinks]]\ntype = "os.system"\npath = "x"\n',
            "codec.toml": f'[[devices]]\nname = "d"\nport = "/dev/null"\ncodec = "{CANARY}:Codec"\n',
        }
        for name, text in cases.items():
            (tmp_path / name).write_text(text)

        def refused(name: str) -> subprocess.CompletedProcess[str]:
            return cli(
                "run", "-c", name, "--duration", "0", "--control", os.path.join(sock, f"{name}.sock"), cwd=tmp_path
            )

        # independent runs, started together: the test waits for the slowest, not for the sum
        with ThreadPoolExecutor(len(cases)) as pool:
            results = dict(zip(cases, pool.map(refused, cases)))
        for name, res in results.items():
            assert res.returncode == 2, (name, res.stderr)
            assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
            assert name in res.stderr
        # the plugins report reads only [plugins.*]: an unknown name is listed, never imported
        res = cli("plugins", "-c", "plugin.toml", "--json", cwd=tmp_path)
        assert "Traceback" not in res.stderr, res.stderr
    finally:
        shutil.rmtree(sock, ignore_errors=True)
    assert not canary.exists(), "a CLI run imported the canary module"
