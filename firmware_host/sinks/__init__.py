"""Built-in sinks."""

from firmware_host.errors import SinkOptionError
from firmware_host.sinks.base import Sink, SinkClosed, SinkFactory
from firmware_host.sinks.jsonl import JsonlSink
from firmware_host.sinks.writer import WriterBusy, WriterThread

BUILTIN_SINKS: dict[str, SinkFactory] = {"jsonl": JsonlSink}

__all__ = [
    "BUILTIN_SINKS",
    "JsonlSink",
    "Sink",
    "SinkClosed",
    "SinkFactory",
    "SinkOptionError",
    "WriterBusy",
    "WriterThread",
]
