"""A config fuzzer: random TOML configs, built from the real keys with values of
every kind and size (huge and tiny numbers, inf, nan, wrong types, odd URLs,
unknown keys), never crash the loader or ``config check``.

- load gives a Config, or one ConfigError whose text is one line; never any
  other exception;
- ``config check`` (in process, plugins set up) gives OK or problem lines;
- a few real ``firmware-host config check`` runs exit 0 or 2, no traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host.cli.configcmd import check_config_file
from firmware_host.config._check import READABLE_URL_SCHEMES
from firmware_host.config.schema import SECTION_KEYS, Config, ConfigError, load_config
from tests.conftest import cli

pytestmark = pytest.mark.timeout(60)

# -------------------------------------------------------------------- values

numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 49, 50, 4_000_000, 4_000_001, 2**31, 1 << 20, (1 << 20) + 1, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-9, 5e-324, 0.001, 0.01, 0.5, 60.0, 61.0, 3600.0, 1e308, -0.0]),
)
ports = st.one_of(
    st.sampled_from(
        ["/dev/ttyUSB0", "loop://", "sockt://h:1", "socket://127.0.0.1:1", "rfc2217://h:1", "cp2110://1", "://", ""]
    ),
    st.text(max_size=20),
)
strings = st.one_of(
    st.sampled_from(["fh1", "nmea", "lines", "jsonl", "sqlite", "info", "json", "text", "nope", "a", ""]),
    st.text(max_size=12),
    ports,
)
scalars = st.one_of(numbers, strings, st.booleans())
values = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.sampled_from(["vid", "pid", "x"]), scalars, max_size=2)
)


def table(keys: frozenset[str], extra: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """A table of some of ``keys`` (rarely an unknown one) with values of any kind."""
    names = st.sampled_from(sorted(keys))
    if extra is not None:
        names = st.one_of(names, extra)
    return st.dictionaries(names, values, max_size=len(keys) + 1)


devices = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["a", "b"]), st.text(max_size=5)), "port": ports},
        optional={"codec": strings, "board": st.sampled_from(["nucleo-imu", "nope"])},
    ),
    table(SECTION_KEYS["devices"] - {"name", "port", "match"}),
)
sinks = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"type": st.sampled_from(["jsonl", "sqlite", "nope"])}),
    st.dictionaries(st.sampled_from(["path", "fsync", "timeout", "max_rows", "bogus"]), values, max_size=3),
)
plugins = st.dictionaries(
    st.sampled_from(["stats", "heartbeat", "sqlite", "stdout", "nosuch"]),
    st.dictionaries(st.sampled_from(["interval", "stale_after", "path", "max_rows", "x"]), values, max_size=2),
    max_size=2,
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "buffer": table(SECTION_KEYS["buffer"], st.just("capcity")),
        "shutdown": table(SECTION_KEYS["shutdown"]),
        "control": table(SECTION_KEYS["control"]),
        "serial": table(SECTION_KEYS["serial"]),
        "log": table(SECTION_KEYS["log"]),
        "devices": st.lists(devices, max_size=3),
        "sinks": st.lists(sinks, max_size=2),
        "plugins": plugins,
    },
)

# -------------------------------------------------------------------- TOML text


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_text(config: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, body in config.items():
        if name in ("devices", "sinks"):
            for entry in body:
                lines.append(f"[[{name}]]")
                lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in entry.items())
        elif name == "plugins":
            for plugin, options in body.items():
                lines.append(f"[plugins.{plugin}]")
                lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in options.items())
        else:
            lines.append(f"[{name}]")
            lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items())
    return "\n".join(lines) + "\n"


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(configs)
def test_load_gives_a_config_or_one_config_error_line(
    tmp_path_factory: pytest.TempPathFactory, config: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "gw.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    try:
        loaded = load_config(path, url_schemes=READABLE_URL_SCHEMES, known_sinks={"jsonl", "sqlite"})
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(f"{path}: ") and "\n" not in text and "\r" not in text
    else:
        assert isinstance(loaded, Config)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_config_check_in_process_never_raises(tmp_path_factory: pytest.TempPathFactory, config: dict[str, Any]) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "gw.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    result = check_config_file(str(path), control_path=str(directory / "s"))
    for problem in result.problems:
        assert problem and "\n" not in problem, result.problems
    if not result.problems:
        assert result.config is not None and "OK" in result.summary()


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(configs)
def test_config_check_cli_exits_0_or_2_without_a_traceback(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    result = cli("config", "check", "-c", str(path), "--control", str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("firmware-host: ") for line in lines), result.stderr
    assert (result.returncode == 0) == (lines == [])
