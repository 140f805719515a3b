"""Board definitions: shipped boards, user board directories, validation, USB matching."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

import firmware_host.config.boards as boards_module
from firmware_host.config.boards import (
    BOARDS_ENV_VAR,
    PAYLOAD_GENERATORS,
    Board,
    BoardError,
    EmulatorProfile,
    board_from_dict,
    load_board_file,
    load_boards,
    match_board,
)
from firmware_host.config.schema import DEFAULT_CODECS, ConfigError

pytestmark = pytest.mark.timeout(30)

SHIPPED = {"nucleo-imu", "env-sensor", "gnss-nmea", "gnss-ubx", "csv-uart"}

MINIMAL_BOARD = """\
name = "{name}"
description = "a test board"
usb = {{ vid = 0x1234, pid = 0x5678 }}
baudrate = 230400
codec = "fh1"
max_payload = 64

[emulator]
rate = 20
payload = "random"
payload_size = 16
frame_type = 7
"""


@pytest.fixture(autouse=True)
def _no_user_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOARDS_ENV_VAR, raising=False)


def board_dir(tmp_path: Path, files: dict[str, str], name: str = "myboards") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for filename, text in files.items():
        (directory / filename).write_text(text, encoding="utf-8")
    return directory


def test_shipped_boards_load_and_validate() -> None:
    boards = load_boards()
    assert set(boards) == SHIPPED
    for name, board in boards.items():
        assert board.name == name
        assert board.codec in DEFAULT_CODECS
        assert board.description and "\n" not in board.description
        assert board.baudrate > 0 and board.emulator.rate > 0
        assert board.emulator.payload in PAYLOAD_GENERATORS
        assert Path(board.source).name == f"{name}.toml"
        # each shipped file also validates on its own, through the public loader
        assert load_board_file(board.source) == board


def test_shipped_board_contents() -> None:
    boards = load_boards()
    imu = boards["nucleo-imu"]
    assert (imu.codec, imu.baudrate, imu.vid, imu.pid) == ("fh1", 921600, 0x0483, 0x374B)
    assert imu.emulator.payload == "imu" and imu.emulator.payload_size == 48
    assert 500 <= imu.emulator.rate <= 2000
    assert imu.emulator.payload_size <= imu.codec_options.get("max_payload", 1024)

    env = boards["env-sensor"]
    assert (env.codec, env.baudrate, env.emulator.rate) == ("fh1", 115200, 10.0)
    assert (env.emulator.payload, env.emulator.payload_size) == ("env", 12)

    gnss = boards["gnss-nmea"]
    assert (gnss.codec, gnss.baudrate, gnss.vid, gnss.pid) == ("nmea", 9600, 0x1546, 0x01A8)
    assert (gnss.emulator.payload, gnss.emulator.rate) == ("gnss", 5.0)

    csv = boards["csv-uart"]
    assert (csv.codec, csv.baudrate, csv.vid, csv.pid) == ("lines", 115200, 0x2E8A, 0x000A)
    assert (csv.emulator.payload, csv.emulator.rate) == ("csv", 50.0)


def test_fallback_to_repo_dir_when_package_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boards_module, "_PACKAGE", "firmware_host_boards_not_installed")
    assert set(load_boards()) == SHIPPED


def test_shipped_boards_come_from_the_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fh_boards_pkg_for_test"
    package.mkdir()
    (package / "__init__.py").write_text('"""test boards"""\n')
    (package / "only.toml").write_text(MINIMAL_BOARD.format(name="only"))
    (package / "notes.txt").write_text("not a board")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(boards_module, "_PACKAGE", "fh_boards_pkg_for_test")
    importlib.invalidate_caches()
    try:
        boards = load_boards()
    finally:
        sys.modules.pop("fh_boards_pkg_for_test", None)
    assert list(boards) == ["only"]
    assert boards["only"].source == str(package / "only.toml")


def test_user_dir_adds_and_overrides(tmp_path: Path) -> None:
    directory = board_dir(
        tmp_path,
        {
            "mine.toml": MINIMAL_BOARD.format(name="mine"),
            # a user's own nucleo-imu: same name replaces the shipped one
            "nucleo.toml": MINIMAL_BOARD.format(name="nucleo-imu"),
            "README.md": "not a board",
        },
    )
    boards = load_boards([directory])
    assert set(boards) == SHIPPED | {"mine"}
    assert boards["nucleo-imu"].baudrate == 230400
    assert boards["nucleo-imu"].source == str(directory / "nucleo.toml")
    mine = boards["mine"]
    assert mine == Board(
        name="mine",
        description="a test board",
        vid=0x1234,
        pid=0x5678,
        baudrate=230400,
        codec="fh1",
        codec_options={"max_payload": 64},
        emulator=EmulatorProfile(rate=20.0, payload="random", payload_size=16, frame_type=7),
        source=str(directory / "mine.toml"),
    )


def test_single_dir_given_bare(tmp_path: Path) -> None:
    directory = board_dir(tmp_path, {"mine.toml": MINIMAL_BOARD.format(name="mine")})
    assert "mine" in load_boards(str(directory))


def test_env_var_dirs_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_a = board_dir(tmp_path, {"a.toml": MINIMAL_BOARD.format(name="from-env")}, "a")
    env_b = board_dir(tmp_path, {"b.toml": MINIMAL_BOARD.format(name="shared")}, "b")
    extra = board_dir(tmp_path, {"c.toml": MINIMAL_BOARD.format(name="shared").replace("230400", "57600")}, "c")
    monkeypatch.setenv(BOARDS_ENV_VAR, os.pathsep.join([str(env_a), "", str(env_b)]))
    assert {"from-env", "shared"} <= set(load_boards())
    # explicit directories are loaded after the environment's, so they win
    assert load_boards([extra])["shared"].baudrate == 57600


def test_missing_board_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BoardError, match=r"nowhere: no such board directory$"):
        load_boards([tmp_path / "nowhere"])
    monkeypatch.setenv(BOARDS_ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(BoardError, match=r"FIRMWARE_HOST_BOARDS"):
        load_boards()


def test_duplicate_name_in_one_dir(tmp_path: Path) -> None:
    directory = board_dir(
        tmp_path, {"a.toml": MINIMAL_BOARD.format(name="twin"), "b.toml": MINIMAL_BOARD.format(name="twin")}
    )
    with pytest.raises(BoardError) as info:
        load_boards([directory])
    assert str(info.value) == f"{directory / 'b.toml'}: name: board 'twin' is also defined in {directory / 'a.toml'}"


def _edit(old: str, new: str) -> str:
    text = MINIMAL_BOARD.format(name="bad")
    assert old in text
    return text.replace(old, new)


BAD_BOARDS = {
    "unknown top key": (_edit("baudrate =", "baud = 1\nbaudrate ="), "unknown key 'baud'"),
    "unknown emulator key": (_edit("rate = 20", "rate = 20\nhz = 3"), "unknown key 'hz' in [emulator]"),
    "unknown usb key": (_edit("pid = 0x5678", "pid = 0x5678, rev = 1"), "unknown key 'rev' in usb"),
    "missing name": (_edit('name = "bad"\n', ""), "name: required"),
    "bad name": (_edit('name = "bad"', 'name = "bad board"'), "name: expected a board name"),
    "missing codec": (_edit('codec = "fh1"\n', ""), "codec: required"),
    "missing emulator": (MINIMAL_BOARD.format(name="bad").split("[emulator]")[0], "emulator: required"),
    "missing rate": (_edit("rate = 20\n", ""), "emulator.rate: required"),
    "usb without pid": (_edit(", pid = 0x5678", ""), "usb.pid: required"),
    "vid out of range": (_edit("vid = 0x1234", "vid = 0x12345"), "usb.vid: expected a USB id"),
    "baudrate string": (
        _edit("baudrate = 230400", 'baudrate = "fast"'),
        'baudrate: expected an integer from 50 to 4000000, got "fast"',
    ),
    "baudrate bool": (
        _edit("baudrate = 230400", "baudrate = true"),
        "baudrate: expected an integer from 50 to 4000000, got true",
    ),
    "rate zero": (_edit("rate = 20", "rate = 0"), "emulator.rate: expected a finite number > 0, got 0"),
    "rate nan": (_edit("rate = 20", "rate = nan"), "emulator.rate: expected a finite number > 0"),
    "unknown generator": (
        _edit('payload = "random"', 'payload = "noise"'),
        'emulator.payload: expected one of imu, env, gnss, ubx, csv, random, schema, got "noise"',
    ),
    "payload beyond max_payload": (
        _edit("payload_size = 16", "payload_size = 65"),
        "emulator.payload_size: expected an integer from 0 to 64",
    ),
    "reserved frame type": (
        _edit("frame_type = 7", "frame_type = 0xF2"),
        "emulator.frame_type: expected an integer from 0 to 239",
    ),
    "option foreign to codec": (
        _edit("max_payload = 64", "max_line = 64"),
        "max_line: codec 'fh1' has no option 'max_line'",
    ),
    "nmea takes no options": (
        _edit('codec = "fh1"\nmax_payload = 64', 'codec = "nmea"\nmax_payload = 64'),
        "max_payload: codec 'nmea' has no option",
    ),
    "two-line description": (_edit('"a test board"', '"""a\ntest board"""'), "description: expected one line of text"),
    "syntax error": (_edit("[emulator]", "[emulator"), "TOML syntax error:"),
}


@pytest.mark.parametrize(("text", "fragment"), BAD_BOARDS.values(), ids=BAD_BOARDS.keys())
def test_invalid_board_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BoardError) as info:
        load_board_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert fragment in message, message
    # the same error surfaces from load_boards for a user dir
    with pytest.raises(BoardError, match=r"bad\.toml"):
        load_boards([tmp_path])


def test_board_error_is_a_config_error() -> None:
    assert issubclass(BoardError, ConfigError)


def test_missing_board_file(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match=r"gone\.toml: no such file$"):
        load_board_file(tmp_path / "gone.toml")


def test_board_from_dict_minimal_and_plugin_codec() -> None:
    board = board_from_dict(
        {"name": "modem", "codec": "mavlink", "max_line": 9, "emulator": {"rate": 1, "payload": "random"}}
    )
    # plugin codecs' options are not second-guessed here; defaults fill the rest
    assert (board.vid, board.pid, board.baudrate, board.description) == (None, None, 115200, "")
    assert board.codec_options == {"max_line": 9}
    assert board.emulator == EmulatorProfile(rate=1.0, payload="random", payload_size=0, frame_type=0)
    assert board.source == "<board>"


def test_match_board() -> None:
    boards = load_boards()
    assert match_board(0x0483, 0x374B, boards) is boards["nucleo-imu"]
    # gnss-nmea and gnss-ubx share u-blox's ids: the one loaded last (file name order) names the port
    assert match_board(0x1546, 0x01A8, boards) is boards["gnss-ubx"]
    assert match_board(0x2E8A, 0x000A, boards) is boards["csv-uart"]
    assert match_board(0x0483, 0x0000, boards) is None
    assert match_board(None, None, boards) is None
    assert match_board(0x0483, None, boards) is None
    assert match_board(0x0483, 0x374B, {}) is None


def test_match_board_prefers_user_boards(tmp_path: Path) -> None:
    stlink_clone = MINIMAL_BOARD.format(name="my-stlink").replace(
        "vid = 0x1234, pid = 0x5678", 'vid = "0x0483", pid = 0x374B'
    )
    boards = load_boards([board_dir(tmp_path, {"s.toml": stlink_clone})])
    assert match_board(0x0483, 0x374B, boards) is boards["my-stlink"]
