"""pytest plugin (entry point ``pytest11``): fixtures for firmware-host users.

``async def`` tests run in a fresh event loop each, unless another async
plugin (pytest-asyncio, anyio) claims them with its own marker.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..virtualport import VirtualPort
from .harness import running_runtime

_OTHER_ASYNC_MARKERS = ("asyncio", "anyio", "trio")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if any(pyfuncitem.get_closest_marker(m) for m in _OTHER_ASYNC_MARKERS):
        return None
    if pyfuncitem.config.pluginmanager.hasplugin("asyncio") and \
            pyfuncitem.config.getini("asyncio_mode") == "auto":  # pragma: no cover - user setup
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True


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


@pytest.fixture
def fh_runtime() -> Callable[..., Any]:
    """``async with fh_runtime({...config...}) as rt:`` — an in-process runtime,
    shut down in order on exit with the accounting law asserted."""
    return running_runtime


@pytest.fixture
def fh_jsonl(tmp_path: Path) -> Path:
    """A path for a jsonl sink in the test's temp dir."""
    return tmp_path / "frames.jsonl"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    import json
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
