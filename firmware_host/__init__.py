"""firmware-host: a host-side asyncio runtime for fleets of serial devices.

This file is the public API; everything else may change between releases.

The import block below is the one list of public names. Type checkers read it
as explicit re-exports; at run time it is not executed (``TYPE_CHECKING``),
and the first access to a name reads the block to find its module (PEP 562).
Why lazily: ``firmware-host --help`` and the control-plane commands must start
fast on a Raspberry Pi, and importing the runtime (asyncio, pyserial, the
plugins) costs more than the CLI itself.
"""

import typing as _typing

if _typing.TYPE_CHECKING:
    from firmware_host.aggregator import AggregatorHandle as AggregatorHandle
    from firmware_host.aggregator import Batch as Batch
    from firmware_host.cancel import CancellationToken as CancellationToken
    from firmware_host.cancel import DropGuard as DropGuard
    from firmware_host.codecs import Codec as Codec
    from firmware_host.codecs import CodecFactory as CodecFactory
    from firmware_host.codecs import Fh1Codec as Fh1Codec
    from firmware_host.codecs import LinesCodec as LinesCodec
    from firmware_host.codecs import NmeaCodec as NmeaCodec
    from firmware_host.codecs import encode_packet as encode_packet
    from firmware_host.config import Config as Config
    from firmware_host.config import DeviceConfig as DeviceConfig
    from firmware_host.config import SinkConfig as SinkConfig
    from firmware_host.config import config_from_dict as config_from_dict
    from firmware_host.config import load_config as load_config
    from firmware_host.emulation.virtualport import VirtualPort as VirtualPort
    from firmware_host.errors import ConfigError as ConfigError
    from firmware_host.errors import NotConnected as NotConnected
    from firmware_host.errors import PluginOptionError as PluginOptionError
    from firmware_host.errors import PortClosed as PortClosed
    from firmware_host.errors import RequestTimeout as RequestTimeout
    from firmware_host.errors import RequestUnsupported as RequestUnsupported
    from firmware_host.frames import Frame as Frame
    from firmware_host.frames import Values as Values
    from firmware_host.gctune import tune_gc as tune_gc
    from firmware_host.plugins import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
    from firmware_host.plugins import FrameProcessor as FrameProcessor
    from firmware_host.plugins import PluginContext as PluginContext
    from firmware_host.plugins import PluginHost as PluginHost
    from firmware_host.plugins import PluginInfo as PluginInfo
    from firmware_host.plugins import discover_plugins as discover_plugins
    from firmware_host.plugins import plugins_report as plugins_report
    from firmware_host.plugins.scheduler import PeriodicTask as PeriodicTask
    from firmware_host.runtime import Runtime as Runtime
    from firmware_host.runtime import Summary as Summary
    from firmware_host.sinks import Sink as Sink
    from firmware_host.sinks import SinkClosed as SinkClosed
    from firmware_host.sinks import WriterThread as WriterThread
    from firmware_host.sinks.jsonl import encode_records as encode_records
    from firmware_host.tap import Subscription as Subscription
    from firmware_host.transport.base import Port as Port
    from firmware_host.transport.fake import FakeOpener as FakeOpener
    from firmware_host.transport.fake import FakePort as FakePort
    from firmware_host.values.decoder import PayloadDecoder as PayloadDecoder
    from firmware_host.values.encode import fields_json as fields_json
    from firmware_host.values.encode import fields_text as fields_text
    from firmware_host.values.layout import CsvLayout as CsvLayout
    from firmware_host.values.layout import FieldSpec as FieldSpec
    from firmware_host.values.layout import FrameLayout as FrameLayout
    from firmware_host.values.layout import PayloadSchema as PayloadSchema

__version__ = "0.1.0"

_exports: dict[str, str] = {}


def _read_exports() -> dict[str, str]:
    """Name -> module, read from the ``TYPE_CHECKING`` block above."""
    if not _exports:
        import ast

        with open(__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        block = next(node for node in tree.body if isinstance(node, ast.If))
        for node in block.body:
            assert isinstance(node, ast.ImportFrom) and node.module is not None
            for alias in node.names:
                _exports[alias.asname or alias.name] = node.module
    return _exports


def __getattr__(name: str) -> _typing.Any:
    if name == "__all__":
        return [*sorted(_read_exports()), "__version__"]
    module = _read_exports().get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_host' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return [*sorted(_read_exports()), "__version__"]
