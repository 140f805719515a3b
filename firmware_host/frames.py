"""The unit that flows through the runtime."""

from __future__ import annotations

from typing import Any, Protocol


class Values(Protocol):
    """How a frame's payload reads as named values: what a device's decoder
    (``firmware_host.values``) gives the frames whose layout it knows."""

    def fields(self, payload: bytes) -> dict[str, Any] | None:
        """The payload's fields; None when it is not of this layout's size."""
        ...

    def json(self, payload: bytes) -> bytes | None:
        """``fields(payload)`` as JSON text, written without the dict where it
        can be (a compiled layout); None as ``fields``."""
        ...

    def json_into(self, record: bytes, payload: bytes) -> bytes:
        """``record`` (one JSON object and a newline, as the jsonl sink writes
        it) with ``"fields": json(payload)`` added as its last member;
        ``record`` itself where ``json`` gives None."""
        ...


class Frame:
    """One decoded frame from one device.

    Binary codecs (``fh1``) fill ``payload`` and ``type``; text codecs
    (``nmea``, ``lines``) fill ``text`` and leave ``type`` as None.
    ``ts`` is the host's receive time (seconds since the epoch). ``fields``
    holds the payload's named values where the device's board has a schema
    for it (``firmware_host.values``), else None.

    A binary layout's values are read when first asked for: its decoder sets
    ``values``, and ``fields`` is made from it and the payload on the first
    read (and kept). A sink that writes JSON asks ``values.json`` instead, and
    no dict is made at all: at 921600 baud the dict and its writing were most
    of what decoding cost. Setting ``fields`` replaces the values (and drops
    ``values``), so a processor's own fields are what every sink sees. The
    fields are those of the payload at their first read: a processor that
    replaces ``payload`` sets ``fields`` too (or None) if they may have been read.
    """

    # slots: a busy gateway holds 100k of these; a dict per frame would double RSS.
    __slots__ = ("_fields", "device", "payload", "seq", "text", "ts", "type", "values")

    def __init__(
        self,
        device: str,
        seq: int,
        type: int | None,
        ts: float,
        payload: bytes | None = None,
        text: str | None = None,
        fields: dict[str, Any] | None = None,
        values: Values | None = None,
    ) -> None:
        self.device = device
        self.seq = seq
        self.type = type
        self.ts = ts
        self.payload = payload
        self.text = text
        # the fields once made (or given); codecs and sinks on the per-frame
        # path read and set this slot directly, not through the property
        self._fields = fields
        #: where ``fields`` comes from while it has not been read (None: nowhere)
        self.values = values

    @property
    def fields(self) -> dict[str, Any] | None:
        fields = self._fields
        if fields is None:
            values = self.values
            if values is not None and self.payload is not None:
                fields = self._fields = values.fields(self.payload)
        return fields

    @fields.setter
    def fields(self, fields: dict[str, Any] | None) -> None:
        self._fields = fields
        self.values = None

    @property
    def size(self) -> int:
        """Bytes this frame counts against ``max_bytes``."""
        if self.payload is not None:
            return len(self.payload)
        return len(self.text) if self.text is not None else 0

    def __getstate__(self) -> tuple[Any, ...]:
        # pickle and copy: the fields themselves (made now if they were not),
        # not the layout that would make them (compiled, and not picklable)
        return (self.device, self.seq, self.type, self.ts, self.payload, self.text, self.fields)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.device, self.seq, self.type, self.ts, self.payload, self.text, self._fields = state
        self.values = None

    def __repr__(self) -> str:
        return (
            f"Frame(device={self.device!r}, seq={self.seq!r}, type={self.type!r}, ts={self.ts!r}, "
            f"payload={self.payload!r}, text={self.text!r}, fields={self.fields!r})"
        )
