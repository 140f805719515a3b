"""Every bound is checked at load: a value that would fail at run time (a
baudrate the tty refuses, a codec buffer of gigabytes, a timer of 5e-324 s,
a URL scheme nobody reads) is one config error line, exit 2."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from firmware_host import ConfigError
from firmware_host.config import config_from_dict
from firmware_host.config._check import READABLE_URL_SCHEMES
from firmware_host.plugins.host import PluginHost, PluginInfo
from tests.conftest import cli

pytestmark = pytest.mark.timeout(60)


def device(**keys: object) -> dict[str, object]:
    return {"devices": [{"name": "d", "port": "/dev/ttyUSB0", "codec": "fh1", **keys}]}


def lines_device(**keys: object) -> dict[str, object]:
    return {"devices": [{"name": "d", "port": "/dev/ttyUSB0", "codec": "lines", **keys}]}


@pytest.mark.parametrize("baudrate", [50, 9600, 115200, 921600, 4_000_000])
def test_baudrates_in_range_load(baudrate: int) -> None:
    assert config_from_dict(device(baudrate=baudrate)).devices[0].baudrate == baudrate


@pytest.mark.parametrize("baudrate", [0, 49, 4_000_001, 2**31, 2**63 - 1])
def test_baudrates_out_of_range_are_refused(baudrate: int) -> None:
    with pytest.raises(ConfigError, match=r"devices\[0\]\.baudrate: expected an integer from 50 to 4000000"):
        config_from_dict(device(baudrate=baudrate))


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (device(max_payload=(1 << 20) + 1), r"devices\[0\]\.max_payload"),
        (device(max_payload=0), r"devices\[0\]\.max_payload"),
        (lines_device(max_line=(1 << 30)), r"devices\[0\]\.max_line"),
    ],
)
def test_codec_sizes_are_bounded_at_one_mib(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key + r": expected an integer from 1 to 1048576"):
        config_from_dict(data)


def test_codec_sizes_at_the_bound_load() -> None:
    assert config_from_dict(device(max_payload=1 << 20)).devices[0].codec_options == {"max_payload": 1 << 20}
    assert config_from_dict(lines_device(max_line=1 << 20)).devices[0].codec_options == {"max_line": 1 << 20}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"shutdown": {"grace": 1e-9}}, "shutdown.grace"),
        ({"shutdown": {"grace": 0}}, "shutdown.grace"),
        ({"shutdown": {"grace": 86400}}, "shutdown.grace"),
        ({"buffer": {"flush_interval": 5e-324}}, "buffer.flush_interval"),
        ({"buffer": {"flush_interval": 1e9}}, "buffer.flush_interval"),
        ({"buffer": {"spool_interval": 1e-9}}, "buffer.spool_interval"),
        ({"buffer": {"spool_interval": 61}}, "buffer.spool_interval"),
        ({"sinks": [{"type": "jsonl", "path": "x", "timeout": 1e-9}]}, r"sinks\[0\]\.timeout"),
        ({"sinks": [{"type": "jsonl", "path": "x", "timeout": 1e6}]}, r"sinks\[0\]\.timeout"),
        (device(backoff_initial=5e-324), r"devices\[0\]\.backoff_initial"),
        (device(backoff_max=1e12), r"devices\[0\]\.backoff_max"),
        ({"buffer": {"capacity": 10**12}}, "buffer.capacity"),
        ({"buffer": {"batch_size": 10**12}}, "buffer.batch_size"),
    ],
)
def test_durations_and_sizes_have_sane_bounds(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^<config>: {key}: expected "):
        config_from_dict(data)


def test_flush_interval_zero_still_means_on_demand() -> None:
    assert config_from_dict({"buffer": {"flush_interval": 0}}).buffer.flush_interval == 0.0


def test_log_section() -> None:
    config = config_from_dict({"log": {"level": "debug", "format": "json"}})
    assert (config.log.level, config.log.format) == ("debug", "json")
    with pytest.raises(ConfigError, match=r"log\.format: expected one of text, json"):
        config_from_dict({"log": {"format": "xml"}})


@pytest.mark.parametrize("port", ["sockt://h:1", "tcp://h:1", "SOCKETS://x"])
def test_an_unknown_url_scheme_is_refused_where_the_serial_transport_opens(port: str) -> None:
    config_from_dict(device(port=port))  # a library caller's own opener may read it
    with pytest.raises(ConfigError, match=r"devices\[0\]\.port: unknown URL scheme"):
        config_from_dict(device(port=port), url_schemes=READABLE_URL_SCHEMES)


@pytest.mark.parametrize("port", ["/dev/ttyUSB0", "socket://h:1", "RFC2217://h:1", "spy:///dev/ttyUSB0"])
def test_readable_ports_pass_the_strict_check(port: str) -> None:
    config_from_dict(device(port=port), url_schemes=READABLE_URL_SCHEMES)


@pytest.mark.parametrize(
    ("port", "needle"),
    [("sockt://127.0.0.1:1", 'unknown URL scheme "sockt"'), ("loop://", "loop:// is not supported")],
)
def test_run_refuses_a_bad_url_in_one_line(tmp_path: Any, port: str, needle: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f'[[devices]]\nname = "a"\nport = "{port}"\ncodec = "fh1"\n[[sinks]]\ntype = "jsonl"\npath = "f"\n')
    result = cli("run", "-c", str(path), "--duration", "1", "--control", str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert needle in lines[0] and "devices[0].port" in lines[0]


def _setup(plugin: str, options: dict[str, object]) -> None:
    from tests.test_plugins_firstparty import first_party

    async def main() -> None:
        info = PluginInfo.from_object(plugin, first_party(plugin))
        await PluginHost({plugin: options}, {plugin: info}).setup()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("plugin", "options", "key"),
    [
        ("heartbeat", {"interval": 5e-324}, "interval"),
        ("heartbeat", {"interval": 1e9}, "interval"),
        ("heartbeat", {"interval": 1, "stale_after": 1e-9}, "stale_after"),
        ("stats", {"interval": 5e-324}, "interval"),
        ("stats", {"interval": 1e12}, "interval"),
    ],
)
def test_plugin_intervals_are_bounded(plugin: str, options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"plugins\.{plugin}\.{key}: expected a number from 0.01 to"):
        _setup(plugin, options)
