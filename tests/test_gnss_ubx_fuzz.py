"""The ``ubx`` codec under hypothesis, as tests/test_fuzz_codecs.py does the others:
any bytes cut anywhere never raise and keep the pending tail bounded; mixed
streams split as pyubx2's ``UBXReader`` splits them, whatever the chunking;
packets between stray bytes all come back, one ``rejected`` per stray run;
one damaged packet costs exactly one ``rejected`` and nothing else."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.codecs.ubx import UbxCodec, rtcm3_frame, ubx_packet
from firmware_host.frames import Frame
from tests.chunking import split_at

pyubx2 = pytest.importorskip("pyubx2")

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=150, deadline=None)
MAX_PAYLOAD = 512

ubx_st = st.builds(
    lambda c, i, p: ubx_packet(c, i, p), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300)
)
# pyubx2 takes only the first 12 bits as a number: any message of at least 2 bytes
rtcm_st = st.binary(min_size=2, max_size=300).map(rtcm3_frame)
# sentences as receivers send them: talker and type, then fields (pyubx2 knows a
# sentence by its first two characters, "$G…", "$P…")
nmea_st = st.builds(
    lambda talker, kind, rest: UbxCodec().encode(None, 0, f"{talker}{kind},{rest}"),
    st.sampled_from(["GP", "GN", "GL", "GA", "GB", "P"]),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=4),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="*$"), max_size=80),
)
packets_st = st.lists(st.one_of(ubx_st, rtcm_st, nmea_st), max_size=12)
# stray bytes that contain no sync byte (B5, $, D3)
stray_st = st.binary(min_size=1, max_size=20).map(lambda b: bytes(x for x in b if x not in (0xB5, 0x24, 0xD3)))
cuts_st = st.lists(st.integers(0, 8000), max_size=12)


def feed(codec: UbxCodec, data: bytes, cuts: list[int]) -> list[Frame]:
    frames: list[Frame] = []
    for chunk in split_at(data, cuts):
        frames.extend(codec.feed(chunk, 0.0))
        assert len(codec._pending) <= codec.pending_limit
    return frames


def wire(frame: Frame) -> bytes:
    return frame.payload if frame.payload is not None else (frame.text or "").encode() + b"\r\n"


@PROPERTY
@given(data=st.binary(max_size=4000), cuts=cuts_st, resets=st.lists(st.integers(0, 4000), max_size=3))
def test_any_bytes_never_raise_and_pending_stays_bounded(data, cuts, resets):
    codec = UbxCodec("g", max_payload=MAX_PAYLOAD)
    frames: list[Frame] = []
    for k, piece in enumerate(split_at(data, sorted(resets))):
        frames.extend(feed(codec, piece, cuts))
        if k:
            codec.reset()
            assert codec._pending == b""
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert all(wire(f) in data for f in frames)


@PROPERTY
@given(packets=packets_st, cuts=cuts_st)
def test_mixed_streams_split_as_pyubx2_splits_them(packets, cuts):
    stream = b"".join(packets)
    codec = UbxCodec("g", max_payload=MAX_PAYLOAD)
    frames = feed(codec, stream, cuts)
    reader = pyubx2.UBXReader(io.BytesIO(stream), protfilter=7, quitonerror=0, parsing=0)
    assert [wire(f) for f in frames] == packets == [raw for raw, _ in reader]
    assert codec.rejected == 0 and codec._pending == b""


@PROPERTY
@given(
    items=st.lists(st.tuples(stray_st, st.one_of(ubx_st, rtcm_st, nmea_st)), max_size=10), tail=stray_st, cuts=cuts_st
)
def test_packets_between_stray_bytes_come_back_one_rejected_per_run(items, tail, cuts):
    stream = b"".join(stray + packet for stray, packet in items) + tail
    codec = UbxCodec("g", max_payload=MAX_PAYLOAD)
    frames = feed(codec, stream, cuts)
    assert [wire(f) for f in frames] == [packet for _, packet in items]
    assert codec.rejected == sum(1 for stray, _ in items if stray) + (1 if tail else 0)


@PROPERTY
@given(packets=st.lists(st.one_of(ubx_st, rtcm_st), min_size=1, max_size=8), which=st.integers(0, 7),
       at=st.integers(0, 10**6), bit=st.integers(0, 7), stray=st.one_of(st.just(b""), stray_st),
       cuts=cuts_st)  # fmt: skip
def test_one_damaged_packet_costs_exactly_one_rejected(packets, which, at, bit, stray, cuts):
    """A damaged packet costs exactly one rejected, and stray bytes right after it one more."""
    which %= len(packets)
    damaged = bytearray(packets[which])
    # a bit of the payload or the checksum: the header (and so the length) stays
    head = 6 if damaged[0] == 0xB5 else 3
    at = head + at % (len(damaged) - head)
    damaged[at] ^= 1 << bit
    stream = b"".join(bytes(damaged) + stray if k == which else p for k, p in enumerate(packets))
    codec = UbxCodec("g", max_payload=MAX_PAYLOAD)
    frames = feed(codec, stream, cuts)
    assert [wire(f) for f in frames] == [p for k, p in enumerate(packets) if k != which]
    assert codec.rejected == 1 + (1 if stray else 0)
