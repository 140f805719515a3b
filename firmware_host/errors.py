"""Every public exception, in one place.

Each says who raises it and what the CLI makes of it: a ``ConfigError`` (and
its kinds) is a user's mistake, one line and exit status 2; a
``RuntimeFailure`` is exit status 1; ``NoRuntime`` is exit status 3.
"""

from __future__ import annotations

import re

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NO_RUNTIME",
    "EXIT_USAGE",
    "AggregatorStopped",
    "BoardError",
    "CodecOptionError",
    "ConfigError",
    "ControlError",
    "DeviceExists",
    "NoRuntime",
    "NotConnected",
    "PluginOptionError",
    "PortClosed",
    "RequestTimeout",
    "RequestUnsupported",
    "RuntimeFailure",
    "ShuttingDown",
    "SinkOptionError",
    "SpoolBusy",
    "SpoolError",
    "UsageError",
]

#: the design's exit statuses (0 is success)
EXIT_FAILURE, EXIT_USAGE, EXIT_NO_RUNTIME = 1, 2, 3

_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")


def one_line(text: object) -> str:
    """``text`` on one line: the CLI prints a message as the whole diagnosis."""
    return " ".join(str(text).split()) or "error"


# -- a user's mistake: exit status 2 --------------------------------------------------


class ConfigError(Exception):
    """A configuration problem, reported as one line naming file and key.

    ``ConfigError("text")`` is also valid (then ``str()`` is just the text), so
    other layers can raise it for config-shaped problems of their own.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.message = message
        self.source = source
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.key, self.message) if p]
        # One line, always: the CLI prints str(err) as the whole diagnosis.
        return _LINE_BREAKS.sub(" ", ": ".join(parts))


class BoardError(ConfigError):
    """An invalid board file; a ConfigError, so the CLI reports it the same way (exit 2)."""


class PluginOptionError(ConfigError):
    """A plugin option is wrong: a config error (exit 2), naming ``plugins.NAME.key``."""


class CodecOptionError(ValueError):
    """A codec option is unknown or out of range."""


class SinkOptionError(ValueError):
    """A sink's options are wrong; the message names the option."""


class UsageError(Exception):
    """A user's mistake on the command line: one line, exit status 2."""


# -- the transport ---------------------------------------------------------------------


class PortClosed(ConnectionError):
    """The port is gone (unplugged, read error, or closed by us)."""


# -- the runtime: exit status 1 ----------------------------------------------------------


class RuntimeFailure(Exception):
    """A runtime failure (exit status 1), e.g. a sink that cannot open."""


class DeviceExists(ValueError):
    """``add_device`` with the name of a device that is still running."""


class ShuttingDown(RuntimeFailure):
    """``add_device`` after the shutdown began."""


class NotConnected(RuntimeFailure):
    """A downlink write (``send``, ``request``) to a device whose port is not open."""


class RequestTimeout(RuntimeFailure):
    """``Runtime.request`` got no ack within its timeout and retries (exit status 1)."""


class RequestUnsupported(ValueError):
    """``Runtime.request`` to a device whose codec has no typed frames (only fh1 has acks)."""


class AggregatorStopped(RuntimeError):
    """A request reached the aggregator after it stopped (a shutdown-order bug)."""


class SpoolBusy(Exception):
    """Another process (a running runtime) holds the spool."""


class SpoolError(Exception):
    """The spool file cannot be used (not SQLite, wrong schema, unreadable)."""


# -- the control socket's client -----------------------------------------------------------


class ControlError(Exception):
    """An error reply (or a broken exchange); ``exit_code`` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(one_line(message))
        self.exit_code = exit_code


class NoRuntime(ControlError):
    """Nothing listens on the control socket (exit status 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NO_RUNTIME)
