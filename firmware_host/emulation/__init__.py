"""Emulated boards without hardware: pty pairs (``virtualport``), payload
generators, and the fleet that ``run --emulate``, ``emulate`` and the test kit
all use. Nothing on the data path imports this package."""
