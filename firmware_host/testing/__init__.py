"""The firmware-host test kit (also a pytest plugin: see ``plugin.py``)."""

from .harness import AccountingError as AccountingError
from .harness import RuntimeUnderTest as RuntimeUnderTest
from .harness import assert_accounting as assert_accounting
from .harness import running_runtime as running_runtime

__all__ = ["AccountingError", "RuntimeUnderTest", "assert_accounting", "running_runtime"]
