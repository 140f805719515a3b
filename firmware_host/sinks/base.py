"""The sink interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from firmware_host.config._check import OptionSpec, check_options
from firmware_host.config.schema import DEFAULT_SINK_TIMEOUT
from firmware_host.errors import SinkOptionError
from firmware_host.frames import Frame


class Sink(ABC):
    """Where flushed frames go.

    ``write`` returns once the sink has accepted every frame of the batch, or
    raises; the flusher then retries the surviving frames with backoff.
    Delivery is at least once, so a sink must tolerate seeing a frame again
    (it is identified by ``(device, seq, ts)``). Do blocking work in an
    executor: a sink runs on the event loop.

    Each ``write`` has a deadline, ``timeout`` seconds (``[[sinks]] timeout``):
    a write still running then is cancelled and counts as a failure. A sink
    that hands the write to a thread must refuse the next write while that
    thread still runs (see ``firmware_host.sinks.writer``).
    """

    name: str = "sink"
    #: seconds one ``write`` (and ``open``, ``close``) may take
    timeout: float = DEFAULT_SINK_TIMEOUT
    #: the most frames one ``write`` takes (``[[sinks]] batch_size``); None:
    #: ``[buffer] batch_size``. A sink whose every write waits for a round trip
    #: (a broker's acknowledgements) prefers more per write.
    batch_size: int | None = None

    async def open(self) -> None:  # noqa: B027  (optional hook: most sinks open lazily)
        """Acquire resources; called once before the first write."""

    @abstractmethod
    async def write(self, frames: Sequence[Frame]) -> None:
        """Accept ``frames`` (in buffer order) or raise."""

    async def reopen(self) -> None:  # noqa: B027  (optional hook)
        """Reopen files by their path (SIGHUP, after a log rotation)."""

    async def close(self) -> None:  # noqa: B027  (optional hook)
        """Release resources; called once after the final drain."""


class SinkClosed(Exception):
    """Raised by ``write`` when the sink is gone for good (its reader left:
    EPIPE). The flusher stops writing to it, and never retries it; when every
    sink has closed, the runtime stops like a Unix filter whose reader left."""


#: ``factory(**options) -> Sink``
SinkFactory = Callable[..., Sink]


def take_options(sink: str, options: dict[str, Any], spec: OptionSpec) -> dict[str, Any]:
    """Validate a sink's ``options`` against ``spec`` (name → (type, default or ...))."""
    return check_options(
        options, spec, lambda key, message: SinkOptionError(f"sink {sink!r}: option {key!r}: {message}")
    )
