"""Which ports the transport reads: a pyserial URL it cannot read is a config
error at load (one line naming the scheme, exit 2), refused at open in the
same words; ``rfc2217://`` options it cannot honour fail at open."""

from __future__ import annotations

import importlib.util

import pytest

from firmware_host import ConfigError, PortClosed
from firmware_host.config import config_from_dict
from firmware_host.config._check import PORT_URL_SCHEMES
from firmware_host.transport.rfc2217 import parse_rfc2217_url
from firmware_host.transport.serial import open_serial, supported_url
from tests.conftest import cli

pytestmark = pytest.mark.timeout(30)


def device(port: str) -> dict[str, object]:
    return {"devices": [{"name": "d", "port": port, "codec": "fh1"}]}


@pytest.mark.parametrize("scheme", sorted(PORT_URL_SCHEMES))
def test_every_scheme_in_the_table_is_one_pyserial_has(scheme):
    """The table names pyserial's URL handlers, nothing else (so a scheme it
    calls readable is one the backend can hand to pyserial or route itself)."""
    assert importlib.util.find_spec(f"serial.urlhandler.protocol_{scheme}") is not None


@pytest.mark.parametrize(
    "port",
    [
        "/dev/ttyUSB0",
        "socket://h:1",
        "rfc2217://h:1",
        "RFC2217://h:1",
        "spy:///dev/ttyUSB0",
        "hwgrep://0403",
        "fake://a",
    ],
)
def test_ports_the_transport_reads_pass(port):
    assert supported_url(port) is None
    config_from_dict(device(port))


@pytest.mark.parametrize(
    ("port", "scheme"), [("loop://", "loop"), ("cp2110://0001:0002", "cp2110"), ("LOOP://", "LOOP")]
)
async def test_a_url_the_transport_cannot_read_is_refused_at_load_and_at_open(port, scheme):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(device(port), source="gw.toml")
    assert str(caught.value).startswith(f"gw.toml: devices[0].port: {scheme}:// is not supported: ")
    with pytest.raises(PortClosed, match=f"^cannot open {port}: {scheme}:// is not supported: "):
        await open_serial(port, 9600)


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text('[[devices]]\nname = "a"\nport = "loop://"\ncodec = "fh1"\n')
    result = cli("run", "-c", str(path), "--control", str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "devices[0].port: loop:// is not supported" in lines[0]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rfc2217://127.0.0.1:2217", ("127.0.0.1", 2217, 3.0)),
        ("rfc2217://[::1]:2217?ign_set_control", ("::1", 2217, 3.0)),
        ("rfc2217://h:1?timeout=0.5&ign_set_control", ("h", 1, 0.5)),
    ],
)
def test_rfc2217_urls_parse(url, expected):
    assert parse_rfc2217_url(url) == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("rfc2217://h", "expected rfc2217://HOST:PORT with a port from 1 to 65535"),
        ("rfc2217://h:1?logging=debug", "option 'logging=debug' is not supported"),
        ("rfc2217://h:1?poll_modem", "option 'poll_modem' is not supported"),
        ("rfc2217://h:1?timeout=0", "expected timeout=SECONDS from 0 to 60, got '0'"),
        ("rfc2217://h:1?timeout=nan", "expected timeout=SECONDS from 0 to 60"),
        ("rfc2217://h:1?timeout=x", "expected timeout=SECONDS from 0 to 60"),
        ("rfc2217://h:1/path", "and nothing else"),
    ],
)
async def test_rfc2217_urls_we_cannot_honour_fail_at_open(url, error):
    with pytest.raises(PortClosed) as opened:
        await open_serial(url, 9600)
    message = str(opened.value)
    assert message.startswith(f"cannot open {url}: ") and error in message
