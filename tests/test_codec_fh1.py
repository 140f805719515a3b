"""fh1 codec: round trips, chunking, recovery, counters, bounds, reset."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware_host.codecs import (
    BUILTIN_CODECS,
    Codec,
    CodecOptionError,
    Fh1Codec,
    LinesCodec,
    NmeaCodec,
    UbxCodec,
    cobs,
    encode_packet,
    fh1,
    make_codec,
)
from firmware_host.codecs.crc import crc16
from firmware_host.frames import Frame
from tests import chunking
from tests.chunking import key, random_chunks, split_at

pytestmark = pytest.mark.timeout(30)

TS = 1763800000.5


@pytest.fixture(autouse=True, params=["pure", "compiled"])
def cobs_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both COBS decoders of the hot path."""
    if request.param == "pure":
        monkeypatch.setattr(cobs, "compiled_decode", None)
    elif cobs.compiled_decode is None:
        pytest.skip("corncobs is not installed (the [cobs] extra)")
    return str(request.param)


def feed_all(codec: Codec, chunks: Iterable[bytes], ts: float = TS) -> list[tuple[object, ...]]:
    return chunking.feed_all(codec, chunks, ts)


# --- helpers --------------------------------------------------------------------


def raw_packet(version: int, frame_type: int, seq: int, payload: bytes, crc: int | None = None) -> bytes:
    """Build a decoded packet by hand from the table in the design."""
    body = struct.pack("<BBI", version, frame_type, seq) + payload
    if crc is None:
        crc = crc16(body)
    return body + struct.pack("<H", crc)


def wire(packet: bytes) -> bytes:
    return cobs.encode(packet) + b"\x00"


def counters(codec: Codec) -> tuple[int, int]:
    return codec.rejected, codec.gaps


# --- round trips ----------------------------------------------------------------


def test_round_trip_types_seqs_payloads() -> None:
    enc = Fh1Codec("imu0")
    dec = Fh1Codec("imu0")
    rng = random.Random(1)
    sent = []
    stream = b""
    for seq in range(300):
        ftype = rng.choice([0x00, 0x01, 0x7F, 0xEF, 0xF0, 0xF1, 0xF2, 0xF3])
        payload = rng.randbytes(rng.choice([0, 1, 2, 7, 253, 254, 255, 600, 1024]))
        sent.append(("imu0", seq, ftype, TS, payload, None))
        stream += enc.encode(ftype, seq, payload)
    assert feed_all(dec, [stream]) == sent
    assert counters(dec) == (0, 0)


def test_wire_layout_matches_design() -> None:
    payload = b"\x00hello\x00"
    expected_packet = b"\x01\x42" + (0x01020304).to_bytes(4, "little") + payload
    expected_packet += crc16(expected_packet).to_bytes(2, "little")
    wire_bytes = encode_packet(0x42, 0x01020304, payload)
    assert wire_bytes == cobs.encode(expected_packet) + b"\x00"
    assert wire_bytes.count(0) == 1 and wire_bytes.endswith(b"\x00")
    assert Fh1Codec().encode(0x42, 0x01020304, payload) == wire_bytes


def test_encode_str_payload_and_seq_wrap() -> None:
    codec = Fh1Codec("d")
    frames = codec.feed(codec.encode(0xF3, 2**32 + 5, "boot ok é"), TS)
    assert [(f.type, f.seq, f.payload) for f in frames] == [(0xF3, 5, "boot ok é".encode())]


def test_encode_rejects_bad_arguments() -> None:
    codec = Fh1Codec(max_payload=8)
    with pytest.raises(ValueError):
        codec.encode(1, 0, b"x" * 9)
    with pytest.raises(ValueError):
        codec.encode(256, 0, b"")
    with pytest.raises(ValueError):
        codec.encode(-1, 0, b"")
    with pytest.raises(ValueError):
        codec.encode(None, 0, b"")
    # encode_packet has no limit: fault injectors build oversize packets with it.
    assert encode_packet(1, 0, b"x" * 9)


def test_max_payload_boundary() -> None:
    codec = Fh1Codec("d", max_payload=16)
    ok = encode_packet(1, 0, b"\xaa" * 16)
    too_big = encode_packet(1, 1, b"\xaa" * 17)
    assert [f.payload for f in codec.feed(ok + too_big, TS)] == [b"\xaa" * 16]
    assert codec.rejected == 1


