"""docs/config.md stays in step with the code: every key the loader, a
built-in sink type or a first-party plugin accepts has a row under its
table's heading, and no row names a key the code refuses.

The keys come from the code itself: the loader's key sets
(``schema.SECTION_KEYS``), and for sink types and plugins the option spec they
check with, read back from the error each gives for an unknown option (its
"known: ..." list) — so a key added to a spec and not to the page fails here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from firmware_host.config import schema
from firmware_host.errors import ConfigError
from firmware_host.plugins.host import PluginHost, PluginInfo
from firmware_host.sinks import BUILTIN_SINKS
from tests.test_plugins_firstparty import first_party

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "config.md"
FIRST_PARTY = sorted(p.stem for p in (REPO / "plugins").glob("*.py") if p.stem != "__init__")
PROBE = "no_such_option_xyz"


def page_tables() -> dict[str, dict[str, str]]:
    """heading (backticks dropped) -> {key: default cell} from the tables under it."""
    tables: dict[str, dict[str, str]] = {}
    heading = ""
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().replace("`", "")
            tables.setdefault(heading, {})
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 3 and re.fullmatch(r"`[A-Za-z_][A-Za-z0-9_]*`", cells[0]):
            tables[heading][cells[0].strip("`")] = cells[2]
    return tables


def known_from_error(exc: BaseException) -> set[str]:
    """The ``known: a, b`` list of an unknown-option error."""
    found = re.search(r"known: ([^)]*)\)", str(exc))
    assert found, f"no known-keys list in {exc}"
    text = found.group(1).strip()
    return set() if text == "none" else {k.strip() for k in text.split(",")}


def setup_plugin(name: str, options: dict[str, object]) -> PluginHost:
    host = PluginHost({name: options}, {name: PluginInfo.from_object(name, first_party(name))})
    asyncio.run(host.setup())
    return host


def plugin_keys(name: str) -> set[str]:
    with pytest.raises(ConfigError) as caught:
        setup_plugin(name, {PROBE: 1})
    return known_from_error(caught.value)


def sink_type_keys(factory: Any) -> set[str]:
    with pytest.raises((ConfigError, ValueError)) as caught:
        factory(**{PROBE: 1})
    return known_from_error(caught.value)


def sink_types() -> dict[str, Any]:
    """Built-in sink types and those the first-party plugins add."""
    found: dict[str, Any] = dict(BUILTIN_SINKS)
    for name in FIRST_PARTY:
        found.update(setup_plugin(name, {}).sink_types)
    return found


def heading_of(section: str) -> str:
    return {
        "devices": "[[devices]]",
        "devices.match": "[[devices]] match",
        "sinks": "[[sinks]]",
        "plugins": "[plugins.NAME]",
    }.get(section, f"[{section}]")


@pytest.mark.parametrize("section", sorted(set(schema.SECTION_KEYS) - {""}))
def test_every_loader_key_is_on_the_page(section: str) -> None:
    assert set(page_tables().get(heading_of(section), {})) == set(schema.SECTION_KEYS[section])


def test_every_top_level_table_has_a_heading() -> None:
    headings = set(page_tables())
    assert {heading_of(key) for key in schema.TOP_KEYS} <= headings


def test_every_sink_type_and_its_options_are_on_the_page() -> None:
    tables = page_tables()
    types = sink_types()
    assert {"jsonl", "sqlite"} <= set(types)
    for name, factory in types.items():
        heading = f'[[sinks]] type = "{name}"'
        assert heading in tables, f"docs/config.md has no section {heading}"
        assert set(tables[heading]) == sink_type_keys(factory), heading


@pytest.mark.parametrize("plugin", FIRST_PARTY)
def test_every_first_party_plugin_and_its_options_are_on_the_page(plugin: str) -> None:
    tables = page_tables()
    heading = f"[plugins.{plugin}]"
    assert heading in tables, f"docs/config.md has no section {heading}"
    assert set(tables[heading]) == plugin_keys(plugin)


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("buffer", schema.BufferConfig),
        ("shutdown", schema.ShutdownConfig),
        ("serial", schema.SerialConfig),
        ("control", schema.ControlConfig),
        ("log", schema.LogConfig),
    ],
)
def test_the_defaults_on_the_page_are_the_codes(section: str, cls: type) -> None:
    rows = page_tables()[heading_of(section)]
    for f in dataclasses.fields(cls):
        cell = rows[f.name].strip("`")
        try:
            shown = tomllib.loads(f"v = {cell}")["v"]
        except tomllib.TOMLDecodeError:
            shown = None  # "none": the key has no value by default
        assert shown == f.default, f"[{section}] {f.name}: page says {cell}, code says {f.default!r}"


def test_the_probe_sees_a_new_key() -> None:
    """The probe reads the spec, not a list: a sink with one more option shows it."""
    from firmware_host.sinks.base import Sink, take_options

    class Wider(Sink):
        def __init__(self, **options: Any) -> None:
            take_options("wider", options, {"path": (str, ...), "extra": (int, 0)})

        async def write(self, frames: Any) -> None:
            pass

    assert sink_type_keys(Wider) == {"path", "extra"}
