"""The device under test (real or emulated), and board lookup by name.

The emulated board itself is the emulator's
(:class:`firmware_host.emulation.board.EmulatedBoard`, the same one every
device of ``run --emulate`` is built on), so a test drives exactly the bytes
the fleet puts on the wire. This module only adapts it to the test kit:
:func:`resolve_board` turns ``--fh-board`` / ``fh_board(name)`` into a
:class:`BoardSpec`, and :class:`DeviceUnderTest` lets one test run against
an emulated board or a real one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from firmware_host.codecs import BUILTIN_CODECS, CodecFactory
from firmware_host.config.boards import Board, load_board_file, load_boards
from firmware_host.emulation.board import DEFAULT_RATE, BoardSpec, EmulatedBoard, PayloadSpec, device_config
from firmware_host.emulation.replay import Expected, Replay, ReplayFaults
from firmware_host.emulation.wire import Body

__all__ = [
    "DEFAULT_RATE",
    "BoardSpec",
    "Body",
    "DeviceUnderTest",
    "EmulatedBoard",
    "Expected",
    "PayloadSpec",
    "Replay",
    "ReplayFaults",
    "device_config",
    "resolve_board",
]


def resolve_board(
    name: str,
    codecs: Mapping[str, CodecFactory] | None = None,
    *,
    boards: Mapping[str, Board] | None = None,
    codec_options: Mapping[str, int] | None = None,
) -> BoardSpec:
    """``name`` is a board (shipped, ``$FIRMWARE_HOST_BOARDS``, or a ``.toml``
    path) or a codec name; ``codec_options`` override the board's."""
    registry = {**BUILTIN_CODECS, **(codecs or {})}
    codec_options = dict(codec_options or {})
    if name in registry and (boards is None or name not in boards):
        return BoardSpec(codec=name, codec_options=codec_options)
    if name.endswith(".toml") and os.path.isfile(name):
        board: Board | None = load_board_file(os.path.abspath(name))  # its config names it after a chdir too
    else:
        known = load_boards() if boards is None else boards
        board = known.get(name)
        if board is None:
            raise LookupError(
                f"unknown board or codec {name!r} (boards: {', '.join(sorted(known)) or 'none'};"
                f" codecs: {', '.join(sorted(registry))})"
            )
    assert board is not None
    return BoardSpec.from_board(board, codec_options)


class DeviceUnderTest:
    """What ``fh_device`` yields: the real port given with ``--fh-port``, or
    an emulated board on a pty. The same test code drives both."""

    def __init__(self, path: str, spec: BoardSpec, emulator: EmulatedBoard | None = None) -> None:
        self.path = path
        self.spec = spec
        #: the emulated board (None on real hardware): send frames, noise, unplug
        self.emulator = emulator

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    @property
    def codec(self) -> str:
        return self.spec.codec

    def config(self, name: str = "dut", **overrides: Any) -> dict[str, Any]:
        """A ``[[devices]]`` entry: port, codec, codec options and baudrate of the board."""
        return device_config(name, self.path, self.spec, **overrides)

    @contextlib.asynccontextmanager
    async def streaming(self, rate: float | None = None) -> AsyncIterator[DeviceUnderTest]:
        """While inside, the device sends frames: an emulated board streams at
        its board's rate; real hardware streams by itself, so this does nothing."""
        if self.emulator is None:
            yield self
            return
        async with self.emulator.streaming(rate):
            yield self

    def __repr__(self) -> str:
        kind = "emulated" if self.emulated else "hardware"
        return f"<DeviceUnderTest {self.spec.name} {kind} at {self.path}>"
