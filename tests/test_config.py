"""Configuration: TOML -> typed dataclasses, and one-line errors for every mistake."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest

from firmware_host.config.boards import BOARDS_ENV_VAR, Board, EmulatorProfile, load_boards
from firmware_host.config.schema import (
    MAX_CONFIG_BYTES,
    BufferConfig,
    Config,
    ConfigError,
    ControlConfig,
    DeviceConfig,
    ShutdownConfig,
    SinkConfig,
    config_from_dict,
    default_control_socket,
    load_config,
)

pytestmark = pytest.mark.timeout(30)

# The example from design.md, "Configuration (TOML)", verbatim.
DESIGN_EXAMPLE = """\
[buffer]
capacity = 10000        # frames, > 0
max_bytes = 0           # 0: no byte bound
flush_interval = 1.0    # seconds; 0: flush only on demand and at shutdown
batch_size = 1000

[shutdown]
grace = 5.0             # seconds for the final drain

[control]
socket = "/run/user/1000/firmware-host.sock"   # default: $XDG_RUNTIME_DIR or the temp dir

[[devices]]
name = "imu0"           # unique, letters digits . _ -
port = "/dev/ttyACM0"   # path or pyserial URL
board = "nucleo-imu"    # optional: a board definition supplies codec, baudrate, …
codec = "fh1"           # fh1 | nmea | lines | a plugin's codec; required without a board
baudrate = 921600       # optional, overrides the board

[[sinks]]
type = "jsonl"
path = "frames.jsonl"

