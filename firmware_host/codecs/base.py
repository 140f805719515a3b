"""The codec interface: pure, incremental, bounded.

A codec instance belongs to one device. ``feed`` takes whatever bytes one read
returned and gives back the frames completed by them; partial input is kept
(bounded) for the next call. Nothing here does I/O, so codecs are tested
without any port.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar

# re-exported: the codec modules raise it for an option out of range
from firmware_host.errors import CodecOptionError as CodecOptionError
from firmware_host.frames import Frame


class Codec(ABC):
    """Base class for every codec (first-party and plugin)."""

    #: registry name, e.g. ``"fh1"``
    name: ClassVar[str] = ""
    #: the options the class takes, ``{name: type}``, checked by ``make_codec``
    #: (None: not declared, passed through unchecked)
    options: ClassVar[Mapping[str, type] | None] = None
    #: True when frames carry ``text`` rather than ``payload``
    text: ClassVar[bool] = False

    def __init__(self, device: str = "") -> None:
        self.device = device
        #: inputs that failed to decode (bad CRC, bad COBS, oversize, malformed)
        self.rejected = 0
        #: sequence discontinuities seen (fh1 only; host-seq codecs never gap)
        self.gaps = 0

    @abstractmethod
    def feed(self, data: bytes, ts: float) -> list[Frame]:
        """Decode ``data``; return the frames it completed, all stamped ``ts``."""

    @abstractmethod
    def reset(self) -> None:
        """Forget partial input (the port was closed mid-frame).

        A non-empty partial frame counts one ``rejected``: it was input that
        never decoded. Sequence state survives, so a gap across a reconnect is
        still counted.
        """

    @abstractmethod
    def encode(self, frame_type: int | None, seq: int, body: bytes | str) -> bytes:
        """Encode one frame for the wire (emulators, downlink, tests)."""


class DelimitedCodec(Codec):
    """Shared by codecs whose input splits on a delimiter byte (0x00, ``\\n``):
    a bounded pending tail, and after an oversize run, skipping to the next
    delimiter with the run counted once."""

    def __init__(self, device: str, pending_limit: int) -> None:
        super().__init__(device)
        #: the pending partial frame never exceeds this many bytes
        self.pending_limit = pending_limit
        self._pending = b""
        # True while skipping the rest of an oversize run up to the next delimiter.
        self._skipping = False

    def _start(self, data: bytes, delimiter: bytes) -> int:
        """Where decoding of ``data`` starts: 0, or just past the delimiter that
        ends an oversize run being skipped; -1 when all of ``data`` is skipped."""
        if not self._skipping:
            return 0
        end = data.find(delimiter)
        if end < 0:
            return -1
        self._skipping = False
        return end + 1

    def _hold(self, data: bytes, start: int) -> None:
        """Keep ``data[start:]`` as the pending tail, or drop an oversize run."""
        if len(self._pending) + len(data) - start > self.pending_limit:
            # Count the run once; the delimiter that ends it resumes decoding.
            self.rejected += 1
            self._pending = b""
            self._skipping = True
        elif start:
            self._pending += data[start:]
        else:
            self._pending += data


#: ``factory(device, **options) -> Codec``
CodecFactory = Callable[..., Codec]
