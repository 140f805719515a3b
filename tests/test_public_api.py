"""The public API is what firmware_host/__init__.py exports: every name listed
in __all__ exists, and every public callable is fully annotated (py.typed is
shipped, so users' type checkers rely on it)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import firmware_host

pytestmark = pytest.mark.timeout(10)


def test_all_names_exist_and_nothing_public_is_unlisted():
    missing = [name for name in firmware_host.__all__ if not hasattr(firmware_host, name)]
    assert missing == []
    exported = {
        name for name, value in vars(firmware_host).items() if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert exported - set(firmware_host.__all__) == set()


#: what firmware_host exported before the layout of issue 16 (0.1.0): every
#: name stays importable from the package, wherever its module moved
EXPORTED_IN_0_1_0 = [
    "AggregatorHandle",
    "Batch",
    "CancellationToken",
    "Codec",
    "CodecFactory",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "DropGuard",
    "ENTRY_POINT_GROUP",
    "FakeOpener",
    "FakePort",
    "Fh1Codec",
    "Frame",
    "FrameProcessor",
    "LinesCodec",
    "NmeaCodec",
    "PeriodicTask",
    "PluginContext",
    "PluginHost",
    "PluginInfo",
    "PluginOptionError",
    "Port",
    "PortClosed",
    "Runtime",
    "Sink",
    "SinkConfig",
    "Summary",
    "VirtualPort",
    "__version__",
    "config_from_dict",
    "discover_plugins",
    "encode_packet",
    "encode_records",
    "load_config",
    "plugins_report",
    "tune_gc",
]


def test_names_exported_before_the_new_layout_still_are():
    assert sorted(set(EXPORTED_IN_0_1_0) - set(firmware_host.__all__)) == []
    for name in EXPORTED_IN_0_1_0:
        exec(f"from firmware_host import {name}", {})


def test_the_export_list_is_the_type_checking_block():
    """One list: the names type checkers see are the names __all__ gives and
    the lazy lookup resolves (each from the module the block names)."""
    import ast

    tree = ast.parse(Path(firmware_host.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If))
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            assert alias.asname == alias.name, "re-export explicitly: from x import A as A"
            seen[alias.name] = node.module
    assert sorted([*seen, "__version__"]) == sorted(firmware_host.__all__)
    for name, module in seen.items():
        assert getattr(firmware_host, name) is getattr(__import__(module, fromlist=[name]), name)


def _unannotated(fn: object) -> list[str]:
    try:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    bad = [
        p.name
        for p in sig.parameters.values()
        if p.name not in ("self", "cls")
        and p.annotation is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if sig.return_annotation is inspect.Signature.empty and getattr(fn, "__name__", "") != "__init__":
        bad.append("return")
    return bad


def test_public_callables_are_annotated():
    problems = {}
    for name in firmware_host.__all__:
        obj = getattr(firmware_host, name)
        if inspect.isfunction(obj):
            if bad := _unannotated(obj):
                problems[name] = bad
        elif inspect.isclass(obj) and obj.__module__.startswith("firmware_host"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                ours = getattr(member, "__module__", "").startswith("firmware_host")
                if inspect.isfunction(member) and ours and (bad := _unannotated(member)):
                    problems[f"{name}.{attr}"] = bad
    assert problems == {}


def test_py_typed_is_shipped():
    assert (Path(firmware_host.__file__).parent / "py.typed").exists()


def test_tune_gc_freezes_start_up_and_raises_the_gen0_threshold():
    import gc

    saved = gc.get_threshold()
    try:
        firmware_host.tune_gc()
        assert gc.get_threshold() == (20_000, 50, 100)
        assert gc.get_freeze_count() > 0  # what start-up allocated is out of every later pass
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
