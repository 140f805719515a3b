"""Board definitions: what a kind of device speaks, and how to emulate it.

A board file (``boards/*.toml``) names a device type: USB ids for
auto-detection, baudrate, codec and codec options, and an emulator profile so
every board runs without hardware. Shipped boards live in the package
``firmware_host_boards``; users add or override boards with their own
directories (``load_boards(extra_dirs)`` or ``$FIRMWARE_HOST_BOARDS``).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_host.config._check import (
    CODEC_OPTION_KEYS,
    DEFAULT_BAUDRATE,
    Checker,
    describe,
    parse_toml,
    read_toml,
)
from firmware_host.config.payloads import TEXT_CODECS, layout_size, parse_schema
from firmware_host.errors import BoardError
from firmware_host.values.layout import PayloadSchema

__all__ = [
    "BOARDS_ENV_VAR",
    "PAYLOAD_GENERATORS",
    "Board",
    "BoardError",
    "EmulatorProfile",
    "board_from_dict",
    "load_board_file",
    "load_boards",
    "match_board",
]

#: os.pathsep-separated directories of user boards, loaded after the shipped ones
BOARDS_ENV_VAR = "FIRMWARE_HOST_BOARDS"
#: the emulator's payload generators a board may name
PAYLOAD_GENERATORS: tuple[str, ...] = ("imu", "env", "gnss", "ubx", "csv", "random", "schema")
#: binary payload bytes of the generators whose size is fixed, at payload_size 0
#: (the emulator's ImuGenerator and EnvGenerator); the others' sizes vary
_NATURAL_SIZES = {"imu": 48, "env": 12}
#: fh1 max_payload when a board does not set it (the codec's default)
FH1_DEFAULT_MAX_PAYLOAD = 1024
#: fh1 types 0xF0-0xFF are reserved for the runtime (commands, acks, heartbeats, logs)
MAX_APPLICATION_FRAME_TYPE = 0xEF

_PACKAGE = "firmware_host_boards"
# Before installation (tests in a checkout) the data sits next to the package.
_REPO_BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"

_BOARD_KEYS = frozenset(
    {"name", "description", "usb", "baudrate", "codec", "emulator", "schema", "decode", *CODEC_OPTION_KEYS}
)
_USB_KEYS = frozenset({"vid", "pid"})
_EMULATOR_KEYS = frozenset({"rate", "payload", "payload_size", "frame_type", "replay"})
#: codecs whose captures are lines of text the emulator can replay
REPLAY_CODECS = frozenset({"nmea", "lines"})


@dataclass(frozen=True)
class EmulatorProfile:
    """How the emulator plays this board."""

    rate: float  # frames per second, > 0
    payload: str  # generator name, one of PAYLOAD_GENERATORS
    payload_size: int = 0  # bytes per frame, for fh1 generators
    frame_type: int = 0  # fh1 application frame type, 0x00-0xEF
    replay: str | None = None  # a capture file (absolute path) replayed instead of the generator

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "payload": self.payload,
            "payload_size": self.payload_size,
            "frame_type": self.frame_type,
            "replay": self.replay,
        }


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    vid: int | None  # USB vendor id, for auto-detection
    pid: int | None  # USB product id
    baudrate: int
    codec: str
    codec_options: dict[str, int]  # max_payload / max_line
    emulator: EmulatorProfile
    source: str = ""  # the file it came from
    #: the payloads' named fields ([schema]); None: frames carry bytes or text only
    schema: PayloadSchema | None = None
    #: the default of its devices' ``decode`` (False: bytes and text only, unless a device says otherwise)
    decode: bool = True

    @property
    def vid_pid(self) -> str | None:
        """``"0483:374b"`` (the form ``lsusb`` and ``devices`` print), or None."""
        if self.vid is None or self.pid is None:
            return None
        return f"{self.vid:04x}:{self.pid:04x}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``firmware-host boards --json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "usb": None if self.vid is None or self.pid is None else {"vid": self.vid, "pid": self.pid},
            "vid_pid": self.vid_pid,
            "baudrate": self.baudrate,
            "codec": self.codec,
            "codec_options": dict(self.codec_options),
            "emulator": self.emulator.to_dict(),
            "schema": self.schema.to_dict() if self.schema is not None else None,
            "decode": self.decode,
            "source": self.source,
        }


def board_from_dict(data: Mapping[str, Any], *, source: str = "<board>") -> Board:
    """Validate one parsed board file. Raises :class:`BoardError`."""
    check = Checker(source, BoardError)
    table = check.table(data, None, "a table of board settings")
    check.keys(table, _BOARD_KEYS, None)

    if "name" not in table:
        check.fail("name", "required key is missing (the board's name)")
    name = check.name(table["name"], "name", "board")
    description = ""
    if "description" in table:
        description = table["description"]
        if not isinstance(description, str) or description != description.strip() or not description.isprintable():
            check.fail("description", f"expected one line of text, got {describe(description)}")

    vid = pid = None
    if "usb" in table:
        usb = check.table(table["usb"], "usb", "a table like {vid = 0x0483, pid = 0x374B}")
        check.keys(usb, _USB_KEYS, "usb")
        # Both ids: matching on a vendor alone would claim every device of that vendor.
        for key in ("vid", "pid"):
            if key not in usb:
                check.fail(f"usb.{key}", "required key is missing (usb needs both vid and pid)")
        vid = check.usb_id(usb["vid"], "usb.vid")
        pid = check.usb_id(usb["pid"], "usb.pid")

    baudrate = check.baudrate(table.get("baudrate", DEFAULT_BAUDRATE), "baudrate")
    if "codec" not in table:
        check.fail("codec", "required key is missing (fh1, nmea, lines or a plugin's codec)")
    # Codec existence is checked where it is used (config), since plugin codecs
    # are only known once plugins are loaded.
    codec = check.name(table["codec"], "codec", "codec")
    options = {key: check.codec_size(table[key], key) for key in CODEC_OPTION_KEYS if key in table}
    check.codec_option_keys(codec, options, "")

    if "emulator" not in table:
        check.fail("emulator", "required table is missing ([emulator] with rate and payload)")
    emu = check.table(table["emulator"], "emulator", "a table ([emulator])")
    check.keys(emu, _EMULATOR_KEYS, "[emulator]")
    for key in ("rate", "payload"):
        if key not in emu:
            check.fail(f"emulator.{key}", "required key is missing")
    rate = check.number(emu["rate"], "emulator.rate", gt=0)
    payload = check.one_of(emu["payload"], "emulator.payload", PAYLOAD_GENERATORS)
    # A generator bigger than max_payload would make the emulator send frames
    # its own board definition rejects.
    size_limit = options.get("max_payload", FH1_DEFAULT_MAX_PAYLOAD) if codec == "fh1" else None
    payload_size = check.integer(emu.get("payload_size", 0), "emulator.payload_size", ge=0, le=size_limit)
    frame_type = check.integer(emu.get("frame_type", 0), "emulator.frame_type", ge=0, le=MAX_APPLICATION_FRAME_TYPE)
    replay = None
    if "replay" in emu:
        replay = _replay_path(check, emu["replay"], codec, source)
    schema = None
    if "schema" in table:
        max_payload = options.get("max_payload", FH1_DEFAULT_MAX_PAYLOAD) if codec == "fh1" else None
        schema = parse_schema(check, table["schema"], codec, max_payload)
        layout = schema.layout(frame_type)
        if layout is not None:
            size = layout_size(layout)
            # payload_size 0 is the generator's own size (None: it varies)
            sent = payload_size or (size if payload == "schema" else _NATURAL_SIZES.get(payload))
            if sent != size:
                # the emulator would send frames its own board cannot decode
                what = f"{sent} bytes" if sent else f'"{payload}" payloads of varying size (set payload_size)'
                check.fail(
                    "emulator.payload_size",
                    f"{what}, but the schema's layout of frame type {frame_type:#04x} is {size} bytes",
                )

    decode = table.get("decode", True)
    if not isinstance(decode, bool):
        check.fail("decode", f"expected true or false, got {describe(decode)}")

    if payload == "schema":
        text = codec in TEXT_CODECS
        if schema is None or (schema.csv is None if text else schema.layout(frame_type) is None):
            what = "a [schema.csv]" if text else f"a [[schema.frames]] layout of frame type {frame_type:#04x}"
            check.fail("emulator.payload", f'"schema" generates payloads from the board\'s schema, which needs {what}')

    return Board(
        name=name,
        description=description,
        vid=vid,
        pid=pid,
        baudrate=baudrate,
        codec=codec,
        codec_options=options,
        emulator=EmulatorProfile(
            rate=rate, payload=payload, payload_size=payload_size, frame_type=frame_type, replay=replay
        ),
        source=source,
        schema=schema,
        decode=decode,
    )


def _replay_path(check: Checker, value: object, codec: str, source: str) -> str:
    """A capture file for ``emulator.replay``, relative to the board file's directory."""
    text = check.string(value, "emulator.replay", "a path to a capture file (lines of text)")
    if codec not in REPLAY_CODECS:
        check.fail("emulator.replay", f"replaying a capture needs a text codec (nmea or lines), not {codec!r}")
    base = Path(source).parent if source and not source.startswith("<") else Path.cwd()
    path = (base / os.path.expanduser(text)).resolve()
    # checked now, not when the emulator starts: a typo should fail `boards` too
    if not path.is_file():
        check.fail("emulator.replay", f"no such capture file: {path}")
    return str(path)


