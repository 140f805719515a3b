"""lines codec: splitting, \\r handling, UTF-8 replacement, bounds, reset."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.codecs import Codec, CodecOptionError, LinesCodec
from tests import chunking
from tests.chunking import key, split_at

pytestmark = pytest.mark.timeout(30)

TS = 1763800001.0


def feed_all(codec: Codec, chunks: Iterable[bytes], ts: float = TS) -> list[tuple[object, ...]]:
    return chunking.feed_all(codec, chunks, ts)


def reference(stream: bytes, max_line: int = 4096) -> tuple[list[str], int]:
    """Texts of the complete lines and the rejected count, straight from the design."""
    *lines, tail = stream.split(b"\n")
    texts, rejected = [], 0
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if len(line) > max_line:
            rejected += 1
        else:
            texts.append(line.decode("utf-8", errors="replace"))
    if len(tail) > max_line + 1:  # the bound: an unterminated run counted once
        rejected += 1
    return texts, rejected


def test_basic_lines_and_frames() -> None:
    codec = LinesCodec("console")
    frames = codec.feed(b"boot\r\nready\nok 1\n", TS)
    assert [key(f) for f in frames] == [
        ("console", 0, None, TS, None, "boot"),
        ("console", 1, None, TS, None, "ready"),
        ("console", 2, None, TS, None, "ok 1"),
    ]
    assert (codec.rejected, codec.gaps) == (0, 0)


def test_only_one_trailing_cr_stripped_and_inner_cr_kept() -> None:
    codec = LinesCodec()
    assert [f.text for f in codec.feed(b"a\r\r\nb\rc\r\n\r\n", TS)] == ["a\r", "b\rc"]


def test_empty_lines_ignored() -> None:
    codec = LinesCodec()
    assert [f.seq for f in codec.feed(b"\n\n\r\nx\n\r\n\ny\n", TS)] == [0, 1]
    assert codec.rejected == 0


def test_invalid_utf8_is_replaced_not_rejected() -> None:
    codec = LinesCodec()
    frames = codec.feed(b"temp=21\xb0C\n\xff\xfe\nh\xc3\xa9\n", TS)
    assert [f.text for f in frames] == ["temp=21\ufffdC", "\ufffd\ufffd", "hé"]
    assert codec.rejected == 0


def test_max_line_boundary_in_bytes() -> None:
    codec = LinesCodec(max_line=8)
    frames = codec.feed(b"12345678\n123456789\n12345678\r\n" + "éééé\nééééé\n".encode(), TS)
    # 8 bytes fit (also with a \r), 9 don't; "éééé" is 8 bytes, "ééééé" is 10.
    assert [f.text for f in frames] == ["12345678", "12345678", "éééé"]
    assert codec.rejected == 2
    assert LinesCodec().max_line == 4096


@pytest.mark.parametrize("bad", [0, -5, True, "80", 3.0])
def test_bad_max_line(bad: object) -> None:
    with pytest.raises(CodecOptionError):
        LinesCodec(max_line=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [1000, 10 * 1024 * 1024])
def test_oversize_run_is_bounded_and_counted_once(chunk: int) -> None:
    codec = LinesCodec("c")
    assert [f.text for f in codec.feed(b"first\n", TS)] == ["first"]
    junk = b"x" * (10 * 1024 * 1024)
    for i in range(0, len(junk), chunk):
        assert codec.feed(junk[i : i + chunk], TS) == []
        assert len(codec._pending) <= codec.pending_limit
    assert codec.rejected == 1
    frames = codec.feed(b"tail of junk\nafter\n", TS)
    assert [(f.seq, f.text) for f in frames] == [(1, "after")]
    assert codec.rejected == 1


def test_oversize_line_complete_in_one_read_counts_once() -> None:
    codec = LinesCodec(max_line=4)
    assert [f.text for f in codec.feed(b"abcdefgh\nok\n", TS)] == ["ok"]
    assert codec.rejected == 1


def _mixed_stream(rng: random.Random) -> bytes:
    parts = []
    for _i in range(80):
        n = rng.choice([0, 1, 5, 31, 32, 33, 34, 100])
        body = bytes(rng.choice(b"abc \r\xc3\xa9\xff") for _ in range(n))
        parts.append(body + rng.choice([b"\n", b"\r\n"]))
    return b"".join(parts) + b"unterminated"


def test_every_two_way_split_and_random_chunks_give_identical_results() -> None:
    rng = random.Random(21)
    stream = _mixed_stream(rng)
    texts, rejected = reference(stream, max_line=32)
    whole = LinesCodec("c", max_line=32)
    expected = feed_all(whole, [stream])
    assert [k[5] for k in expected] == texts and whole.rejected == rejected > 0
    assert [k[1] for k in expected] == list(range(len(texts)))
    cuts: list[list[int]] = [[c] for c in range(len(stream) + 1)]
    cuts.append(list(range(1, len(stream))))  # byte by byte
    cuts += [sorted(rng.sample(range(len(stream)), rng.randint(1, 200))) for _ in range(100)]
    for cut in cuts:
        codec = LinesCodec("c", max_line=32)
        assert feed_all(codec, split_at(stream, cut)) == expected
        assert codec.rejected == rejected
        assert codec._pending == b"unterminated"


def test_reset_semantics() -> None:
    codec = LinesCodec("c")
    assert [f.seq for f in codec.feed(b"a\nb\npart", TS)] == [0, 1]
    codec.reset()
    assert codec.rejected == 1 and codec._pending == b""
    codec.reset()  # nothing pending: nothing counted
    assert codec.rejected == 1
    codec.feed(b"c\n\r", TS)
    codec.reset()  # a lone \r would have been an empty line
    assert codec.rejected == 1
    assert [f.seq for f in codec.feed(b"d\n", TS)] == [3]  # host seq survives reset
    assert codec.gaps == 0


def test_reset_during_oversize_run() -> None:
    codec = LinesCodec(max_line=4)
    codec.feed(b"x" * 20, TS)
    assert codec.rejected == 1
    codec.reset()
    assert codec.rejected == 1
    assert [f.text for f in codec.feed(b"new\n", TS)] == ["new"]


def test_encode() -> None:
    codec = LinesCodec(max_line=10)
    assert codec.encode(None, 0, "héllo") == "héllo\n".encode()
    assert codec.encode(None, 9, b"raw\r") == b"raw\r\n"
    assert [f.text for f in codec.feed(codec.encode(None, 0, "héllo"), TS)] == ["héllo"]
    with pytest.raises(ValueError):
        codec.encode(None, 0, "two\nlines")
    with pytest.raises(ValueError):
        codec.encode(None, 0, "x" * 11)


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(
        st.one_of(st.binary(max_size=50), st.sampled_from([b"\n", b"\r\n", b"\r", b"\xff", b"\xc3"])), max_size=40
    ).map(b"".join),
    cuts=st.lists(st.integers(0, 2000), max_size=15),
    max_line=st.integers(1, 40),
)
def test_any_stream_matches_reference_and_stays_bounded(stream: bytes, cuts: list[int], max_line: int) -> None:
    texts, rejected = reference(stream, max_line)
    codec = LinesCodec("d", max_line=max_line)
    got: list[str | None] = []
    for chunk in split_at(stream, [c for c in cuts if c <= len(stream)]):
        got.extend(f.text for f in codec.feed(chunk, TS))
        assert len(codec._pending) <= codec.pending_limit
    assert got == texts
    assert codec.rejected == rejected


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(st.tuples(st.binary(max_size=60), st.text(max_size=30)), max_size=12),
    cuts=st.lists(st.integers(0, 1500), max_size=10),
)
def test_lines_in_noise_are_recovered(items: list[tuple[bytes, str]], cuts: list[int]) -> None:
    max_line = 40
    stream = b""
    expected: list[str] = []
    junk = 0
    for noise, text in items:
        text = text.replace("\n", " ").removesuffix("\r")
        data = text.encode()
        if not data or len(data) > max_line:
            continue
        stream += noise + b"\n" + data + b"\n"
        noise_texts, noise_rejected = reference(b"\n" + noise + b"\n", max_line)
        expected += noise_texts
        junk += noise_rejected
        expected.append(text)
    codec = LinesCodec("d", max_line=max_line)
    assert [k[5] for k in feed_all(codec, split_at(stream, [c for c in cuts if c <= len(stream)]))] == expected
    assert codec.rejected == junk
