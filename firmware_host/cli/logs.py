"""How ``firmware-host run`` logs: the level and format chosen by ``[log]``,
``--log-level``, ``--log-format`` and ``-v`` / ``-q``, on standard error.

- ``text``: ``HH:MM:SS LEVEL logger: message``; a line break inside a message
  is shown as ``\\n`` so one event stays one line (a traceback, for our own
  bugs, follows on its own lines).
- ``json``: one JSON object per line, ``ts`` (ISO 8601, UTC), ``level``,
  ``logger``, ``message`` and, when there is one, ``exc`` (the traceback
  text): what journald, Fluent Bit or Vector ingest without a parser.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from firmware_host.config._check import read_toml
from firmware_host.config.schema import LOG_FORMATS, LOG_LEVELS, ConfigError, LogConfig, config_from_dict

__all__ = ["JsonFormatter", "TextFormatter", "choose_level", "configured_log", "run_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def choose_level(level: str, verbose: int = 0, quiet: int = 0) -> int:
    """``level`` (one of LOG_LEVELS), then one step more verbose per ``-v`` and
    one step quieter per ``-q``, kept within debug..error."""
    index = LOG_LEVELS.index(level) - verbose + quiet
    return _LEVELS[LOG_LEVELS[max(0, min(len(LOG_LEVELS) - 1, index))]]


def configured_log(config_path: str | None) -> LogConfig:
    """The ``[log]`` table of the config, read before anything else logs.

    A config that cannot be read, or a bad ``[log]`` table, gives the defaults
    here: loading the whole config moments later reports the mistake (exit 2).
    """
    if not config_path:
        return LogConfig()
    try:
        source, data = read_toml(config_path)
        table = data.get("log", {})
        return config_from_dict({"log": table}, source=source).log
    except ConfigError:
        return LogConfig()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        return text.replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class _RunHandler(logging.StreamHandler[TextIO]):
    """The handler ``run`` installs (and removes again), told apart from others."""


@contextmanager
def run_logging(level: int, fmt: str, stream: TextIO | None = None) -> Iterator[None]:
    """Log at ``level`` in format ``fmt`` (text | json) to ``stream`` (stderr)
    while the block runs; the root logger is restored after it, so a program
    (or a test) that calls ``run_main`` in process keeps its own logging."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    root = logging.getLogger()
    handler = _RunHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
