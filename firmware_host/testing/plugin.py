"""pytest plugin (entry point ``pytest11``): fixtures for firmware-host users.

Installing firmware-host gives every pytest run these fixtures, no conftest
needed (reference: docs/testing.md):

* ``fh_serial_mock`` — pyserial mocked with pytest-mock: scripted devices, no fds
* ``fh_ports`` — raw pty-backed virtual ports
* ``fh_board`` — emulated boards on ptys that speak a board's codec
* ``fh_device`` — the real board given with ``--fh-port``, else an emulated one
* ``fh_runtime`` — an in-process runtime, shut down in order, accounting checked
* ``fh_jsonl`` — a path for a jsonl sink

``async def`` tests run in a fresh event loop each, unless another async
plugin (pytest-asyncio, anyio) claims them with its own marker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from firmware_host.codecs import CodecFactory
from firmware_host.emulation.replay import Replay, ReplayFaults
from firmware_host.emulation.virtualport import VirtualPort
from firmware_host.recordfile import read_recording
from firmware_host.testing.emulated import BoardSpec, DeviceUnderTest, EmulatedBoard, resolve_board
from firmware_host.testing.harness import running_runtime
from firmware_host.testing.serialmock import SerialMock

_OTHER_ASYNC_MARKERS = ("asyncio", "anyio", "trio")
_SPEC = pytest.StashKey[BoardSpec]()
HARDWARE_SKIP_REASON = "needs real hardware: run pytest with --fh-port PATH (and --fh-board NAME)"


# -- options, marker, runner ------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("firmware-host", "firmware-host test kit")
    group.addoption(
        "--fh-port",
        metavar="PATH",
        default=None,
        help="run fh_device tests against the real board on PATH (a device or pyserial URL); "
        "fh_hardware tests are skipped without it",
    )
    group.addoption(
        "--fh-board",
        metavar="NAME",
        default=None,
        help="the board fh_device speaks (a board name, a board .toml file, or a codec name); default: fh1",
    )
    group.addoption(
        "--fh-baudrate", metavar="N", type=int, default=None, help="baudrate for --fh-port (default: the board's)"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fh_hardware: needs a real board (--fh-port); skipped without one")
    name = config.getoption("fh_board", None) or "fh1"
    try:
        spec = resolve_board(name)
    except (LookupError, ValueError) as exc:  # BoardError is a ValueError too
        raise pytest.UsageError(f"--fh-board: {exc}") from None
    baudrate = config.getoption("fh_baudrate", None)
    if baudrate is not None:
        spec = dataclasses.replace(spec, baudrate=baudrate)
    config.stash[_SPEC] = spec


def pytest_report_header(config: pytest.Config) -> str:
    spec, port = config.stash[_SPEC], config.getoption("fh_port")
    where = f"hardware at {port}" if port else "emulated (no --fh-port)"
    return f"firmware-host: fh_device = {spec.name} ({spec.codec}), {where}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("fh_hardware") and not item.config.getoption("fh_port"):
        pytest.skip(HARDWARE_SKIP_REASON)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if any(pyfuncitem.get_closest_marker(m) for m in _OTHER_ASYNC_MARKERS):
        return None
    if (
        pyfuncitem.config.pluginmanager.hasplugin("asyncio") and pyfuncitem.config.getini("asyncio_mode") == "auto"
    ):  # pragma: no cover - user setup
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True


# -- pty ports and emulated boards ---------------------------------------------------


class VirtualPorts:
    """Factory for pty-backed virtual devices, closed at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports: list[VirtualPort] = []

    def new(self, name: str | None = None) -> VirtualPort:
        name = name or f"dev{len(self.ports)}"
        port = VirtualPort(str(self.directory / name))
        self.ports.append(port)
        return port

    def close(self) -> None:
        for port in self.ports:
            port.close()


@pytest.fixture
def fh_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualPorts]:
    """``fh_ports.new("imu0")`` → a VirtualPort (pty pair behind a stable symlink)."""
    # a short directory: Unix socket and pty link paths have small limits
    ports = VirtualPorts(tmp_path_factory.mktemp("ports"))
    try:
        yield ports
    finally:
        ports.close()


