"""The firmware-host test kit (also a pytest plugin: see ``plugin.py``).

These classes are what the fixtures yield; import them for type hints or to
use the kit outside pytest. Reference: docs/testing.md.
"""

from .emulated import BoardSpec as BoardSpec
from .emulated import DeviceUnderTest as DeviceUnderTest
from .emulated import EmulatedBoard as EmulatedBoard
from .emulated import resolve_board as resolve_board
from .harness import AccountingError as AccountingError
from .harness import RuntimeUnderTest as RuntimeUnderTest
from .harness import assert_accounting as assert_accounting
from .harness import running_runtime as running_runtime
from .serialmock import MockDevice as MockDevice
from .serialmock import MockSerial as MockSerial
from .serialmock import SerialMock as SerialMock

__all__ = [
    "AccountingError", "BoardSpec", "DeviceUnderTest", "EmulatedBoard", "MockDevice", "MockSerial",
    "RuntimeUnderTest", "SerialMock", "assert_accounting", "resolve_board", "running_runtime",
]