def load_board_file(path: str | os.PathLike[str]) -> Board:
    """Read and validate one board file. Raises :class:`BoardError`."""
    source, data = read_toml(path, BoardError)
    return board_from_dict(data, source=source)


def board_file_path(path: str, relative_to: str | None = None) -> str:
    """A board file's ``path`` made absolute, ``~`` expanded: a relative one
    from ``relative_to`` (a folder), else from the working directory."""
    path = os.path.expanduser(path)
    if relative_to is not None:
        path = os.path.join(relative_to, path)  # an absolute path stays itself
    return os.path.abspath(path)


def find_board(name: str, known: Mapping[str, Board], relative_to: str | None = None) -> Board | None:
    """``name`` among ``known``; else, when it ends in ``.toml``, the board file
    at that path (``board_file_path``), whose ``source`` is then absolute; None
    when neither. Raises :class:`BoardError` for a file that is no valid board."""
    board = known.get(name)
    if board is None and name.endswith(".toml"):
        board = load_board_file(board_file_path(name, relative_to))
    return board


def load_boards(extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Board]:
    """All known boards by name: shipped, then $FIRMWARE_HOST_BOARDS, then ``extra_dirs``.

    A later board with the same name replaces an earlier one (a user's own
    definition beats the shipped one) and moves to the end of the mapping, so
    :func:`match_board` prefers it too. Raises :class:`BoardError`.
    """
    if isinstance(extra_dirs, (str, bytes, os.PathLike)):
        extra_dirs = [extra_dirs]  # one directory given bare; do not iterate its characters
    boards: dict[str, Board] = {}
    _merge(boards, _load_shipped())
    for entry in os.environ.get(BOARDS_ENV_VAR, "").split(os.pathsep):
        if entry:  # tolerate "a::b" and a trailing separator, as PATH does
            _merge(boards, _load_dir(Path(entry), f" (from ${BOARDS_ENV_VAR})"))
    for directory in extra_dirs:
        _merge(boards, _load_dir(Path(os.fsdecode(directory)), ""))
    return boards