class BoardFactory:
    """``fh_board("nucleo-imu")`` → an :class:`EmulatedBoard` on a new pty."""

    def __init__(self, ports: VirtualPorts) -> None:
        self._ports = ports
        self.boards: list[EmulatedBoard] = []

    def __call__(
        self,
        board: str = "fh1",
        *,
        name: str | None = None,
        codecs: Mapping[str, CodecFactory] | None = None,
        seed: int = 0,
        **codec_options: int,
    ) -> EmulatedBoard:
        spec = resolve_board(board, codecs, codec_options=codec_options)
        emulated = EmulatedBoard(self._ports.new(name), spec, codecs, seed=seed)
        self.boards.append(emulated)
        return emulated

    def replay(
        self,
        path: str | os.PathLike[str],
        *,
        speed: float = 1.0,
        faults: ReplayFaults | None = None,
        codec: str | None = None,
        name: str | None = None,
        codecs: Mapping[str, CodecFactory] | None = None,
    ) -> Replay:
        """A recording (``firmware-host record``) on a new pty: ``replay.expected``
        is what the runtime must count (frames, rejected, gaps), known before
        it plays; ``replay.config(name)`` its ``[[devices]]`` entry; ``await
        replay.play()`` waits for the host to open the port, then plays at
        ``speed`` times the recorded pace (0: as fast as the host reads).
        Reads the file now (RecordingError for one that is not a recording)."""
        recording = read_recording(os.fspath(path))
        return Replay(recording, self._ports.new(name), speed=speed, faults=faults, codec=codec, registry=codecs)


@pytest.fixture
def fh_board(fh_ports: VirtualPorts) -> BoardFactory:
    """``board = fh_board("nucleo-imu" | "fh1" | "nmea" | ..., name=None, **codec_options)``:
    an emulated board on a pty; ``await board.send_frames(n)``, ``send_lines``,
    ``noise``, ``unplug``/``replug``, ``read_downlink``, ``streaming()``,
    ``answering(drop_first=, drop=, delay=, reply=)`` (acks to fh1 commands).
    ``fh_board.replay(FILE, speed=, faults=)``: a recording played on a pty."""
    return BoardFactory(fh_ports)


@pytest.fixture
def fh_device(request: pytest.FixtureRequest, fh_ports: VirtualPorts) -> DeviceUnderTest:
    """The device under test: the real board at ``--fh-port`` (speaking
    ``--fh-board``), else that board emulated on a pty. ``fh_device.config(name)``
    is its ``[[devices]]`` entry; ``async with fh_device.streaming():`` makes an
    emulated board send frames like firmware (real hardware does by itself)."""
    config = request.config
    spec = config.stash[_SPEC]
    port: str | None = config.getoption("fh_port")
    if port:
        if "://" not in port and not os.path.exists(port):
            pytest.fail(f"--fh-port {port}: no such device (is the board plugged in?)", pytrace=False)
        return DeviceUnderTest(port, spec)
    emulator = EmulatedBoard(fh_ports.new("dut"), spec)
    return DeviceUnderTest(emulator.path, spec, emulator)


# -- mocked pyserial -------------------------------------------------------------------


@pytest.fixture
def fh_serial_mock(mocker: Any) -> SerialMock:
    """pyserial's ``serial_for_url`` patched (pytest-mock) for this test:
    ``dev = fh_serial_mock.device("/dev/ttyACM0")``; ``dev.feed(b"...")``,
    ``dev.fail(exc)``, ``dev.writes``, ``dev.open_error``, ``dev.unplug()``."""
    return SerialMock(mocker)


# -- runtime -------------------------------------------------------------------------------


@pytest.fixture
def fh_runtime() -> Callable[..., Any]:
    """``async with fh_runtime({...config...}, **Runtime kwargs) as rt:`` — an
    in-process runtime, shut down in order on exit with the accounting law asserted."""
    return running_runtime


@pytest.fixture
def fh_jsonl(tmp_path: Path) -> Path:
    """A path for a jsonl sink in the test's temp dir."""
    return tmp_path / "frames.jsonl"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
