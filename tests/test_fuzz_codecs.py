"""Codec properties the per-codec tests (tests/test_codec_*.py) do not have yet.

Already covered there, with hypothesis, for all three codecs: any byte stream,
cut anywhere, never raises, matches a reference and keeps ``_pending`` within
``pending_limit``; valid frames embedded in noise are recovered. Missing, and
added here:

* round trip as a property: whatever a codec's ``encode`` accepts (every fh1
  type including the reserved ones, any seq with wrap, str bodies, empty and
  maximal payloads; any printable NMEA body with either start character; any
  line) comes back from ``feed`` exactly, whatever the chunking;
* reconnects anywhere: ``reset()`` (what the reader does when a port drops)
  at arbitrary byte positions of a stream of frames and noise. The result must
  equal a model that judges every delimited piece on its own with a fresh
  codec (the codec as its own single-packet oracle; packet validity itself is
  tested elsewhere): frames inside one connection all come back, a piece cut
  by a reset costs exactly one ``rejected`` on each side of the cut (none for a
  lone ``\\r`` or an empty packet), gaps are exactly the seq discontinuities of
  what was decoded, text seqs keep counting across resets, and ``_pending``
  stays bounded and is empty after every reset.
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware_host.codecs import Codec, Fh1Codec, LinesCodec, NmeaCodec, cobs, encode_packet
from firmware_host.frames import Frame
from tests.chunking import split_at

pytestmark = pytest.mark.timeout(60)

TS = 1763800002.75
MASK = 0xFFFFFFFF

PROPERTY = settings(max_examples=100, deadline=None)


def feed_chunks(codec: Codec, data: bytes, cuts: list[int]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in split_at(data, cuts):
        out.extend(codec.feed(chunk, TS))
        assert len(codec._pending) <= codec.pending_limit  # type: ignore[attr-defined]
    return out


def count_gaps(seqs: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seqs) if b != (a + 1) & MASK)


cuts_st = st.lists(st.integers(0, 6000), max_size=12)


# -- round trips -----------------------------------------------------------------------------

MAX_PAYLOAD = 300  # > 254: payloads cross a COBS block boundary

fh1_items = st.lists(
    st.tuples(
        st.integers(0, 0xFF),  # application and reserved types alike
        st.integers(0, 3).flatmap(lambda k: st.just(1) if k else st.integers(0, 2**33)),  # seq step, mostly +1
        st.one_of(
            st.binary(max_size=MAX_PAYLOAD),
            st.just(b"\x00" * MAX_PAYLOAD),
            st.just(b"\x01" * MAX_PAYLOAD),
            st.text(max_size=60).filter(lambda t: len(t.encode()) <= MAX_PAYLOAD),
        ),
    ),
    max_size=20,
)


@PROPERTY
@given(items=fh1_items, start=st.integers(0, 2**40), cuts=cuts_st)
# packets with no zero byte at all, longer than one COBS block (0xFF code bytes stand for no zero)
@example(
    items=[(1, 1, b"\x01" * MAX_PAYLOAD), (0xF3, 1, b"\xff" * 254), (2, 1, b"\x05" * 247)], start=0x01010100, cuts=[]
)
def test_fh1_round_trip(items: list[tuple[int, int, bytes | str]], start: int, cuts: list[int]) -> None:
    enc = Fh1Codec("imu0", max_payload=MAX_PAYLOAD)
    seq, wire, expected = start, b"", []
    for ftype, step, body in items:
        seq += step
        wire += enc.encode(ftype, seq, body)
        assert enc.encode(ftype, seq, body) == encode_packet(ftype, seq, body)
        payload = body.encode() if isinstance(body, str) else body
        expected.append(("imu0", seq & MASK, ftype, TS, payload, None))
    dec = Fh1Codec("imu0", max_payload=MAX_PAYLOAD)
    got = feed_chunks(dec, wire, cuts)
    assert [(f.device, f.seq, f.type, f.ts, f.payload, f.text) for f in got] == expected
    assert dec.rejected == 0
    assert dec.gaps == count_gaps([e[1] for e in expected])
    assert dec._pending == b""


def nmea_checksum_reference(body: str) -> int:
    return functools.reduce(operator.xor, body.encode("ascii"), 0)


printable_no_star = st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="*")


@PROPERTY
@given(
    items=st.lists(
        st.tuples(st.sampled_from(["", "$", "!"]), st.text(printable_no_star, max_size=80), st.booleans()), max_size=15
    ),
    max_line=st.integers(4, 90),
    cuts=cuts_st,
)
def test_nmea_round_trip(items: list[tuple[str, str, bool]], max_line: int, cuts: list[int]) -> None:
    enc = NmeaCodec("gps0", max_line=max_line)
    wire, expected = b"", []
    for start, body, as_bytes in items:
        text = start + body
        sentence_start, rest = (text[0], text[1:]) if text[:1] in ("$", "!") else ("$", text)
        sentence = f"{sentence_start}{rest}*{nmea_checksum_reference(rest):02X}"
        if len(sentence) > max_line:
            with pytest.raises(ValueError):
                enc.encode(None, 0, text)
            continue
        wire += enc.encode(None, 0, text.encode() if as_bytes else text)
        expected.append(sentence)
    dec = NmeaCodec("gps0", max_line=max_line)
    got = feed_chunks(dec, wire, cuts)
    assert [f.text for f in got] == expected
    assert [f.seq for f in got] == list(range(len(expected)))
    assert all(f.device == "gps0" and f.type is None and f.payload is None and f.ts == TS for f in got)
    assert (dec.rejected, dec.gaps) == (0, 0)


@PROPERTY
@given(
    items=st.lists(
        st.one_of(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")), st.text(max_size=30)), max_size=20
    ),
    max_line=st.integers(1, 70),
    cuts=cuts_st,
)
def test_lines_round_trip(items: list[bytes | str], max_line: int, cuts: list[int]) -> None:
    enc = LinesCodec("console", max_line=max_line)
    wire, expected = b"", []
    for body in items:
        raw = body.encode() if isinstance(body, str) else body
        if b"\n" in raw or len(raw) > max_line:
            with pytest.raises(ValueError):
                enc.encode(None, 0, body)
            continue
        wire += enc.encode(None, 0, body)
        line = raw.removesuffix(b"\r")  # one trailing \r is the CRLF convention, stripped
        if line:  # empty lines are ignored
            expected.append(line.decode("utf-8", "replace"))
    dec = LinesCodec("console", max_line=max_line)
    got = feed_chunks(dec, wire, cuts)
    assert [f.text for f in got] == expected
    assert [f.seq for f in got] == list(range(len(expected)))
    assert (dec.rejected, dec.gaps) == (0, 0)


# -- reconnects anywhere ------------------------------------------------------------------------


class Kind:
    def __init__(self, name: str, make: Callable[[], Codec], delim: bytes, frame: st.SearchStrategy[bytes]) -> None:
        self.name, self.make, self.delim, self.frame = name, make, delim, frame

    def __repr__(self) -> str:
        return self.name


_fh1 = Fh1Codec(max_payload=64)
_nmea = NmeaCodec(max_line=80)
_lines = LinesCodec(max_line=80)
KINDS = [
    Kind(
        "fh1",
        lambda: Fh1Codec("d", max_payload=64),
        b"\x00",
        st.builds(
            lambda t, s, p: _fh1.encode(t, s, p), st.integers(0, 255), st.integers(0, 40), st.binary(max_size=64)
        ),
    ),
    Kind(
        "nmea",
        lambda: NmeaCodec("d", max_line=80),
        b"\n",
        st.builds(lambda b: _nmea.encode(None, 0, b), st.text(printable_no_star, max_size=60)),
    ),
    Kind(
        "lines",
        lambda: LinesCodec("d", max_line=80),
        b"\n",
        st.builds(lambda b: _lines.encode(None, 0, b), st.binary(max_size=70).map(lambda b: b.replace(b"\n", b""))),
    ),
]


def model(kind: Kind, segments: list[bytes]) -> tuple[list[tuple[object, ...]], int]:
    """What a codec fed ``segments`` with a reset between them must produce:
    each delimited piece judged alone by a fresh codec; a non-empty partial
    piece at a reset is one rejected (text codecs: not a lone ``\\r``), and so
    is an unterminated tail at the end that outgrew the codec's pending limit
    (an oversize run counts when it overflows, not when it ends)."""
    frames: list[tuple[object, ...]] = []
    rejected = 0
    limit = kind.make().pending_limit  # type: ignore[attr-defined]
    for i, segment in enumerate(segments):
        *complete, partial = segment.split(kind.delim)
        for piece in complete:
            probe = kind.make()
            frames += [(f.type, f.payload, f.text, f.seq) for f in probe.feed(piece + kind.delim, TS)]
            rejected += probe.rejected
        last = i == len(segments) - 1
        if (not last and partial and not (kind.delim == b"\n" and partial == b"\r")) or (last and len(partial) > limit):
            rejected += 1
    return frames, rejected


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_reset_anywhere_loses_only_what_it_cuts(kind: Kind) -> None:
    noise = st.binary(max_size=40)

    @PROPERTY
    @given(
        items=st.lists(st.one_of(kind.frame, kind.frame, noise), max_size=25),
        resets=st.lists(st.integers(0, 3000), max_size=5),
        cuts=cuts_st,
    )
    @example(items=[b"\x00" * 82], resets=[], cuts=[])  # an oversize tail at the end (found by CI)
    def check(items: list[bytes], resets: list[int], cuts: list[int]) -> None:
        stream = b"".join(items)
        segments = split_at(stream, resets) or [b""]
        want_frames, want_rejected = model(kind, segments)
        codec = kind.make()
        got: list[Frame] = []
        offset = 0
        for i, segment in enumerate(segments):
            if i:
                codec.reset()  # the port dropped here; the reader reconnected
                assert codec._pending == b""  # type: ignore[attr-defined]
            got += feed_chunks(codec, segment, [c - offset for c in cuts])
            offset += len(segment)
        if kind.name == "fh1":
            assert [(f.type, f.payload, f.text, f.seq) for f in got] == want_frames
            assert codec.gaps == count_gaps([f.seq for f in got])
        else:
            # host seqs keep counting across resets
            assert [(f.type, f.payload, f.text) for f in got] == [w[:3] for w in want_frames]
            assert [f.seq for f in got] == list(range(len(got)))
            assert codec.gaps == 0
        assert codec.rejected == want_rejected
        assert all(f.device == "d" and f.ts == TS for f in got)

    check()


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_resets_between_frames_cost_nothing(kind: Kind) -> None:
    """A reconnect that falls between frames (the emulator's clean unplug) loses nothing."""

    @PROPERTY
    @given(frames=st.lists(kind.frame, min_size=1, max_size=20), data=st.data())
    def check(frames: list[bytes], data: st.DataObject) -> None:
        boundaries = list(range(len(frames) + 1))
        reset_at = set(data.draw(st.lists(st.sampled_from(boundaries), max_size=6)))
        whole = kind.make()
        expected = [(f.type, f.payload, f.text) for f in whole.feed(b"".join(frames), TS)]
        codec = kind.make()
        got = []
        for i, wire in enumerate(frames):
            if i in reset_at:
                codec.reset()
            got += [(f.type, f.payload, f.text) for f in codec.feed(wire, TS)]
        assert got == expected
        assert (codec.rejected, codec.gaps) == (whole.rejected, whole.gaps)

    check()


fh1_noisy_stream = st.lists(
    st.one_of(
        st.builds(encode_packet, st.integers(0, 255), st.integers(0, MASK), st.binary(max_size=300)),
        st.binary(max_size=40),  # noise, zeros included
        st.builds(
            lambda p, i: p[:i] + bytes([p[i] ^ 0x5A]) + p[i + 1 :] if i < len(p) else p,
            st.builds(encode_packet, st.just(0), st.integers(0, 9), st.binary(max_size=20)),
            st.integers(0, 40),
        ),  # a flipped byte: bad COBS or bad CRC
    ),
    max_size=30,
).map(b"".join)


@pytest.mark.skipif(cobs.compiled_decode is None, reason="corncobs is not installed (the [cobs] extra)")
@PROPERTY
@given(fh1_noisy_stream, cuts_st)
def test_fh1_compiled_and_pure_decoding_agree(data: bytes, cuts: list[int]) -> None:
    """The compiled COBS path changes speed, never a verdict: frames, rejected
    and gaps are the same as the pure-Python decoder's, whatever the chunking."""
    fast = Fh1Codec("d", max_payload=256)
    fast_frames = feed_chunks(fast, data, cuts)
    compiled = cobs.compiled_decode
    try:
        cobs.compiled_decode = None
        pure = Fh1Codec("d", max_payload=256)
        pure_frames = feed_chunks(pure, data, cuts)
    finally:
        cobs.compiled_decode = compiled
    assert [(f.seq, f.type, f.payload) for f in fast_frames] == [(f.seq, f.type, f.payload) for f in pure_frames]
    assert (fast.rejected, fast.gaps) == (pure.rejected, pure.gaps)


# -- the suite's hypothesis profile ---------------------------------------------------------


def test_suite_draws_repeatable_examples() -> None:
    """tests/conftest.py loads the "repeatable" profile unless HYPOTHESIS_PROFILE
    says otherwise: two runs of a property see the same examples."""
    if os.environ.get("HYPOTHESIS_PROFILE", "repeatable") != "repeatable":
        pytest.skip("another hypothesis profile was asked for")
    assert settings.default.derandomize and PROPERTY.derandomize

    def drawn() -> list[bytes]:
        seen: list[bytes] = []

        @given(st.binary(min_size=1, max_size=64))
        @settings(max_examples=20, deadline=None)
        def prop(data: bytes) -> None:
            seen.append(data)

        prop()
        return seen

    assert drawn() == drawn()
