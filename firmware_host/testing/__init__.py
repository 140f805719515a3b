"""The firmware-host test kit (also a pytest plugin: see ``plugin.py``).

These classes are what the fixtures yield; import them for type hints or to
use the kit outside pytest. Reference: docs/testing.md.
"""

from firmware_host.emulation.acks import AckPolicy as AckPolicy
from firmware_host.testing.emulated import BoardSpec as BoardSpec
from firmware_host.testing.emulated import DeviceUnderTest as DeviceUnderTest
from firmware_host.testing.emulated import EmulatedBoard as EmulatedBoard
from firmware_host.testing.emulated import Expected as Expected
from firmware_host.testing.emulated import Replay as Replay
from firmware_host.testing.emulated import ReplayFaults as ReplayFaults
from firmware_host.testing.emulated import resolve_board as resolve_board
from firmware_host.testing.harness import AccountingError as AccountingError
from firmware_host.testing.harness import Expectation as Expectation
from firmware_host.testing.harness import FramePattern as FramePattern
from firmware_host.testing.harness import RuntimeUnderTest as RuntimeUnderTest
from firmware_host.testing.harness import assert_accounting as assert_accounting
from firmware_host.testing.harness import running_runtime as running_runtime
from firmware_host.testing.serialmock import MockDevice as MockDevice
from firmware_host.testing.serialmock import MockSerial as MockSerial
from firmware_host.testing.serialmock import SerialMock as SerialMock

__all__ = [
    "AccountingError",
    "AckPolicy",
    "BoardSpec",
    "DeviceUnderTest",
    "EmulatedBoard",
    "Expectation",
    "Expected",
    "FramePattern",
    "MockDevice",
    "MockSerial",
    "Replay",
    "ReplayFaults",
    "RuntimeUnderTest",
    "SerialMock",
    "assert_accounting",
    "resolve_board",
    "running_runtime",
]
