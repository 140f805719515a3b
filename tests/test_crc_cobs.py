"""CRC-16/CCITT-FALSE and COBS: check values, known vectors, round trips."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.codecs import cobs
from firmware_host.codecs.crc import CRC16_CHECK, crc16

pytestmark = pytest.mark.timeout(30)


# --- pure-python references (deliberately naive) -----------------------------


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, one bit at a time, straight from the definition."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_TABLE = _make_table()


def crc16_table(data: bytes) -> int:
    """Table-driven (MSB-first) reference."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ byte]
    return crc


# --- CRC ----------------------------------------------------------------------


def test_crc_check_value() -> None:
    assert CRC16_CHECK == 0x29B1
    assert crc16(b"123456789") == 0x29B1
    assert crc16_bitwise(b"123456789") == 0x29B1
    assert crc16_table(b"123456789") == 0x29B1


def test_crc_of_empty_is_init() -> None:
    assert crc16(b"") == 0xFFFF


def test_crc_matches_references_on_random_data() -> None:
    rng = random.Random(1234)
    for length in [*range(40), 253, 254, 255, 1024, 1032, 4000]:
        data = rng.randbytes(length)
        expected = crc16_bitwise(data)
        assert crc16(data) == expected == crc16_table(data), length


def test_crc_accepts_buffers_and_continues() -> None:
    data = bytes(range(256)) * 3
    assert crc16(bytearray(data)) == crc16(memoryview(data)) == crc16(data)
    for cut in (0, 1, 100, len(data)):
        assert crc16(data[cut:], crc16(data[:cut])) == crc16(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_crc_property(data: bytes) -> None:
    assert crc16(data) == crc16_bitwise(data)


# --- COBS ---------------------------------------------------------------------

_R = bytes(range(1, 256))  # 0x01..0xFF

# Vectors from the COBS paper / Wikipedia's "Consistent Overhead Byte Stuffing".
VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (_R[:254], b"\xff" + _R[:254]),
    (b"\x00" + _R[:254], b"\x01\xff" + _R[:254]),
    (_R, b"\xff" + _R[:254] + b"\x02\xff"),
    (_R[1:] + b"\x00", b"\xff" + _R[1:] + b"\x01\x01"),
    (_R[2:] + b"\x00\x01", b"\xfe" + _R[2:] + b"\x02\x01"),
]


@pytest.mark.parametrize(("raw", "encoded"), VECTORS)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs.encode(raw) == encoded
    assert cobs.decode(encoded) == raw
    assert len(encoded) <= cobs.max_encoded_len(len(raw))


def test_cobs_round_trip_around_block_boundaries() -> None:
    rng = random.Random(7)
    for length in [*range(20), 252, 253, 254, 255, 256, 507, 508, 509, 762, 1032, 3000]:
        for zero_rate in (0.0, 0.01, 0.3, 1.0):
            raw = bytes(0 if rng.random() < zero_rate else rng.randrange(1, 256) for _ in range(length))
            enc = cobs.encode(raw)
            assert b"\x00" not in enc
            assert len(enc) <= cobs.max_encoded_len(length)
            assert cobs.decode(enc) == raw


def test_cobs_max_encoded_len_is_reached_but_not_exceeded() -> None:
    # The bound by hand: n bytes with no zero need ceil(n / 254) code bytes (at least
    # one); when n is a non-zero multiple of 254 some encoders add a trailing 0x01 block.
    bounds = {0: 1, 1: 2, 253: 254, 254: 256, 255: 257, 508: 511, 1032: 1037}
    for n, bound in bounds.items():
        assert cobs.max_encoded_len(n) == bound, n
        worst = cobs.encode(b"\x01" * n)  # no zeros: the longest minimal encoding
        if n and n % 254 == 0:
            # the minimal encoding is one byte short of it; the trailing-0x01 variant reaches it
            assert len(worst) == bound - 1, n
            variant = worst + b"\x01"
            assert len(variant) == bound and cobs.decode(variant) == b"\x01" * n
        else:
            assert len(worst) == bound, n  # reached
    # not exceeded: any mix of zeros stays within it
    rng = random.Random(11)
    for n in (1, 253, 254, 255, 508, 1032):
        for _ in range(20):
            raw = bytes(rng.choice((0, rng.randrange(1, 256))) for _ in range(n))
            assert len(cobs.encode(raw)) <= cobs.max_encoded_len(n)


def test_cobs_decode_accepts_trailing_empty_block_variant() -> None:
    # Some encoders close a final full block with an extra 0x01.
    assert cobs.decode(b"\xff" + _R[:254] + b"\x01") == _R[:254]


@pytest.mark.parametrize(
    "bad",
    [
        b"",  # the shortest encoding is 0x01
        b"\x05\x11\x22",  # block runs past the end
        b"\x02\x11\x05\x01",
        b"\x03\x11\x00\x22",  # delimiter inside a packet
        b"\x00",
    ],
)
def test_cobs_decode_rejects(bad: bytes) -> None:
    with pytest.raises(cobs.CobsDecodeError):
        cobs.decode(bad)


def test_cobs_accepts_buffer_types() -> None:
    raw = b"\x11\x00\x22"
    assert cobs.encode(bytearray(raw)) == cobs.encode(memoryview(raw)) == cobs.encode(raw)
    assert cobs.decode(bytearray(cobs.encode(raw))) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_cobs_round_trip_property(raw: bytes) -> None:
    enc = cobs.encode(raw)
    assert b"\x00" not in enc
    assert len(enc) <= cobs.max_encoded_len(len(raw))
    assert cobs.decode(enc) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_cobs_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        out = cobs.decode(data)
    except cobs.CobsDecodeError:
        return
    # Whatever decodes re-encodes to something that decodes the same.
    assert cobs.decode(cobs.encode(out)) == out


cobs_inputs = st.one_of(
    st.binary(max_size=700).map(cobs.encode),  # valid
    st.binary(max_size=700).map(lambda raw: cobs.encode(raw) + b"\x01"),  # the trailing-block variant
    st.binary(min_size=1, max_size=700).map(lambda raw: cobs.encode(raw)[:-1]),  # truncated
    st.binary(min_size=1, max_size=600).map(lambda b: b.replace(b"\x00", b"\x01")),  # anything without a zero
)  # never empty: fh1 skips an empty packet before decoding (corncobs decodes b"" to b"", we refuse it)


@pytest.mark.skipif(cobs.compiled_decode is None, reason="corncobs is not installed (the [cobs] extra)")
@settings(max_examples=1000, deadline=None)
@given(cobs_inputs)
def test_compiled_decoder_gives_the_same_verdicts(data: bytes) -> None:
    """The fh1 hot path uses corncobs when installed: it must accept and reject
    exactly what ``decode_unchecked`` does, with the same output."""
    assert cobs.compiled_decode is not None
    try:
        want: bytes | None = cobs.decode_unchecked(data)
    except cobs.CobsDecodeError:
        want = None
    try:
        got: bytes | None = cobs.compiled_decode(data)
    except cobs.CompiledDecodeError:
        got = None
    assert got == want