def test_empty_packets_are_ignored() -> None:
    codec = Fh1Codec("d")
    stream = b"\x00\x00\x00" + encode_packet(1, 0, b"a") + b"\x00\x00" + encode_packet(1, 1, b"b") + b"\x00"
    assert [f.payload for f in codec.feed(stream, TS)] == [b"a", b"b"]
    assert counters(codec) == (0, 0)


def test_frames_carry_device_and_ts() -> None:
    codec = Fh1Codec("gnss-7")
    (frame,) = codec.feed(encode_packet(3, 9, b"p"), 12.25)
    assert (frame.device, frame.ts, frame.text, frame.size) == ("gnss-7", 12.25, None, 1)


def test_decoded_frames_equal_frames_built_by_init() -> None:
    """The decoder builds frames without Frame.__init__: a field added to
    Frame must be added there too, or decoded frames would lack it."""
    assert sorted(Frame.__slots__) == [
        "_fields",
        "device",
        "payload",
        "seq",
        "text",
        "ts",
        "type",
        "values",
    ], "Frame's slots changed: update Fh1Codec._packets, which sets each one"
    (frame,) = Fh1Codec("d1").feed(encode_packet(0xF3, 0x01020304, b"log"), TS)
    expected = Frame("d1", 0x01020304, 0xF3, TS, b"log")
    assert type(frame) is Frame
    assert [getattr(frame, name) for name in Frame.__slots__] == [getattr(expected, name) for name in Frame.__slots__]


def test_crc_residue_tables_match_every_stored_crc() -> None:
    """The residue the decoder compares against, for all 65,536 stored CRCs."""
    assert len(fh1._RESIDUE) == 1 << 16
    for stored in range(1 << 16):
        assert fh1._RESIDUE[stored] == crc16(stored.to_bytes(2, "little"), stored)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 0xFFFF))
def test_only_the_right_crc_passes(payload: bytes, stored: int) -> None:
    good = raw_packet(1, 1, 1, payload)
    packet = good[:-2] + struct.pack("<H", stored)
    codec = Fh1Codec("d")
    frames = codec.feed(wire(packet), TS)
    if stored == crc16(good[:-2]):
        assert [f.payload for f in frames] == [payload] and codec.rejected == 0
    else:
        assert frames == [] and codec.rejected == 1


# --- each failure counted exactly once -------------------------------------------


def _between_good(bad: bytes, max_payload: int = 1024) -> Fh1Codec:
    """Feed good(0), bad, good(2): the bad one sits where seq 1 would be."""
    codec = Fh1Codec("d", max_payload=max_payload)
    stream = encode_packet(1, 0, b"first") + bad + encode_packet(1, 2, b"third")
    frames = codec.feed(stream, TS)
    assert [f.payload for f in frames] == [b"first", b"third"]
    return codec


def test_corrupted_crc_counted_once() -> None:
    good = raw_packet(1, 1, 1, b"second")
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    codec = _between_good(wire(bad))
    assert counters(codec) == (1, 1)  # and seq 0 -> 2 is one gap


def test_corrupted_payload_byte_counted_once() -> None:
    good = bytearray(raw_packet(1, 1, 1, b"second"))
    good[8] ^= 0x40
    assert counters(_between_good(wire(bytes(good)))) == (1, 1)


def test_bad_version_counted_once() -> None:
    for version in (0x00, 0x02, 0xFF):
        assert counters(_between_good(wire(raw_packet(version, 1, 1, b"second")))) == (1, 1)


def test_bad_cobs_counted_once() -> None:
    # The code byte claims more bytes than there are before the delimiter.
    assert counters(_between_good(b"\x09\x01\x01\x00")) == (1, 1)


def test_truncated_packet_counted_once() -> None:
    full = cobs.encode(raw_packet(1, 1, 1, b"second"))
    for cut in range(1, len(full)):
        assert counters(_between_good(full[:cut] + b"\x00")) == (1, 1), cut


def test_too_short_packet_counted_once() -> None:
    # Valid COBS, right version, but fewer than 8 decoded bytes.
    for raw in (b"\x01", b"\x01\x01\x01\x00\x00\x00", b"\x01\x01\x01\x00\x00\x00\x00"):
        assert counters(_between_good(wire(raw))) == (1, 1)


def test_noise_between_frames_is_recovered() -> None:
    rng = random.Random(99)
    codec = Fh1Codec("d")
    stream, expected, noise_runs = b"", [], 0
    for seq in range(200):
        if seq % 3 == 0:
            noise = bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 40)))
            stream += noise + b"\x00"  # a run of junk, ended by a delimiter
            noise_runs += 1
        payload = rng.randbytes(rng.randint(0, 50))
        stream += encode_packet(5, seq, payload)
        expected.append(payload)
    frames = codec.feed(stream, TS)
    assert [f.payload for f in frames] == expected
    assert counters(codec) == (noise_runs, 0)


