"""Payload schemas, second look: a device's garbage is counted, never a crash;
a declared type means its range; counters stay monotonic; fields reach every path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from firmware_host.config.boards import Board, board_from_dict
from firmware_host.config.schema import config_from_dict
from firmware_host.errors import BoardError
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(30)


def csv_board(fields: list[dict[str, Any]], name: str = "scaled") -> Board:
    return board_from_dict(
        {
            "name": name,
            "codec": "lines",
            "emulator": {"rate": 10.0, "payload": "csv"},
            "schema": {"csv": {"fields": fields}},
        }
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_an_integer_cell_too_big_to_scale_counts_undecoded_not_a_dead_reader(fh_board, fh_runtime, tmp_path):
    """int("9" * 400) parses; times a float scale it overflows: that line is the
    device's mistake (undecoded), and the next line still decodes."""
    pty = fh_board("csv-uart")
    board = csv_board([{"name": "v", "type": "u32", "scale": 0.5}])
    out = tmp_path / "out.jsonl"
    cfg = config_from_dict(
        {
            "buffer": {"flush_interval": 0.02},
            "devices": [{"name": "d", "port": pty.path, "board": "scaled"}],
            "sinks": [{"type": "jsonl", "path": str(out)}],
        },
        boards={"scaled": board},
    )
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("d", "connected")
        await pty.send_lines(["9" * 400, "8"])
        status = await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 2, 10)
        assert status["devices"]["d"]["undecoded"] == 1
        assert status["devices"]["d"]["reconnects"] == 0
        assert_accounting(status)
    assert [r.get("fields") for r in records(out)] == [None, {"v": 4.0}]


def decode_line(board: Board, text: str) -> tuple[Any, int]:
    from firmware_host import Frame
    from firmware_host.values.decoder import PayloadDecoder

    assert board.schema is not None
    decoder = PayloadDecoder(board.schema)
    frame = Frame("d", 0, None, 0.0, None, text)
    decoder.decode([frame])
    return frame.fields, decoder.undecoded


@pytest.mark.parametrize(
    ("kind", "cell", "fits"),
    [
        ("u8", "255", True),
        ("u8", "256", False),
        ("u8", "-1", False),
        ("i8", "-128", True),
        ("i8", "127", True),
        ("i8", "128", False),
        ("i8", "-129", False),
        ("u16", "65536", False),
        ("i32", "-2147483649", False),
        ("u64", "18446744073709551615", True),
        ("u64", "18446744073709551616", False),
    ],
)
def test_a_csv_integer_cell_outside_its_types_range_is_undecoded(kind, cell, fits):
    """A binary u8 cannot hold 300; a csv u8 cell of 300 (or -1) is a line
    that does not fit its schema, like a cell that does not parse."""
    board = csv_board([{"name": "v", "type": kind}])
    assert decode_line(board, cell) == (({"v": int(cell)}, 0) if fits else (None, 1))


async def test_undecoded_stays_counted_when_a_device_is_readded_without_its_schema(fh_board, fh_runtime):
    """``undecoded`` is a monotonic counter (status, /metrics): re-adding a
    device with no schema (``devices add NAME PORT --codec fh1``) keeps it, as
    ``rejected`` and ``gaps`` are kept, rather than falling back to 0."""
    board = fh_board("env-sensor")
    cfg = {"buffer": {"flush_interval": 0.02}, "devices": [board.config("env")], "sinks": []}
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("env", "connected")
        await board.send_frames(1, payload=b"\x01\x02\x03")  # not the layout's 12 bytes
        await rt.wait_counter("env", "undecoded", 1)
        await rt.remove_device("env")
        bare = config_from_dict({"devices": [{"name": "env", "port": board.path, "codec": "fh1"}]}).devices[0]
        assert bare.schema is None
        await rt.add_device(bare)
        status = await rt.wait_state("env", "connected")
        assert status["devices"]["env"]["undecoded"] == 1
        # and back with its schema: counting on from 1
        await rt.remove_device("env")
        await rt.add_device(config_from_dict({"devices": [board.config("env")]}).devices[0])
        await rt.wait_state("env", "connected")
        await board.send_frames(1, payload=b"\x01\x02\x03")
        status = await rt.wait_counter("env", "undecoded", 2)
        assert_accounting(status)


def test_emulated_csv_str_cells_are_not_empty():
    """``payload = "schema"`` on a csv board: a str cell has no size to cut to
    (csv takes none), so it must not come out as an empty cell."""
    import random

    from firmware_host.emulation.generators import make_generator

    board = board_from_dict(
        {
            "name": "tagged",
            "codec": "lines",
            "emulator": {"rate": 10.0, "payload": "schema"},
            "schema": {"csv": {"fields": [{"name": "tag", "type": "str"}, {"name": "n", "type": "u8"}]}},
        }
    )
    gen = make_generator(board.emulator, board.codec, rate=10.0, rng=random.Random(1), schema=board.schema)
    rows = [item for k in range(3) for item in gen.tick(k)]
    assert rows[0] == "tag,n"
    for row in rows[1:]:
        fields, undecoded = decode_line(board, str(row))
        assert undecoded == 0 and fields is not None and fields["tag"] != "", row


@pytest.mark.parametrize(
    ("payload", "size", "words"),
    [
        ("imu", 0, "48 bytes"),  # the imu generator's own size, not the layout's 12
        ("random", 0, "varying size"),  # 1 to 32 random bytes
        ("gnss", 0, "varying size"),  # text as a payload
    ],
)
def test_the_emulator_must_send_what_its_schema_decodes_at_its_own_size(payload, size, words):
    """payload_size 0 means the generator's own size: the board's emulator must
    not send frames of a declared type that its own schema cannot decode."""
    data = {
        "name": "mism",
        "codec": "fh1",
        "emulator": {"rate": 10.0, "payload": payload, "payload_size": size, "frame_type": 2},
        "schema": {"frames": [{"type": 2, "fields": [{"name": "t", "type": "f32", "count": 3}]}]},
    }
    with pytest.raises(BoardError, match=r"emulator\.payload_size") as caught:
        board_from_dict(data)
    assert words in str(caught.value) and "12 bytes" in str(caught.value)
    # its generator's size, or payload_size, matching the layout is fine
    board_from_dict({**data, "emulator": {**data["emulator"], "payload_size": 12}})
    board_from_dict({**data, "emulator": {**data["emulator"], "payload": "env"}})
