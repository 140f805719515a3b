"""The jsonl sink: the record shape, whole lines only, repair of a torn tail."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import Frame
from firmware_host.sinks.jsonl import JsonlSink, repair_tail
from firmware_host.sinks.writer import WriterBusy
from tests.conftest import fill, read_jsonl

pytestmark = pytest.mark.timeout(10)


async def test_record_shape(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path=str(path))
    await sink.open()
    await sink.write(
        [
            Frame("imu0", 17, 0, 1763800000.123456, payload=b"\x00\x01\xff"),
            Frame('gps"0', 3, None, 1763800000.5, text="$GPGGA,1*00 ünï"),
        ]
    )
    await sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    binary, text = (json.loads(line) for line in lines)
    assert binary == {
        "device": "imu0",
        "seq": 17,
        "type": 0,
        "ts": 1763800000.123456,
        "payload": base64.b64encode(b"\x00\x01\xff").decode(),
    }
    assert text == {"device": 'gps"0', "seq": 3, "type": None, "ts": 1763800000.5, "text": "$GPGGA,1*00 ünï"}


def test_repair_tail(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": 3')  # a crash mid-line
    assert repair_tail(str(path)) == len(b'{"c": 3')
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert repair_tail(str(path)) == 0
    path.write_bytes(b"x" * 200_000)  # no newline at all
    assert repair_tail(str(path)) == 200_000 and path.read_bytes() == b""
    assert repair_tail(str(tmp_path / "missing")) == 0


async def test_open_repairs_then_appends(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"torn')
    sink = JsonlSink(path=str(path))
    await sink.open()
    await sink.write([Frame("d", 0, 1, 1.0, payload=b"")])
    await sink.close()
    assert [json.loads(line)["device"] if "device" in line else line for line in path.read_text().splitlines()] == [
        '{"a": 1}',
        "d",
    ]


async def test_failed_write_leaves_no_partial_line(tiny_fs):
    """A real full filesystem: the batch that does not fit is taken back
    whole, the lines before it stay, and once there is room the retry lands."""
    path = tiny_fs / "out.jsonl"
    sink = JsonlSink(path=str(path))
    await sink.open()
    await sink.write([Frame("d", 0, 1, 1.0, payload=b"first")])
    before = path.read_bytes()
    filler = fill(tiny_fs)
    with pytest.raises(OSError):
        await sink.write([Frame("d", i, 1, 1.0, payload=b"x" * 1000) for i in range(1, 101)])
    assert path.read_bytes() == before
    filler.unlink()
    await sink.write([Frame("d", i, 1, 1.0, payload=b"x" * 1000) for i in range(1, 101)])
    await sink.close()
    assert [r["seq"] for r in read_jsonl(path)] == list(range(101))


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
async def test_a_path_that_is_not_a_regular_file_is_refused_at_open(tmp_path, kind):
    """Never a hang on a FIFO nobody reads, never a write into a device."""
    path = tmp_path / "out.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/null")
    sink = JsonlSink(path=str(path))
    with pytest.raises(OSError, match="not a regular file"):
        await asyncio.wait_for(sink.open(), 5)
    await sink.close()


def test_options_are_validated():
    with pytest.raises(ValueError, match="path"):
        JsonlSink()
    with pytest.raises(ValueError, match="unknown option"):
        JsonlSink(path="x", colour="red")
    with pytest.raises(ValueError, match="fsync"):
        JsonlSink(path="x", fsync="yes")


def test_device_name_cache_is_bounded_and_never_mixes_names():
    """Quoted device names are cached across batches; a plugin inventing a
    name per frame must not grow the cache without bound or garble a line."""
    from firmware_host.sinks import jsonl

    names = [f'dev "{i}" \\ é' for i in range(jsonl._NAMES_MAX + 500)]
    for start in range(0, len(names), 1000):
        batch = [Frame(n, i, 1, 1.5, payload=b"x") for i, n in enumerate(names[start : start + 1000])]
        lines = jsonl.encode_records(batch).decode("utf-8").splitlines()
        assert [json.loads(line)["device"] for line in lines] == [f.device for f in batch]
        assert len(jsonl._NAMES) <= jsonl._NAMES_MAX


# frames as they come from reads: runs sharing one device, one ts object and
# a type, broken anywhere; names a %-template could misread; text frames and
# non-int types among them
_DEVICES = ["imu0", "a%d", "%%b %s", 'q"\\', "ü%"]
#: a plugin codec's frame types that are not ints: each line is still JSON (a
#: None type once wrote `"type": None`)
_ODD_TYPES: dict[str, object] = {"float type": 2.5, "none type": None, "str type": 'gga"%s', "bool type": True}
_TS = [1763800000.123456, 1763800000.5, 0.0, 1e-7]
_frame = st.builds(
    lambda dev, seq, ts, kind, data: (
        Frame(_DEVICES[dev], seq, kind, _TS[ts], payload=data)
        if isinstance(kind, int)
        else Frame(_DEVICES[dev], seq, None, _TS[ts], text=data.decode("latin-1"))
        if kind == "text"
        else Frame(_DEVICES[dev], seq, _ODD_TYPES[kind], _TS[ts], payload=data)
    ),
    st.integers(0, len(_DEVICES) - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, len(_TS) - 1),
    st.sampled_from([0, 0, 7, 255, "text", *_ODD_TYPES]),
    st.binary(max_size=70),
).flatmap(
    # decoded fields on some: a run may mix frames with and without them
    lambda f: st.builds(
        lambda fields: Frame(f.device, f.seq, f.type, f.ts, f.payload, f.text, fields),
        st.none() | st.dictionaries(st.sampled_from(["t", "é", 'q"%b']), st.floats(-1e6, 1e6) | st.text(max_size=4)),
    )
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_frame, st.integers(1, 30)), max_size=12))
def test_every_line_spells_its_own_frame(runs: list[tuple[Frame, int]]) -> None:
    """Each frame's line carries exactly its own fields, however the
    per-run templates are shared and rebuilt."""
    from firmware_host.sinks.jsonl import encode_records

    frames = []
    for proto, count in runs:  # a run: frames that share device, ts and type objects
        frames += [
            Frame(
                proto.device,
                (proto.seq + k) % 2**32,
                proto.type,
                proto.ts,
                proto.payload,
                proto.text,
                proto.fields if k % 3 else None,
            )
            for k in range(count)
        ]
    lines = encode_records(frames).decode("utf-8").split("\n")
    assert lines.pop() == ""
    assert len(lines) == len(frames)
    for line, f in zip(lines, frames):
        record = json.loads(line)
        assert list(record)[:4] == ["device", "seq", "type", "ts"]
        assert (record["device"], record["seq"], record["type"]) == (f.device, f.seq, f.type)
        assert record["ts"] == float(f"{f.ts:.6f}")
        if f.payload is not None:
            assert base64.b64decode(record["payload"]) == f.payload and "text" not in record
        else:
            assert record["text"] == f.text and "payload" not in record
        assert record.get("fields") == f.fields
        if f.fields is not None:
            assert list(record)[-1] == "fields"


@pytest.mark.parametrize("how", ["deleted", "renamed"])
async def test_a_path_that_no_longer_names_the_file_is_reopened(tmp_path, how):
    """Deleted or rotated away while running: the next batch goes to the
    path again, not into the unlinked (or renamed) inode."""
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path=str(path))
    await sink.open()
    await sink.write([Frame("d", 0, 1, 1.0, payload=b"a")])
    if how == "deleted":
        path.unlink()
    else:
        path.rename(tmp_path / "out.jsonl.1")
    await sink.write([Frame("d", 1, 1, 1.0, payload=b"b")])
    await sink.close()
    assert [r["seq"] for r in read_jsonl(path)] == [1]
    if how == "renamed":
        assert [r["seq"] for r in read_jsonl(tmp_path / "out.jsonl.1")] == [0]
    assert sink.reopens == 1


async def test_reopen_takes_the_path_again_at_the_next_batch(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path=str(path))
    await sink.open()
    await sink.write([Frame("d", 0, 1, 1.0, payload=b"a")])
    await sink.reopen()
    await sink.write([Frame("d", 1, 1, 1.0, payload=b"b")])
    await sink.close()
    assert sink.reopens == 1
    assert [r["seq"] for r in read_jsonl(path)] == [0, 1]


async def test_no_second_write_while_an_abandoned_one_still_runs(tmp_path):
    """A thread cannot be cancelled: after a timed-out write the sink refuses
    the next one until the thread has returned, so lines never interleave."""
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path=str(path))
    await sink.open()
    release = threading.Event()
    real = sink._write_bytes

    def slow(data: bytes) -> None:
        release.wait(5)
        real(data)

    sink._write_bytes = slow  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sink.write([Frame("d", 0, 1, 1.0, payload=b"a")]), 0.05)
    with pytest.raises(WriterBusy):
        await sink.write([Frame("d", 1, 1, 1.0, payload=b"b")])
    release.set()
    while sink._writer.busy:  # the abandoned write lands on its own
        await asyncio.sleep(0.01)
    sink._write_bytes = real  # type: ignore[method-assign]
    await sink.write([Frame("d", 1, 1, 1.0, payload=b"b")])
    await sink.close()
    assert [r["seq"] for r in read_jsonl(path)] == [0, 1]