def test_junk_glued_to_a_packet_loses_only_that_packet() -> None:
    codec = Fh1Codec("d")
    stream = encode_packet(1, 0, b"a") + b"\x13\x37" + encode_packet(1, 1, b"b") + encode_packet(1, 2, b"c")
    assert [f.payload for f in codec.feed(stream, TS)] == [b"a", b"c"]
    assert counters(codec) == (1, 1)


# --- gaps -------------------------------------------------------------------------


def _gaps(seqs: list[int]) -> Fh1Codec:
    codec = Fh1Codec("d")
    frames = codec.feed(b"".join(encode_packet(1, s, b"") for s in seqs), TS)
    assert [f.seq for f in frames] == seqs  # frames are kept whatever the gaps
    return codec


@pytest.mark.parametrize(
    ("seqs", "gaps"),
    [
        ([1000], 0),  # the first frame never counts a gap
        ([0, 1, 2, 3], 0),
        ([0, 1, 2, 5, 6, 10], 2),  # once per discontinuity, not per lost frame
        ([0, 1000000], 1),
        ([0xFFFFFFFE, 0xFFFFFFFF, 0, 1], 0),  # wrap is not a gap
        ([0xFFFFFFFF, 1], 1),
        ([5, 5], 1),  # a repeat is a discontinuity too
        ([7, 6], 1),
        ([3, 4, 0, 1], 1),  # device restarted its counter
    ],
)
def test_gap_counting(seqs: list[int], gaps: int) -> None:
    codec = _gaps(seqs)
    assert counters(codec) == (0, gaps)


def test_gaps_across_feeds() -> None:
    codec = Fh1Codec("d")
    codec.feed(encode_packet(1, 10, b""), TS)
    codec.feed(encode_packet(1, 11, b""), TS)
    codec.feed(encode_packet(1, 13, b""), TS)
    assert codec.gaps == 1


# --- chunking invariance -------------------------------------------------------------


def _mixed_stream(rng: random.Random, max_payload: int) -> bytes:
    """Good frames, gaps, junk, empty packets, corrupt and oversize packets."""
    parts = [b"\x13\x37"]  # starts mid-packet, like a reader attached late
    seq = 0xFFFFFFF0
    for i in range(40):
        kind = i % 8
        if kind == 3:
            parts.append(bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 20))) + b"\x00")
        elif kind == 5:
            bad = bytearray(raw_packet(1, 2, seq & 0xFFFFFFFF, rng.randbytes(5)))
            bad[-1] ^= 0xFF
            parts.append(wire(bytes(bad)))
        elif kind == 6:
            parts.append(encode_packet(1, seq, b"\x55" * (max_payload + rng.randint(1, 30))))
        elif kind == 7:
            parts.append(b"\x00")
            seq += rng.choice([1, 2])
        parts.append(encode_packet(rng.randrange(0, 256), seq & 0xFFFFFFFF, rng.randbytes(rng.randint(0, max_payload))))
        seq += 1
    return b"".join(parts)


def test_every_two_way_split_gives_identical_results() -> None:
    rng = random.Random(5)
    stream = _mixed_stream(rng, max_payload=24)
    whole = Fh1Codec("d", max_payload=24)
    expected = feed_all(whole, [stream])
    expected_counters = counters(whole)
    # The first packet is glued to the leading junk and lost; the other 39 decode.
    assert len(expected) == 39 and expected_counters[0] > 0 and expected_counters[1] > 0
    for cut in range(len(stream) + 1):
        codec = Fh1Codec("d", max_payload=24)
        assert feed_all(codec, split_at(stream, [cut])) == expected, cut
        assert counters(codec) == expected_counters, cut


def test_byte_by_byte_and_random_chunks_give_identical_results() -> None:
    rng = random.Random(6)
    stream = _mixed_stream(rng, max_payload=24)
    whole = Fh1Codec("d", max_payload=24)
    expected = feed_all(whole, [stream])
    one = Fh1Codec("d", max_payload=24)
    assert feed_all(one, [stream[i : i + 1] for i in range(len(stream))]) == expected
    assert counters(one) == counters(whole)
    for _ in range(200):
        codec = Fh1Codec("d", max_payload=24)
        assert feed_all(codec, random_chunks(stream, rng, rng.choice([3, 40, 400]))) == expected
        assert counters(codec) == counters(whole)
        assert len(codec._pending) <= codec.pending_limit


