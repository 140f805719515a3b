"""What a plugin's ``setup(ctx)`` gets: the ``PluginContext``.

It registers tasks, processors, sinks and codecs into a ``Registrations``
record the host reads, and reaches the running runtime only through the
small ``ContextHost`` seam (the host implements it), so a plugin never sees
the host's internals.
"""

from __future__ import annotations

import copy
import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from firmware_host.cancel import CancellationToken
from firmware_host.codecs import BUILTIN_CODECS, CodecFactory
from firmware_host.config import DeviceConfig
from firmware_host.config._check import check_options
from firmware_host.errors import PluginOptionError
from firmware_host.frames import Frame
from firmware_host.plugins.scheduler import MissedTick, PeriodicTask
from firmware_host.sinks import BUILTIN_SINKS, Sink, SinkFactory

if TYPE_CHECKING:
    from firmware_host.runtime import Runtime

__all__ = ["ContextHost", "FrameProcessor", "PluginContext", "Registrations"]

#: ``fn(frame) -> Frame | None``: None drops the frame, a Frame replaces it
FrameProcessor = Callable[[Frame], "Frame | None"]


class ContextHost(Protocol):
    """What a context needs from whoever hosts the plugin (``PluginHost``)."""

    @property
    def source(self) -> str:
        """The config file the ``[plugins.NAME]`` table came from (for errors)."""
        ...

    @property
    def token(self) -> CancellationToken:
        """Cancelled when the runtime starts shutting down."""
        ...

    def runtime(self, what: str) -> Runtime:
        """The running runtime; RuntimeError naming ``ctx.what()`` before it runs."""
        ...

    def next_seq(self, device: str) -> int:
        """The next downlink seq for ``device`` (shared by all plugins)."""
        ...

    def task_added(self, ctx: PluginContext, task: PeriodicTask) -> None:
        """``ctx.every`` made ``task``: start it now if the runtime runs."""
        ...


@dataclass
class Registrations:
    """What one plugin registered in ``setup``."""

    tasks: list[PeriodicTask] = field(default_factory=list)
    frame_fns: list[FrameProcessor] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    sink_types: dict[str, SinkFactory] = field(default_factory=dict)
    codecs: dict[str, CodecFactory] = field(default_factory=dict)


