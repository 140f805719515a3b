"""firmware-host: a host-side asyncio runtime for fleets of serial devices.

This file is the public API; everything else may change between releases.

Names resolve on first use (PEP 562): ``firmware-host --help`` and the
control-plane commands must start fast on a Raspberry Pi, and importing the
runtime (asyncio, pyserial, the plugins) costs more than the CLI itself.
Type checkers read the explicit imports below.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from .aggregator import AggregatorHandle as AggregatorHandle
    from .aggregator import Batch as Batch
    from .cancel import CancellationToken as CancellationToken
    from .cancel import DropGuard as DropGuard
    from .codecs import Codec as Codec
    from .codecs import CodecFactory as CodecFactory
    from .codecs import Fh1Codec as Fh1Codec
    from .codecs import LinesCodec as LinesCodec
    from .codecs import NmeaCodec as NmeaCodec
    from .codecs import encode_packet as encode_packet
    from .config import Config as Config
    from .config import ConfigError as ConfigError
    from .config import DeviceConfig as DeviceConfig
    from .config import SinkConfig as SinkConfig
    from .config import config_from_dict as config_from_dict
    from .config import load_config as load_config
    from .frames import Frame as Frame
    from .gctune import tune_gc as tune_gc
    from .plugins import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
    from .plugins import FrameProcessor as FrameProcessor
    from .plugins import PluginContext as PluginContext
    from .plugins import PluginHost as PluginHost
    from .plugins import PluginInfo as PluginInfo
    from .plugins import PluginOptionError as PluginOptionError
    from .plugins import discover_plugins as discover_plugins
    from .plugins import plugins_report as plugins_report
    from .runtime import Runtime as Runtime
    from .runtime import Summary as Summary
    from .scheduler import PeriodicTask as PeriodicTask
    from .sinks import Sink as Sink
    from .sinks.jsonl import encode_records as encode_records
    from .transport import FakeOpener as FakeOpener
    from .transport import FakePort as FakePort
    from .transport import Port as Port
    from .transport import PortClosed as PortClosed
    from .virtualport import VirtualPort as VirtualPort

_EXPORTS: dict[str, str] = {
    "AggregatorHandle": ".aggregator",
    "Batch": ".aggregator",
    "CancellationToken": ".cancel",
    "DropGuard": ".cancel",
    "Codec": ".codecs",
    "CodecFactory": ".codecs",
    "Fh1Codec": ".codecs",
    "LinesCodec": ".codecs",
    "NmeaCodec": ".codecs",
    "encode_packet": ".codecs",
    "Config": ".config",
    "ConfigError": ".config",
    "DeviceConfig": ".config",
    "SinkConfig": ".config",
    "config_from_dict": ".config",
    "load_config": ".config",
    "Frame": ".frames",
    "tune_gc": ".gctune",
    "ENTRY_POINT_GROUP": ".plugins",
    "FrameProcessor": ".plugins",
    "PluginContext": ".plugins",
    "PluginHost": ".plugins",
    "PluginInfo": ".plugins",
    "PluginOptionError": ".plugins",
    "discover_plugins": ".plugins",
    "plugins_report": ".plugins",
    "Runtime": ".runtime",
    "Summary": ".runtime",
    "PeriodicTask": ".scheduler",
    "Sink": ".sinks",
    "encode_records": ".sinks.jsonl",
    "FakeOpener": ".transport",
    "FakePort": ".transport",
    "Port": ".transport",
    "PortClosed": ".transport",
    "VirtualPort": ".virtualport",
}

__version__ = "0.1.0"

__all__ = [
    "AggregatorHandle", "Batch", "CancellationToken", "Codec", "CodecFactory", "Config", "ConfigError",
    "DeviceConfig", "DropGuard", "FakeOpener", "FakePort", "Fh1Codec", "Frame", "LinesCodec", "NmeaCodec",
    "Port", "PortClosed", "Runtime", "Sink", "SinkConfig", "Summary", "VirtualPort", "__version__",
    "config_from_dict", "encode_packet", "load_config", "tune_gc",
    # plugins
    "ENTRY_POINT_GROUP", "FrameProcessor", "PeriodicTask", "PluginContext", "PluginHost", "PluginInfo",
    "PluginOptionError", "discover_plugins", "encode_records", "plugins_report",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_host' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