# --- memory bound ----------------------------------------------------------------------


def test_pending_limit_is_the_largest_legal_packet() -> None:
    codec = Fh1Codec(max_payload=1024)
    assert codec.pending_limit == cobs.max_encoded_len(8 + 1024)
    biggest = encode_packet(1, 0, b"\x01" * 1024)
    assert len(biggest) - 1 <= codec.pending_limit
    # A maximal packet fed in small pieces is never cut off.
    frames = feed_all(codec, [biggest[i : i + 7] for i in range(0, len(biggest), 7)])
    assert len(frames) == 1 and codec.rejected == 0


@pytest.mark.parametrize("chunk", [65536, 10 * 1024 * 1024])
def test_oversize_run_is_bounded_and_counted_once(chunk: int) -> None:
    codec = Fh1Codec("d")
    codec.feed(encode_packet(1, 0, b"before"), TS)
    junk = b"\x5a" * (10 * 1024 * 1024)
    for i in range(0, len(junk), chunk):
        assert codec.feed(junk[i : i + chunk], TS) == []
        assert len(codec._pending) <= codec.pending_limit
    assert codec.rejected == 1
    # The delimiter ends the run without another count; the next packet decodes.
    frames = codec.feed(b"\x00" + encode_packet(1, 1, b"after"), TS)
    assert [f.payload for f in frames] == [b"after"]
    assert counters(codec) == (1, 0)


def test_oversize_run_ending_in_the_same_read() -> None:
    codec = Fh1Codec("d", max_payload=16)
    frames = codec.feed(b"\x22" * 500 + b"\x00" + encode_packet(1, 0, b"ok"), TS)
    assert [f.payload for f in frames] == [b"ok"]
    assert codec.rejected == 1


def test_oversize_run_starting_with_pending_tail() -> None:
    codec = Fh1Codec("d", max_payload=16)
    codec.feed(b"\x22" * 10, TS)
    codec.feed(b"\x22" * 30, TS)
    assert codec.rejected == 1 and codec._pending == b""
    codec.feed(b"\x22" * 30, TS)
    assert codec.rejected == 1
    assert [f.seq for f in codec.feed(b"\x00" + encode_packet(1, 4, b""), TS)] == [4]
    assert codec.rejected == 1


# --- reset ------------------------------------------------------------------------------------


def test_reset_without_partial_counts_nothing() -> None:
    codec = Fh1Codec("d")
    codec.feed(encode_packet(1, 0, b"x"), TS)
    codec.reset()
    codec.reset()
    assert counters(codec) == (0, 0)


def test_reset_with_partial_counts_one_and_keeps_seq() -> None:
    codec = Fh1Codec("d")
    codec.feed(encode_packet(1, 0, b"x"), TS)
    codec.feed(encode_packet(1, 1, b"y")[:4], TS)  # unplugged mid-packet
    codec.reset()
    assert codec.rejected == 1 and codec._pending == b""
    # Reconnected: seq 1 never arrived whole, so 0 -> 2 is a gap across the reconnect.
    frames = codec.feed(encode_packet(1, 2, b"z"), TS)
    assert [f.seq for f in frames] == [2]
    assert counters(codec) == (1, 1)
    codec.feed(encode_packet(1, 3, b""), TS)
    assert counters(codec) == (1, 1)


def test_reset_during_oversize_run_does_not_count_again() -> None:
    codec = Fh1Codec("d", max_payload=16)
    codec.feed(b"\x44" * 100, TS)
    assert codec.rejected == 1
    codec.reset()
    assert codec.rejected == 1
    # The new connection is not skipping any more.
    assert [f.seq for f in codec.feed(encode_packet(1, 0, b""), TS)] == [0]


def test_reset_then_tail_of_old_packet_counts_once_more() -> None:
    codec = Fh1Codec("d")
    packet = encode_packet(1, 0, b"payload")
    codec.feed(packet[:5], TS)
    codec.reset()
    frames = codec.feed(packet[5:] + encode_packet(1, 1, b"next"), TS)
    assert [f.payload for f in frames] == [b"next"]
    assert codec.rejected == 2


# --- options and registry --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "1024", 2**40])
def test_bad_max_payload(bad: object) -> None:
    with pytest.raises(CodecOptionError):
        Fh1Codec("d", max_payload=bad)  # type: ignore[arg-type]