class PluginContext:
    """What ``setup(ctx)`` gets: register tasks, processors, sinks and codecs;
    send downlink frames; read status. One per plugin."""

    def __init__(self, host: ContextHost, name: str, options: Mapping[str, object]) -> None:
        self._host = host
        #: the plugin's name (its entry point name and ``[plugins.NAME]`` key)
        self.name: str = name
        #: the ``[plugins.NAME]`` table, read-only
        self.options: Mapping[str, object] = types.MappingProxyType(copy.deepcopy(dict(options)))
        #: logger ``firmware_host.plugins.NAME``
        self.log: logging.Logger = logging.getLogger(f"firmware_host.plugins.{name}")
        #: cancelled when the runtime starts shutting down (child of ``rt.tasks_token``)
        self.token: CancellationToken = host.token.child_token()
        #: anything JSON-able the plugin wants to show under its entry in ``status``
        self.info: dict[str, Any] = {}
        #: what ``setup`` registered (the host reads it; plugins use the methods)
        self.registered = Registrations()
        self._sealed = False

    # -- registration (in setup) ------------------------------------------------

    def every(
        self,
        interval: float,
        fn: Callable[[], Awaitable[Any]],
        *,
        missed: MissedTick = "skip",
        timeout: float | None = None,
        name: str | None = None,
    ) -> PeriodicTask:
        """Run ``await fn()`` every ``interval`` seconds (see docs/plugins.md for
        ``missed`` and the supervision rules). Returns the task (its ``stats``)."""
        if inspect.isfunction(fn) and not inspect.iscoroutinefunction(fn):
            raise TypeError(f"plugin {self.name}: every() needs an async function, got {fn.__name__}()")
        base = name or getattr(fn, "__name__", None) or "task"
        taken = {t.name for t in self.registered.tasks}
        task_name, n = base, 1
        while task_name in taken:
            n += 1
            task_name = f"{base}#{n}"
        task = PeriodicTask(self.name, task_name, interval, fn, missed=missed, timeout=timeout, log=self.log)
        self.registered.tasks.append(task)
        self._host.task_added(self, task)
        return task

    def on_frame(self, fn: FrameProcessor) -> FrameProcessor:
        """Register a synchronous frame processor (usable as a decorator).

        ``fn(frame)`` returns None to drop the frame or a Frame (the same or a
        new one, for the same device) to keep it. It runs in the device's
        reader for every decoded frame, so keep it fast. An exception is
        counted against the plugin and the frame is kept unchanged.
        """
        self._check_open("on_frame")
        if not callable(fn):
            raise TypeError(f"plugin {self.name}: on_frame() needs a callable")
        self.registered.frame_fns.append(fn)
        return fn

    def add_sink(self, sink: Sink) -> None:
        """Add a sink instance: it sees every flushed frame, like a ``[[sinks]]`` one."""
        self._check_open("add_sink")
        if not isinstance(sink, Sink):
            raise TypeError(f"plugin {self.name}: add_sink() needs a firmware_host.Sink, got {type(sink).__name__}")
        self.registered.sinks.append(sink)

    def add_sink_type(self, name: str, factory: SinkFactory) -> None:
        """Make ``[[sinks]] type = NAME`` available (``factory(**options) -> Sink``)."""
        self._check_open("add_sink_type")
        if name in BUILTIN_SINKS or name in self.registered.sink_types:
            raise ValueError(f"plugin {self.name}: sink type {name!r} already exists")
        self.registered.sink_types[name] = factory

    def add_codec(self, name: str, factory: CodecFactory) -> None:
        """Make codec NAME available to devices (``factory(device, **options) -> Codec``)."""
        self._check_open("add_codec")
        if name in BUILTIN_CODECS or name in self.registered.codecs:
            raise ValueError(f"plugin {self.name}: codec {name!r} already exists")
        self.registered.codecs[name] = factory

    def seal(self) -> None:
        """``setup`` has returned: registering more is a mistake from now on."""
        self._sealed = True

    def _check_open(self, what: str) -> None:
        if self._sealed:
            raise RuntimeError(f"plugin {self.name}: {what}() only works inside setup()")

    # -- options ------------------------------------------------------------------

    def option_error(self, key: str, message: str) -> PluginOptionError:
        """A config error naming ``plugins.NAME.key`` (raise it from setup)."""
        return PluginOptionError(message, source=self._host.source, key=f"plugins.{self.name}.{key}")

    def take_options(self, spec: Mapping[str, tuple[type, Any]]) -> dict[str, Any]:
        """Check ``ctx.options`` against ``{key: (type, default or ...)}``
        (``...`` = required); unknown keys and wrong types raise PluginOptionError.
        An int is accepted where a float is expected."""
        return check_options(self.options, spec, self.option_error)

    # -- while running ------------------------------------------------------------

    def send(self, device: str, frame_type: int | None, payload: bytes | str, *, seq: int | None = None) -> bool:
        """Encode with the device's codec and write a downlink frame.

        ``seq`` defaults to a per-device downlink counter (shared by all
        plugins, wrapping at 2**32). Returns False when the device is not
        connected; raises KeyError for an unknown device.
        """
        rt = self._host.runtime("send")
        if seq is None:
            seq = self._host.next_seq(device)
        return rt.send(device, frame_type, payload, seq)

    async def status(self) -> dict[str, Any]:
        """A fresh, deep-copied snapshot of ``status --json`` (safe to modify).
        After the runtime has stopped it returns the final status."""
        rt = self._host.runtime("status")
        if rt.summary is None:
            got = await rt.token.run_until_cancelled(rt.status())
            if got is not None:
                return copy.deepcopy(got)
        return copy.deepcopy(rt.summary.status) if rt.summary is not None else {}

    def devices(self) -> dict[str, DeviceConfig]:
        """The runtime's current devices (name → DeviceConfig, codec included)."""
        rt = self._host.runtime("devices")
        return {name: e.config for name, e in rt.devices.items() if not e.removed}
