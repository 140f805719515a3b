"""Built-in sinks."""

from .base import Sink, SinkFactory, SinkOptionError
from .jsonl import JsonlSink

BUILTIN_SINKS: dict[str, SinkFactory] = {"jsonl": JsonlSink}

__all__ = ["BUILTIN_SINKS", "JsonlSink", "Sink", "SinkFactory", "SinkOptionError"]
