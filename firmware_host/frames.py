"""The unit that flows through the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# slots: a busy gateway holds 100k of these; a dict per frame would double RSS.
@dataclass(slots=True, eq=False)
class Frame:
    """One decoded frame from one device.

    Binary codecs (``fh1``) fill ``payload`` and ``type``; text codecs
    (``nmea``, ``lines``) fill ``text`` and leave ``type`` as None.
    ``ts`` is the host's receive time (seconds since the epoch). ``fields``
    holds the payload's named values where the device's board has a schema
    for it (``firmware_host.values``), else None.
    """

    device: str
    seq: int
    type: int | None
    ts: float
    payload: bytes | None = None
    text: str | None = None
    fields: dict[str, Any] | None = None

    @property
    def size(self) -> int:
        """Bytes this frame counts against ``max_bytes``."""
        if self.payload is not None:
            return len(self.payload)
        return len(self.text) if self.text is not None else 0