def match_board(vid: int | None, pid: int | None, boards: Mapping[str, Board]) -> Board | None:
    """The board whose USB ids are ``vid:pid``, or None.

    If several boards share the ids, the last one wins: user boards are loaded
    after shipped ones, so a user's own definition takes precedence.
    """
    if vid is None or pid is None:  # not a USB port (pyserial reports None)
        return None
    found: Board | None = None
    for board in boards.values():
        if board.vid == vid and board.pid == pid:
            found = board
    return found


# --------------------------------------------------------------------- loading


def _merge(into: dict[str, Board], new: dict[str, Board]) -> None:
    for name, board in new.items():
        into.pop(name, None)
        into[name] = board


def _add_unique(boards: dict[str, Board], board: Board) -> None:
    # Two files in one directory naming the same board is ambiguous; say which.
    other = boards.get(board.name)
    if other is not None:
        raise BoardError(f"board {board.name!r} is also defined in {other.source}", source=board.source, key="name")
    boards[board.name] = board


def _load_dir(directory: Path, origin: str) -> dict[str, Board]:
    if not directory.is_dir():
        raise BoardError(f"no such board directory{origin}", source=str(directory))
    boards: dict[str, Board] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.is_file():
            _add_unique(boards, load_board_file(path))
    return boards


def _load_shipped() -> dict[str, Board]:
    try:
        found = importlib.util.find_spec(_PACKAGE) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return _load_dir(_REPO_BOARDS_DIR, " (shipped boards)")
    # importlib.resources also works when installed as a zip or wheel-in-place.
    boards: dict[str, Board] = {}
    root = importlib.resources.files(_PACKAGE)
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml") or not entry.is_file():
            continue
        source = str(entry)
        data = parse_toml(source, entry.read_bytes(), BoardError)
        _add_unique(boards, board_from_dict(data, source=source))
    return boards