[plugins.stats]         # enables the plugin "stats" with these options
interval = 10
"""


@pytest.fixture(autouse=True)
def _no_user_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own board directories must not change test outcomes.
    monkeypatch.delenv(BOARDS_ENV_VAR, raising=False)


def write(tmp_path: Path, text: str, name: str = "bench.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: "), message
    assert "Traceback" not in message
    return message


def test_design_example_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE)
    config = load_config(path)
    nucleo = load_boards()["nucleo-imu"]
    assert config == Config(
        buffer=BufferConfig(capacity=10000, max_bytes=0, flush_interval=1.0, batch_size=1000),
        shutdown=ShutdownConfig(grace=5.0),
        control=ControlConfig(socket="/run/user/1000/firmware-host.sock"),
        devices=[
            DeviceConfig(
                name="imu0",
                port="/dev/ttyACM0",
                match=None,
                board="nucleo-imu",
                codec="fh1",
                codec_options=dict(nucleo.codec_options),
                baudrate=921600,
                backoff_initial=0.1,
                backoff_max=5.0,
                schema=nucleo.schema,
            )
        ],
        sinks=[SinkConfig(type="jsonl", options={"path": "frames.jsonl"})],
        plugins={"stats": {"interval": 10}},
        source=str(path),
    )
    assert isinstance(config.buffer.flush_interval, float)


def test_empty_config_is_valid_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.buffer == BufferConfig()
    assert config.shutdown.grace == 5.0
    assert config.control.socket is None
    assert config.serial.read_coalesce == 0.02
    assert config.devices == [] and config.sinks == [] and config.plugins == {}


def test_dataclasses_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BufferConfig().capacity = 5  # type: ignore[misc]


def test_ints_accepted_where_floats_expected() -> None:
    config = config_from_dict({"buffer": {"flush_interval": 2}, "shutdown": {"grace": 3}})
    assert config.buffer.flush_interval == 2.0 and isinstance(config.buffer.flush_interval, float)
    assert config.shutdown.grace == 3.0 and isinstance(config.shutdown.grace, float)


def test_match_with_hex_strings_and_serial() -> None:
    config = config_from_dict(
        {"devices": [{"name": "gps", "match": {"vid": "0x1546", "pid": 0x01A8, "serial": "A1"}, "codec": "nmea"}]}
    )
    device = config.devices[0]
    assert device.port is None
    assert device.match == {"vid": 0x1546, "pid": 0x01A8, "serial": "A1"}
    assert device.baudrate == 115200 and device.codec_options == {}


def test_device_defaults_without_board() -> None:
    device = config_from_dict(
        {"devices": [{"name": "a.b_c-1", "port": "socket://127.0.0.1:7000", "codec": "lines"}]}
    ).devices[0]
    assert (device.board, device.codec, device.baudrate) == (None, "lines", 115200)
    assert (device.backoff_initial, device.backoff_max) == (0.1, 5.0)


def test_board_supplies_codec_baudrate_and_options() -> None:
    device = config_from_dict({"devices": [{"name": "imu", "port": "/dev/ttyACM0", "board": "nucleo-imu"}]}).devices[0]
    nucleo = load_boards()["nucleo-imu"]
    assert device.codec == nucleo.codec == "fh1"
    assert device.baudrate == nucleo.baudrate == 921600
    assert device.codec_options == nucleo.codec_options


def test_device_settings_beat_the_board() -> None:
    device = config_from_dict(
        {
            "devices": [
                {"name": "imu", "port": "/dev/ttyACM0", "board": "nucleo-imu", "baudrate": 460800, "max_payload": 77}
            ]
        }
    ).devices[0]
    assert device.baudrate == 460800
    assert device.codec_options == {"max_payload": 77}


def test_device_codec_override_drops_the_boards_codec_options() -> None:
    # nucleo-imu's max_payload means nothing to the lines codec.
    device = config_from_dict(
        {"devices": [{"name": "imu", "port": "/dev/ttyACM0", "board": "nucleo-imu", "codec": "lines", "max_line": 80}]}
    ).devices[0]
    assert device.codec == "lines"
    assert device.codec_options == {"max_line": 80}
    assert device.baudrate == 921600  # still the board's


def test_injected_boards_codecs_and_sinks() -> None:
    board = Board(
        name="modem",
        description="radio modem",
        vid=None,
        pid=None,
        baudrate=57600,
        codec="mavlink",
        codec_options={"mtu": 280},
        emulator=EmulatorProfile(rate=1.0, payload="random"),
    )
    config = config_from_dict(
        {
            "devices": [{"name": "m", "port": "/dev/ttyUSB0", "board": "modem"}],
            "sinks": [{"type": "sqlite", "db": "x"}],
        },
        known_codecs={"fh1", "mavlink"},
        known_sinks={"sqlite"},
        boards={"modem": board},
    )
    assert config.devices[0].codec == "mavlink" and config.devices[0].codec_options == {"mtu": 280}
    assert config.devices[0].baudrate == 57600
    assert config.sinks == [SinkConfig(type="sqlite", options={"db": "x"})]


def test_plugin_codec_options_pass_through() -> None:
    device = config_from_dict(
        {"devices": [{"name": "m", "port": "/dev/ttyUSB0", "codec": "mavlink", "max_line": 9}]},
        known_codecs={"mavlink"},
    ).devices[0]
    assert device.codec_options == {"max_line": 9}


def test_config_without_devices_is_valid() -> None:
    config = config_from_dict({"devices": [], "sinks": []})
    assert config.devices == [] and config.source == "<config>"


def test_load_config_accepts_str_path(tmp_path: Path) -> None:
    path = write(tmp_path, '[[devices]]\nname = "x"\nport = "/dev/null"\ncodec = "fh1"\n')
    assert load_config(str(path)).devices[0].name == "x"


# Each case: (TOML text, the key path or key that the message must name, another fragment it must contain)
ERROR_CASES = {
    "unknown top-level key": (
        "bufer = {}\n",
        "'bufer'",
        "known: buffer, control, devices, log, metrics, plugins, serial, shutdown, sinks",
    ),
    "unknown key in serial": (
        "[serial]\nread_colaesce = 0.1\n",
        "'read_colaesce' in [serial]",
        "known: hotplug, read_coalesce, remove_after, scan_interval",
    ),
    "read_coalesce negative": ("[serial]\nread_coalesce = -0.01\n", "serial.read_coalesce", ">= 0"),
    "read_coalesce too long": (
        "[serial]\nread_coalesce = 2\n",
        "serial.read_coalesce",
        "from 0 to 0.5 (seconds), got 2",
    ),
    "read_coalesce not a number": ('[serial]\nread_coalesce = "20ms"\n', "serial.read_coalesce", 'got "20ms"'),
    "unknown key in buffer": (
        "[buffer]\ncapcity = 5\n",
        "unknown key 'capcity' in [buffer]",
        "known: batch_size, capacity, flush_interval, max_bytes",
    ),
    "unknown key in shutdown": ("[shutdown]\ngrac = 5\n", "'grac' in [shutdown]", "known: grace"),
    "unknown key in control": ('[control]\nsock = "x"\n', "'sock' in [control]", "known: group, mode, socket"),
    "unknown key in device": (
        '[[devices]]\nname = "a"\nprot = "/dev/x"\ncodec = "fh1"\n',
        "'prot' in devices[0]",
        "known:",
    ),
    "unknown key in match": (
        '[[devices]]\nname = "a"\ncodec = "fh1"\nmatch = {vendor = 1}\n',
        "'vendor' in devices[0].match",
        "known: path, pid, serial, vid",
    ),
    "wrong type capacity": (
        '[buffer]\ncapacity = "big"\n',
        "buffer.capacity",
        'expected an integer from 1 to 100000000, got "big"',
    ),
    "bool as int": ("[buffer]\ncapacity = true\n", "buffer.capacity", "got true"),
    "bool as float": ("[shutdown]\ngrace = false\n", "shutdown.grace", "got false"),
    "float where int expected": ("[buffer]\nbatch_size = 10.5\n", "buffer.batch_size", "got 10.5"),
    "capacity zero": ("[buffer]\ncapacity = 0\n", "buffer.capacity", "from 1 to 100000000, got 0"),
    "max_bytes negative": ("[buffer]\nmax_bytes = -1\n", "buffer.max_bytes", "from 0 to"),
    "flush_interval negative": (
        "[buffer]\nflush_interval = -0.5\n",
        "buffer.flush_interval",
        "0 (off) or a number from 0.001 to 3600 (seconds), got -0.5",
    ),
    "flush_interval inf": ("[buffer]\nflush_interval = inf\n", "buffer.flush_interval", "got inf"),
    "batch_size zero": ("[buffer]\nbatch_size = 0\n", "buffer.batch_size", "from 1 to 1000000, got 0"),
    "grace negative": ("[shutdown]\ngrace = -1\n", "shutdown.grace", "from 0.01 to 3600 (seconds), got -1"),
    "grace too large for a float": (
        f"[shutdown]\ngrace = {'9' * 400}\n",
        "shutdown.grace",
        "expected a number from 0.01 to 3600 (seconds), got a very large integer",
    ),
    "spool_sync unknown": (
        '[buffer]\nspool_sync = "sometimes"\n',
        "buffer.spool_sync",
        'expected one of off, normal, full, got "sometimes"',
    ),
    "buffer not a table": ("buffer = 3\n", "buffer", "expected a table"),
    "socket wrong type": ("[control]\nsocket = 3\n", "control.socket", "got 3"),
    "socket too long": (f'[control]\nsocket = "/{"s" * 200}"\n', "control.socket", "Unix socket limit"),
    "devices not an array": ("[devices]\nname = 'a'\n", "devices", "[[devices]]"),
    "device missing name": ('[[devices]]\nport = "/dev/x"\ncodec = "fh1"\n', "devices[0].name", "required"),
    "device bad name": ('[[devices]]\nname = "imu 0"\nport = "/dev/x"\ncodec = "fh1"\n', "devices[0].name", '"imu 0"'),
    "device name too long": (
        f'[[devices]]\nname = "{"a" * 65}"\nport = "/dev/x"\ncodec = "fh1"\n',
        "devices[0].name",
        "64",
    ),
    "duplicate device name": (
        (
            '[[devices]]\nname = "imu0"\nport = "/dev/a"\ncodec = "fh1"\n'
            '[[devices]]\nname = "imu0"\nport = "/dev/b"\ncodec = "fh1"\n'
        ),
        "devices[1].name",
        "duplicate device name 'imu0'",
    ),
    "both port and match": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\nmatch = {vid = 1}\ncodec = "fh1"\n',
        "devices[0]",
        "not both",
    ),
    "neither port nor match": ('[[devices]]\nname = "a"\ncodec = "fh1"\n', "devices[0]", "'match'"),
    "empty match": (
        '[[devices]]\nname = "a"\nmatch = {}\ncodec = "fh1"\n',
        "devices[0].match",
        "at least one of vid, pid, serial",
    ),
    "vid out of range": (
        '[[devices]]\nname = "a"\nmatch = {vid = 0x10000}\ncodec = "fh1"\n',
        "devices[0].match.vid",
        "0xFFFF",
    ),
    "pid bad hex": (
        '[[devices]]\nname = "a"\nmatch = {pid = "0xZZ"}\ncodec = "fh1"\n',
        "devices[0].match.pid",
        '"0xZZ"',
    ),
    "vid bool": ('[[devices]]\nname = "a"\nmatch = {vid = true}\ncodec = "fh1"\n', "devices[0].match.vid", "got true"),
    "port empty": ('[[devices]]\nname = "a"\nport = ""\ncodec = "fh1"\n', "devices[0].port", 'got ""'),
    "unknown board": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\nboard = "nucleo"\n',
        "devices[0].board",
        "unknown board 'nucleo' (known: csv-uart, env-sensor, gnss-nmea, gnss-ubx, nucleo-imu; or a path to a .toml)",
    ),
    "unknown codec": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\ncodec = "fh2"\n',
        "devices[0].codec",
        "unknown codec 'fh2' (known: fh1, lines, nmea, ubx)",
    ),
    "codec missing without board": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\n',
        "devices[0].codec",
        "required when no 'board'",
    ),
    "baudrate bool": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\ncodec = "fh1"\nbaudrate = true\n',
        "devices[0].baudrate",
        "got true",
    ),
    "baudrate zero": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\ncodec = "fh1"\nbaudrate = 0\n',
        "devices[0].baudrate",
        "from 50 to 4000000, got 0",
    ),
    "max_payload zero": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\ncodec = "fh1"\nmax_payload = 0\n',
        "devices[0].max_payload",
        "from 1 to 1048576, got 0",
    ),
    "option foreign to codec": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\ncodec = "fh1"\nmax_line = 10\n',
        "devices[0].max_line",
        "codec 'fh1' has no option 'max_line'",
    ),
    "backoff_initial zero": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\ncodec = "fh1"\nbackoff_initial = 0\n',
        "devices[0].backoff_initial",
        "from 0.001 to 3600 (seconds), got 0",
    ),
    "backoff_max below initial": (
        '[[devices]]\nname = "a"\nport = "/dev/x"\ncodec = "fh1"\nbackoff_initial = 2\nbackoff_max = 1\n',
        "devices[0].backoff_max",
        ">= backoff_initial",
    ),
    "device not a table": ("devices = [1]\n", "devices[0]", "got 1"),
    "sinks not an array": ('[sinks]\ntype = "jsonl"\n', "sinks", "[[sinks]]"),
    "sink missing type": ('[[sinks]]\npath = "x"\n', "sinks[0].type", "required"),
    "unknown sink type": (
        '[[sinks]]\ntype = "jsonl"\n[[sinks]]\ntype = "kafka"\n',
        "sinks[1].type",
        "unknown sink type 'kafka' (known: jsonl)",
    ),
    "sink timeout zero": ('[[sinks]]\ntype = "jsonl"\ntimeout = 0\n', "sinks[0].timeout", "from 0.01 to 3600"),
    "sink timeout negative": ('[[sinks]]\ntype = "jsonl"\ntimeout = -1.5\n', "sinks[0].timeout", "got -1.5"),
    "sink timeout infinite": ('[[sinks]]\ntype = "jsonl"\ntimeout = inf\n', "sinks[0].timeout", "got inf"),
    "sink timeout nan": ('[[sinks]]\ntype = "jsonl"\ntimeout = nan\n', "sinks[0].timeout", "got nan"),
    "sink timeout text": ('[[sinks]]\ntype = "jsonl"\ntimeout = "5s"\n', "sinks[0].timeout", "expected"),
    "sink batch_size zero": ('[[sinks]]\ntype = "jsonl"\nbatch_size = 0\n', "sinks[0].batch_size", "got 0"),
    "sink batch_size huge": (
        '[[sinks]]\ntype = "jsonl"\nbatch_size = 1000001\n',
        "sinks[0].batch_size",
        "got 1000001",
    ),
    "sink batch_size text": ('[[sinks]]\ntype = "jsonl"\nbatch_size = "5k"\n', "sinks[0].batch_size", "expected"),
    "plugin not a table": ("[plugins]\nstats = 10\n", "plugins.stats", "expected a table"),
    "plugins not a table": ("plugins = 3\n", "plugins", "expected a table"),
    "toml syntax error": ("[buffer\ncapacity = 1\n", "TOML syntax error:", "line 1"),
    "duplicate toml key": ("[buffer]\ncapacity = 1\ncapacity = 2\n", "TOML syntax error:", "line 3"),
}


@pytest.mark.parametrize(("text", "key", "fragment"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_is_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert key in message, message
    assert fragment in message, message


def test_error_format_matches_the_contract(tmp_path: Path) -> None:
    path = write(tmp_path, '[buffer]\ncapacity = "big"\n')
    assert load_error(path) == f'{path}: buffer.capacity: expected an integer from 1 to 100000000, got "big"'
    path = write(tmp_path, "[buffer]\ncapcity = 5\n")
    assert load_error(path) == (
        f"{path}: unknown key 'capcity' in [buffer] (known: batch_size, capacity, flush_interval, max_bytes,"
        " spool, spool_interval, spool_max_bytes, spool_sync)"
    )


def test_error_attributes(tmp_path: Path) -> None:
    path = write(tmp_path, "[buffer]\ncapacity = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.source, info.value.key) == (str(path), "buffer.capacity")
    assert info.value.__suppress_context__ or info.value.__context__ is None


def test_error_value_with_newline_stays_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"devices": [{"name": "a\nb", "port": "x", "codec": "fh1"}]}, source="s.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("s.toml: devices[0].name: ")


def test_plain_config_error_is_just_its_text() -> None:
    assert str(ConfigError("something odd")) == "something odd"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    assert load_error(path) == f"{path}: no such file"


def test_missing_file_relative_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^missing\.toml: no such file$"):
        load_config("missing.toml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "is a directory" in load_error(tmp_path / ".")


def test_oversize_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert "larger than 1 MiB" in load_error(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bench.toml"
    path.write_bytes(b"[buffer]\ncapacity = 1 # \xff\n")
    assert "UTF-8" in load_error(path)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = tmp_path / "bench.toml"
    os.mkfifo(path)
    assert "not a regular file" in load_error(path)


def test_config_from_dict_errors_name_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^<config>: buffer\.capacity: "):
        config_from_dict({"buffer": {"capacity": -1}})
    with pytest.raises(ConfigError, match=r"^x\.toml: expected a table"):
        config_from_dict([], source="x.toml")  # type: ignore[arg-type]


def test_unknown_codec_reached_through_a_board() -> None:
    board = dataclasses.replace(load_boards()["nucleo-imu"], name="odd", codec="cbor")
    with pytest.raises(ConfigError, match=r"devices\[0\]\.board: board 'odd' uses codec 'cbor'"):
        config_from_dict({"devices": [{"name": "a", "port": "x", "board": "odd"}]}, boards={"odd": board})


def test_boards_not_loaded_unless_a_device_names_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A broken user board dir must not break configs that do not use boards.
    monkeypatch.setenv(BOARDS_ENV_VAR, str(tmp_path / "nowhere"))
    assert config_from_dict({"devices": [{"name": "a", "port": "x", "codec": "fh1"}]}).devices[0].name == "a"
    with pytest.raises(ConfigError, match="no such board directory"):
        config_from_dict({"devices": [{"name": "a", "port": "x", "board": "nucleo-imu"}]})


def test_default_control_socket_uses_xdg_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_control_socket() == str(tmp_path / "firmware-host.sock")


@pytest.mark.parametrize("xdg", [None, "/nonexistent/xdg/runtime"])
def test_default_control_socket_falls_back_to_temp_dir(monkeypatch: pytest.MonkeyPatch, xdg: str | None) -> None:
    if xdg is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
    expected = os.path.join(tempfile.gettempdir(), f"firmware-host-{os.getuid()}", "firmware-host.sock")
    assert default_control_socket() == expected


def test_sink_timeout_is_a_common_key_with_a_default() -> None:
    """``timeout`` is the loader's (every sink type takes it), never passed to the sink."""
    cfg = config_from_dict(
        {"sinks": [{"type": "jsonl", "path": "a"}, {"type": "jsonl", "path": "b", "timeout": 2}]}, source="t"
    )
    assert [(s.options, s.timeout) for s in cfg.sinks] == [({"path": "a"}, 10.0), ({"path": "b"}, 2.0)]


def test_sink_batch_size_is_a_common_key_and_optional() -> None:
    """``batch_size`` is the loader's too; absent, the sink's own or the buffer's applies."""
    cfg = config_from_dict(
        {"sinks": [{"type": "jsonl", "path": "a"}, {"type": "jsonl", "path": "b", "batch_size": 7}]}, source="t"
    )
    assert [(s.options, s.batch_size) for s in cfg.sinks] == [({"path": "a"}, None), ({"path": "b"}, 7)]
