"""Whether the compiled parts may be used: one reading of ``FIRMWARE_HOST_PURE``.

corncobs (COBS for the fh1 codec), the NMEA fast path's C part and the fields
writer in C (``values/_json_c.c``) each have a pure-Python twin that gives the
same results. ``FIRMWARE_HOST_PURE`` set to
anything but ``0`` keeps them off (the benchmark's ``-pure`` runs, a suspected
bug in compiled code); read when each is imported. ``codecs/cobs.py`` reads it
itself, the same way: codecs import nothing beyond frames and errors
(tests/test_check.py).
"""

from __future__ import annotations

import os

__all__ = ["ENV_VAR", "turned_off"]

ENV_VAR = "FIRMWARE_HOST_PURE"


def turned_off() -> bool:
    """``FIRMWARE_HOST_PURE`` is set (to anything but ``0``): pure Python only."""
    return os.environ.get(ENV_VAR, "0") not in ("", "0")