def test_make_codec_builtins_and_options() -> None:
    assert {"fh1": Fh1Codec, "nmea": NmeaCodec, "lines": LinesCodec, "ubx": UbxCodec} == BUILTIN_CODECS
    codec = make_codec("fh1", "imu0", {"max_payload": 64})
    assert isinstance(codec, Fh1Codec) and codec.device == "imu0" and codec.max_payload == 64
    assert isinstance(make_codec("nmea", "g", {}), NmeaCodec)
    assert make_codec("lines", "c", {"max_line": 10}).max_line == 10  # type: ignore[attr-defined]
    assert make_codec("lines", "c", None).max_line == 4096  # type: ignore[attr-defined]
    with pytest.raises(CodecOptionError, match="max_line"):
        make_codec("fh1", "imu0", {"max_line": 64})
    with pytest.raises(
        CodecOptionError, match=r"^codec 'fh1': option 'max_payload': expected an integer, got \"big\"$"
    ):
        make_codec("fh1", "imu0", {"max_payload": "big"})
    with pytest.raises(CodecOptionError, match=r"^codec 'nmea': option 'max_line': expected an integer > 0, got 0$"):
        make_codec("nmea", "g", {"max_line": 0})


def test_make_codec_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown codec 'mavlink' \(known: fh1, lines, nmea, ubx\)") as info:
        make_codec("mavlink", "d", {})
    assert not isinstance(info.value, KeyError)


def test_make_codec_registry() -> None:
    class Echo(Codec):
        name = "echo"
        options = {"width": int}

        def __init__(self, device: str = "", *, width: int = 1) -> None:
            super().__init__(device)
            self.width = width

        def feed(self, data: bytes, ts: float) -> list[Frame]:
            return []

        def reset(self) -> None:
            pass

        def encode(self, frame_type: int | None, seq: int, body: bytes | str) -> bytes:
            return b""

    registry = {"echo": Echo}
    codec = make_codec("echo", "d", {"width": 3}, registry)
    assert isinstance(codec, Echo) and codec.width == 3
    assert isinstance(make_codec("fh1", "d", {}, registry), Fh1Codec)  # built-ins still found
    with pytest.raises(CodecOptionError):
        make_codec("echo", "d", {"height": 3}, registry)
    with pytest.raises(ValueError, match="echo, fh1"):
        make_codec("nope", "d", {}, registry)
    # A factory that declares no options gets them unchecked; its TypeError is reported clearly.
    assert make_codec("bare", "d", {"width": 2}, {"bare": lambda device, **kw: Echo(device, **kw)}).width == 2  # type: ignore[attr-defined]
    with pytest.raises(CodecOptionError, match="rejected options x"):
        make_codec("bare", "d", {"x": 1}, {"bare": lambda device: Echo(device)})
    with pytest.raises(TypeError):
        make_codec("broken", "d", {}, {"broken": lambda device: object()})


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=20))
def test_any_stream_never_raises_and_stays_bounded(data: bytes, cuts: list[int]) -> None:
    whole = Fh1Codec("d", max_payload=32)
    expected = feed_all(whole, [data])
    codec = Fh1Codec("d", max_payload=32)
    got: list[tuple[object, ...]] = []
    for chunk in split_at(data, [c for c in cuts if c <= len(data)]):
        got.extend(key(f) for f in codec.feed(chunk, TS))
        assert len(codec._pending) <= codec.pending_limit
    assert got == expected
    assert counters(codec) == counters(whole)
    codec.reset()
    assert codec._pending == b""


def _decodes_alone(piece: bytes) -> bool:
    return bool(Fh1Codec("probe").feed(piece + b"\x00", TS))


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.binary(max_size=40), st.integers(0, 255), st.binary(max_size=64)),
        max_size=15,
    ),
    start_seq=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_valid_frames_in_noise_are_recovered(
    items: list[tuple[bytes, int, bytes]], start_seq: int, cuts: list[int]
) -> None:
    stream = b""
    expected = []
    junk_runs = 0
    for i, (noise, ftype, payload) in enumerate(items):
        pieces = [p for p in noise.split(b"\x00") if p]
        assume(not any(_decodes_alone(p) for p in pieces))
        junk_runs += len(pieces)
        seq = (start_seq + i) & 0xFFFFFFFF
        # Noise is delimited by 0x00 on both sides, so it cannot swallow a frame.
        stream += b"\x00" + noise + b"\x00" + encode_packet(ftype, seq, payload)
        expected.append(("d", seq, ftype, TS, payload, None))
    codec = Fh1Codec("d", max_payload=64)
    assert feed_all(codec, split_at(stream, [c for c in cuts if c <= len(stream)])) == expected
    assert counters(codec) == (junk_runs, 0)
