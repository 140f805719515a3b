"""Built-in sinks."""

from firmware_host.errors import SinkOptionError
from firmware_host.sinks.base import Sink, SinkFactory
from firmware_host.sinks.jsonl import JsonlSink

BUILTIN_SINKS: dict[str, SinkFactory] = {"jsonl": JsonlSink}

__all__ = ["BUILTIN_SINKS", "JsonlSink", "Sink", "SinkFactory", "SinkOptionError"]
