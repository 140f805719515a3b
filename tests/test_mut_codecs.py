"""Codec boundaries, exactly at and one past each limit (tests written from mutation
testing, docs/testing-internals.md): fh1's ``max_payload`` and its pending bound,
``max_line`` for lines and nmea, option ranges, the seq wrap, short sentences.

Expected sizes are worked out by hand in the comments, not computed by the code under test.
"""

from __future__ import annotations

import functools
import random

import pytest

from firmware_host.codecs import cobs, fh1
from firmware_host.codecs.fh1 import Fh1Codec, encode_packet
from firmware_host.codecs.lines import LinesCodec
from firmware_host.codecs.nmea import NmeaCodec, nmea_checksum
from firmware_host.errors import CodecOptionError

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(params=["compiled", "pure"])
def cobs_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """fh1 decodes through corncobs when installed; run each fh1 case both ways."""
    if request.param == "compiled":
        if cobs.compiled_decode is None:
            pytest.skip("corncobs not installed")
    else:
        monkeypatch.setattr(cobs, "compiled_decode", None)
    return str(request.param)


# ----------------------------------------------------------------------- fh1


def test_fh1_payload_of_max_payload_decodes_and_one_more_is_rejected(cobs_path: str) -> None:
    codec = Fh1Codec("d", max_payload=10)
    frames = codec.feed(encode_packet(0x10, 1, b"x" * 10), 1.0)
    assert [(f.seq, f.type, f.payload) for f in frames] == [(1, 0x10, b"x" * 10)]
    assert codec.feed(encode_packet(0x10, 2, b"x" * 11), 2.0) == []
    assert codec.rejected == 1
    frames = codec.feed(encode_packet(0x10, 3, b""), 3.0)  # an empty payload is legal
    assert [(f.seq, f.payload) for f in frames] == [(3, b"")]


def test_fh1_pending_tail_is_bounded_by_the_largest_packet(cobs_path: str) -> None:
    # max_payload 10: packets of at most 6 + 10 + 2 = 18 bytes, which COBS encodes in
    # at most 18 + 1 = 19 bytes: a tail of 19 bytes waits, a 20th byte drops it
    codec = Fh1Codec("d", max_payload=10)
    assert codec.pending_limit == 19
    wire = encode_packet(0x10, 7, b"\x01" * 10)  # no zero inside: 19 bytes + 0x00
    assert len(wire) == 20
    assert codec.feed(wire[:19], 1.0) == []
    assert codec.rejected == 0
    assert [f.seq for f in codec.feed(wire[19:], 1.0)] == [7]
    # one byte past the bound: the run is rejected once and skipped to its 0x00
    codec.feed(wire[:19], 2.0)
    assert codec.feed(b"\x05", 2.0) == [] and codec.rejected == 1
    assert codec.feed(b"\x06" * 50, 2.0) == [] and codec.rejected == 1
    assert [f.seq for f in codec.feed(b"\x00" + encode_packet(0x10, 8, b"ok"), 3.0)] == [8]
    assert codec.rejected == 1


def test_fh1_oversize_run_arriving_whole_is_one_rejected(cobs_path: str) -> None:
    codec = Fh1Codec("d", max_payload=10)
    big = encode_packet(0x10, 1, b"\x01" * 11)  # 20 bytes + 0x00: over the bound of 19
    frames = codec.feed(big + encode_packet(0x10, 2, b"a"), 1.0)
    assert [f.seq for f in frames] == [2]
    assert codec.rejected == 1


@pytest.mark.parametrize("bad", [0, -1, (1 << 20) + 1, True, 1.5, "8"])
def test_fh1_max_payload_out_of_range_is_one_clear_error(bad: object) -> None:
    with pytest.raises(CodecOptionError) as err:
        Fh1Codec("d", max_payload=bad)  # type: ignore[arg-type]
    assert str(err.value) == f"codec 'fh1' option 'max_payload' must be an int in 1..1048576, got {bad!r}"


@pytest.mark.parametrize("good", [1, 1 << 20])
def test_fh1_max_payload_range_ends_are_accepted(good: int) -> None:
    codec = Fh1Codec("d", max_payload=good)
    assert codec.max_payload == good
    assert codec.feed(encode_packet(1, 0, b"z" * min(good, 300)), 0.0)[0].payload == b"z" * min(good, 300)


def test_fh1_default_max_payload_is_1024() -> None:
    codec = Fh1Codec("d")
    assert codec.max_payload == 1024
    assert [f.seq for f in codec.feed(encode_packet(1, 0, b"y" * 1024), 0.0)] == [0]
    assert codec.feed(encode_packet(1, 1, b"y" * 1025), 0.0) == [] and codec.rejected == 1


def test_fh1_encode_enforces_max_payload() -> None:
    codec = Fh1Codec("d", max_payload=4)
    assert codec.encode(0x20, 5, b"abcd") == encode_packet(0x20, 5, b"abcd")
    assert codec.encode(0x20, 5, "ab") == encode_packet(0x20, 5, b"ab")
    with pytest.raises(ValueError, match=r"^fh1 payload of 5 bytes exceeds max_payload 4$"):
        codec.encode(0x20, 5, b"abcde")
    with pytest.raises(ValueError, match=r"^fh1 frames need an integer type$"):
        codec.encode(None, 5, b"a")


def test_encode_packet_type_range_and_seq_wrap() -> None:
    for bad in (-1, 256):
        with pytest.raises(ValueError, match=rf"^fh1 type must be 0\.\.255, got {bad}$"):
            encode_packet(bad, 0)
    codec = Fh1Codec("d")
    frames = codec.feed(encode_packet(0, 0) + encode_packet(255, 1) + encode_packet(3, (1 << 32) + 5, "é"), 0.0)
    assert [(f.type, f.seq, f.payload) for f in frames] == [(0, 0, b""), (255, 1, b""), (3, 5, "é".encode())]


def raw_packet(version: int, frame_type: int, seq: int, payload: bytes, crc_delta: int = 0) -> bytes:
    """An fh1 packet built by hand (header, payload, CRC-16/CCITT-FALSE LE), COBS-framed."""
    body = bytes([version, frame_type]) + seq.to_bytes(4, "little") + payload
    crc = 0xFFFF
    for byte in body:  # bitwise CRC-16/CCITT-FALSE, independent of binascii
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    crc ^= crc_delta
    return cobs.encode(body + crc.to_bytes(2, "little")) + b"\x00"


def test_fh1_rejects_wrong_version_crc_and_short_packets(cobs_path: str) -> None:
    codec = Fh1Codec("d")
    assert [f.seq for f in codec.feed(raw_packet(1, 2, 9, b"ok"), 0.0)] == [9]  # the hand-built one is good
    assert codec.feed(raw_packet(2, 2, 10, b"ok"), 0.0) == []  # version 2
    assert codec.feed(raw_packet(1, 2, 11, b"ok", crc_delta=1), 0.0) == []  # CRC off by one bit
    assert codec.feed(cobs.encode(b"\x01\x02\x03\x00\x00\x00\x00") + b"\x00", 0.0) == []  # 7 bytes: too short
    assert codec.rejected == 3
    assert codec.feed(b"\x00\x00", 0.0) == [] and codec.rejected == 3  # empty packets: resync, not errors


def test_fh1_smallest_packet_is_header_and_crc(cobs_path: str) -> None:
    codec = Fh1Codec("d")
    wire = raw_packet(1, 0, 0, b"")  # 8 bytes: the shortest legal packet
    assert [f.payload for f in codec.feed(wire, 0.0)] == [b""]


def test_fh1_gaps_count_discontinuities_but_not_the_wrap(cobs_path: str) -> None:
    top = (1 << 32) - 1
    codec = Fh1Codec("d")
    codec.feed(encode_packet(1, 100), 0.0)
    assert codec.gaps == 0  # the first frame never counts one
    codec.feed(encode_packet(1, 101) + encode_packet(1, 103), 0.0)
    assert codec.gaps == 1
    codec.feed(encode_packet(1, top) + encode_packet(1, 0) + encode_packet(1, 1), 0.0)
    assert codec.gaps == 2  # 103 -> top is one; top -> 0 is the wrap
    codec.feed(encode_packet(1, top), 0.0)
    codec.feed(encode_packet(1, 1), 0.0)  # top -> 1 skips 0, across two reads
    assert codec.gaps == 4
    codec.feed(encode_packet(1, 1), 0.0)  # a repeat is a discontinuity too
    assert codec.gaps == 5
    codec.feed(encode_packet(1, 2), 0.0)  # seq state carries across reads
    assert codec.gaps == 5


def test_fh1_gap_state_survives_reset(cobs_path: str) -> None:
    codec = Fh1Codec("d")
    codec.feed(encode_packet(1, 5), 0.0)
    codec.feed(encode_packet(1, 6)[:4], 0.0)
    codec.reset()
    assert codec.rejected == 1
    codec.reset()  # nothing pending: nothing more rejected
    assert codec.rejected == 1
    codec.feed(encode_packet(1, 8), 0.0)
    assert codec.gaps == 1


def test_fh1_reset_ends_a_skipped_run(cobs_path: str) -> None:
    codec = Fh1Codec("d", max_payload=10)
    codec.feed(b"\x05" * 40, 0.0)  # oversize: counted, skipping to the next 0x00
    assert codec.rejected == 1
    codec.reset()  # a new connection starts clean: no 0x00 needed first
    assert [f.seq for f in codec.feed(encode_packet(1, 3, b"a"), 0.0)] == [3]
    assert codec.rejected == 1


def test_fh1_packets_across_many_reads_and_full_cobs_blocks(cobs_path: str) -> None:
    codec = Fh1Codec("d")
    payloads = [b"", b"\x00", b"\x01" * 254, b"\x02" * 300, bytes(range(256)) * 3, b"\x00" * 600]
    wire = b"".join(encode_packet(9, i, p) for i, p in enumerate(payloads))
    frames = []
    for i in range(0, len(wire), 7):
        frames += codec.feed(wire[i : i + 7], 0.0)
    assert [f.payload for f in frames] == payloads
    assert codec.rejected == 0 and codec.gaps == 0


def test_fh1_rejects_truncated_cobs_blocks(cobs_path: str) -> None:
    codec = Fh1Codec("d")
    assert codec.feed(b"\x09\x01\x02\x00", 0.0) == []  # a block claiming 8 bytes, 2 there
    # a full block followed by a truncated one
    assert codec.feed(b"\xff" + b"\x01" * 254 + b"\x09\x01\x00", 0.0) == []
    # a zero-free block then a block running past the end
    assert codec.feed(b"\x02\x01\x09\x01\x00", 0.0) == []
    assert codec.rejected == 3


# ----------------------------------------------------------------------- COBS


def test_cobs_max_encoded_len_by_hand() -> None:
    # n bytes need ceil(n / 254) code bytes (at least one), plus one 0x01 block
    # some encoders add when n is a non-zero multiple of 254
    assert [cobs.max_encoded_len(n) for n in (0, 1, 253, 254, 255, 508, 509)] == [1, 2, 254, 256, 257, 511, 512]


def test_cobs_decode_errors_name_the_problem() -> None:
    with pytest.raises(cobs.CobsDecodeError, match=r"^empty input \(the shortest encoding is 0x01\)$"):
        cobs.decode(b"")
    with pytest.raises(cobs.CobsDecodeError, match=r"^0x00 at offset 2 inside a packet$"):
        cobs.decode(b"\x03\x11\x00\x22")
    with pytest.raises(cobs.CobsDecodeError, match=r"^0x00 at offset 1 inside a packet$"):
        cobs.decode(b"\x03\x00\x11\x00")  # the first zero is named
    with pytest.raises(cobs.CobsDecodeError, match=r"^last block runs 3 bytes past the end$"):
        cobs.decode(b"\x02\x11\x05\x01")
    with pytest.raises(cobs.CobsDecodeError, match=r"^block at offset 255 claims 8 bytes, 1 left$"):
        cobs.decode(b"\xff" + b"\x01" * 254 + b"\x09\x01")


def test_cobs_encode_blocks_by_hand() -> None:
    assert cobs.encode(b"") == b"\x01"
    assert cobs.encode(b"\x00") == b"\x01\x01"
    assert cobs.encode(b"\x11\x00") == b"\x02\x11\x01"
    r254 = bytes(range(1, 255))
    assert cobs.encode(r254) == b"\xff" + r254  # minimal: no trailing empty block
    assert cobs.encode(r254 + b"\x00") == b"\xff" + r254 + b"\x01\x01"
    assert cobs.encode(r254 + b"\x07") == b"\xff" + r254 + b"\x02\x07"
    assert cobs.encode(bytearray(b"\x05")) == b"\x02\x05"
    assert cobs.encode(memoryview(b"\x05")) == b"\x02\x05"


def test_cobs_decode_full_blocks_then_zeros() -> None:
    r254 = bytes(range(1, 255))
    assert cobs.decode(b"\x02\x11" + b"\xff" + r254 + b"\x01\x01") == b"\x11\x00" + r254 + b"\x00"
    assert cobs.decode(bytearray(b"\x02\x05")) == b"\x05"
    assert cobs.decode_unchecked(b"\x03\x11\x22") == b"\x11\x22"


# ----------------------------------------------------------------------- lines


def test_lines_max_line_is_reached_but_not_exceeded() -> None:
    codec = LinesCodec("d", max_line=5)
    assert [f.text for f in codec.feed(b"abcde\nabcdef\nabcde\r\n", 0.0)] == ["abcde", "abcde"]
    assert codec.rejected == 1
    assert [f.seq for f in codec.feed(b"x\n", 0.0)] == [2]


def test_lines_pending_line_is_bounded_by_max_line_plus_cr() -> None:
    codec = LinesCodec("d", max_line=5)
    assert codec.pending_limit == 6  # five bytes and a \r
    assert codec.feed(b"abcde\r", 0.0) == []
    assert [f.text for f in codec.feed(b"\n", 0.0)] == ["abcde"]
    assert codec.feed(b"abcdef", 0.0) == [] and codec.rejected == 0  # six bytes wait...
    assert codec.feed(b"\n", 0.0) == [] and codec.rejected == 1  # ...and are one byte too long
    assert codec.feed(b"abcdefg", 0.0) == [] and codec.rejected == 2  # seven: dropped at once
    assert [f.text for f in codec.feed(b"hij\nok\n", 0.0)] == ["ok"]  # skipped to the \n
    assert codec.rejected == 2


def test_lines_pending_grows_across_reads_up_to_the_bound() -> None:
    codec = LinesCodec("d", max_line=5)
    for chunk in (b"ab", b"cd", b"e"):
        assert codec.feed(chunk, 0.0) == []
    assert codec.rejected == 0
    assert [f.text for f in codec.feed(b"\nz\n", 0.0)] == ["abcde", "z"]
    codec.feed(b"abc", 0.0)
    codec.feed(b"defg", 0.0)  # 3 + 4 > 6
    assert codec.rejected == 1


@pytest.mark.parametrize("bad", [0, -5, (1 << 20) + 1, True, 2.0])
def test_max_line_out_of_range_is_one_clear_error(bad: object) -> None:
    for codec_type, name in ((LinesCodec, "lines"), (NmeaCodec, "nmea")):
        with pytest.raises(CodecOptionError) as err:
            codec_type("d", max_line=bad)  # type: ignore[arg-type]
        assert str(err.value) == f"codec '{name}' option 'max_line' must be an int in 1..1048576, got {bad!r}"


def test_max_line_range_ends_and_defaults() -> None:
    assert LinesCodec("d", max_line=1).max_line == 1
    assert LinesCodec("d", max_line=1 << 20).max_line == 1 << 20
    assert LinesCodec("d").max_line == 4096
    assert NmeaCodec("d").max_line == 1024
    one = LinesCodec("d", max_line=1)
    assert [f.text for f in one.feed(b"a\nab\n", 0.0)] == ["a"] and one.rejected == 1


def test_lines_encode_limits() -> None:
    codec = LinesCodec("d", max_line=5)
    assert codec.encode(None, 0, "abcde") == b"abcde\n"
    assert codec.encode(None, 0, b"\xc3\xa9") == b"\xc3\xa9\n"
    with pytest.raises(ValueError, match=r"^line of 6 bytes exceeds max_line 5$"):
        codec.encode(None, 0, "abcdef")
    with pytest.raises(ValueError, match=r"^line of 6 bytes exceeds max_line 5$"):
        codec.encode(None, 0, "ééé")  # six bytes in UTF-8
    with pytest.raises(ValueError, match=r"^a line must not contain '\\n'$"):
        codec.encode(None, 0, "a\nb")


def test_lines_reset_counts_a_partial_line_but_not_a_lone_cr() -> None:
    codec = LinesCodec("d")
    codec.feed(b"a\n\r", 0.0)
    codec.reset()
    assert codec.rejected == 0
    codec.feed(b"part", 0.0)
    codec.reset()
    assert codec.rejected == 1
    codec.reset()
    assert codec.rejected == 1
    assert [(f.seq, f.text) for f in codec.feed(b"next\n", 0.0)] == [(1, "next")]  # seq survives


def test_lines_reset_ends_a_skipped_run() -> None:
    codec = LinesCodec("d", max_line=3)
    codec.feed(b"abcdefgh", 0.0)
    assert codec.rejected == 1
    codec.reset()
    assert [f.text for f in codec.feed(b"ok\n", 0.0)] == ["ok"]


def test_lines_empty_and_bad_utf8() -> None:
    codec = LinesCodec("d")
    assert codec.feed(b"", 0.0) == []
    frames = codec.feed(b"\n\r\n\xff\n", 5.0)
    assert [(f.text, f.ts, f.device, f.type, f.payload) for f in frames] == [("\ufffd", 5.0, "d", None, None)]
    assert codec.rejected == 0


# ----------------------------------------------------------------------- nmea


def xor_all(body: bytes) -> int:
    return functools.reduce(lambda a, b: a ^ b, body, 0)


def test_nmea_checksum_matches_a_plain_xor() -> None:
    rng = random.Random(3)
    for n in [*range(40), 63, 64, 65, 127, 128, 129, 1000]:
        body = bytes(rng.randrange(32, 127) for _ in range(n))
        assert nmea_checksum(body) == xor_all(body), n


def sentence(body: str, start: str = "$") -> bytes:
    return f"{start}{body}*{xor_all(body.encode()):02X}".encode()


def test_nmea_max_line_is_reached_but_not_exceeded() -> None:
    codec = NmeaCodec("d", max_line=20)
    exact = sentence("A" * 16)  # $ + 16 + *HH = 20
    over = sentence("A" * 17)
    assert len(exact) == 20 and len(over) == 21
    frames = codec.feed(exact + b"\r\n" + over + b"\r\n", 0.0)
    assert [f.text for f in frames] == [exact.decode()]
    assert codec.rejected == 1


def test_nmea_shortest_sentence_is_four_characters() -> None:
    codec = NmeaCodec("d")
    assert [f.text for f in codec.feed(b"$*00\n!*00\n*00\n", 0.0)] == ["$*00", "!*00"]
    assert codec.rejected == 1


@pytest.mark.parametrize(
    "line",
    [
        b"GPGGA*56",  # no start character
        b"$GPGGA,1*5",  # one hex digit
        b"$GPGGA,1,56",  # no star
        b"$GPGGA,1* F",  # not hex
        b"$GPGGA,1*+F",
        b"$GP\xc3\xa9*00",  # not ASCII
    ],
)
def test_nmea_malformed_lines_are_rejected(line: bytes) -> None:
    codec = NmeaCodec("d")
    assert codec.feed(line + b"\n", 0.0) == []
    assert codec.rejected == 1


def test_nmea_checksum_digits_either_case_and_wrong_value() -> None:
    codec = NmeaCodec("d")
    good = sentence("GPXTE,A")
    lower = good[:-2] + good[-2:].lower()
    wrong = good[:-1] + (b"0" if good[-1:] != b"0" else b"1")
    frames = codec.feed(good + b"\n" + lower + b"\r\n" + wrong + b"\n", 1.0)
    assert [(f.seq, f.text) for f in frames] == [(0, good.decode()), (1, lower.decode())]
    assert codec.rejected == 1
    assert codec.seq == 2


def test_nmea_encode_limits_and_start_characters() -> None:
    codec = NmeaCodec("d", max_line=20)
    assert codec.encode(None, 0, "A" * 16) == sentence("A" * 16) + b"\r\n"
    assert codec.encode(None, 0, b"!AIVDM") == sentence("AIVDM", "!") + b"\r\n"
    assert codec.encode(None, 0, "$GP") == sentence("GP") + b"\r\n"
    with pytest.raises(ValueError, match=r"^sentence of 21 chars exceeds max_line 20$"):
        codec.encode(None, 0, "A" * 17)
    for bad in ("A*B", "A\rB", "A\nB"):
        with pytest.raises(ValueError, match=r"^an NMEA body must not contain"):
            codec.encode(None, 0, bad)
    for nonascii in ("é", b"\xc3\xa9"):
        with pytest.raises(ValueError, match=r"^an NMEA sentence must be ASCII$"):
            codec.encode(None, 0, nonascii)


def test_codecs_default_to_no_device_name() -> None:
    assert LinesCodec().device == "" and NmeaCodec().device == "" and Fh1Codec().device == ""
    assert LinesCodec().feed(b"x\n", 0.0)[0].device == ""


def test_reset_adds_to_the_rejected_count() -> None:
    codec = LinesCodec("d", max_line=3)
    codec.feed(b"toolong\n", 0.0)
    codec.feed(b"part", 0.0)
    codec.reset()
    assert codec.rejected == 2
    fh1 = Fh1Codec("d")
    fh1.feed(b"\x05\x01\x00", 0.0)  # a bad packet
    fh1.feed(b"\x05\x01", 0.0)
    fh1.reset()
    assert fh1.rejected == 2


def crc_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """Bitwise CRC-16/CCITT-FALSE (poly 0x1021, no reflection, no final XOR)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_fh1_residue_table_is_the_crc_of_each_stored_crc() -> None:
    # the table is built once at import; built again here, so a changed builder shows
    table = fh1._residue_table()
    assert len(table) == 65536
    for s in (*range(0, 65536, 97), 0xFFFF, 0x00FF, 0xFF00, 0x1234):
        assert table[s] == crc_ccitt_false(s.to_bytes(2, "little"), s), hex(s)


def test_fh1_splitter_unpacks_header_payload_and_crc() -> None:
    packet = bytes([1, 0x42]) + (0x01020304).to_bytes(4, "little") + b"hello" + b"\xcd\xab"
    split = fh1._splitter.__wrapped__(len(packet))  # past the cache: the function itself
    assert split(packet) == (1, 0x42, 0x01020304, b"hello", 0xABCD)
    assert fh1._splitter.__wrapped__(8)(packet[:6] + b"\x01\x00") == (1, 0x42, 0x01020304, b"", 1)


def test_fh1_a_packet_opening_with_a_full_cobs_block(cobs_path: str) -> None:
    # no zero in the first 254 bytes (version 1, type 9, seq 0x01010101, payload of 0x01):
    # the encoding opens with a full block (0xFF), which implies no zero after it
    codec = Fh1Codec("d")
    wire = encode_packet(9, 0x01010101, b"\x01" * 300)
    assert wire[0] == 0xFF
    frames = codec.feed(wire + encode_packet(9, 0x01010102, b"\x01" * 248 + b"\x00" + b"\x01" * 5), 0.0)
    assert [(f.seq, len(f.payload or b"")) for f in frames] == [(0x01010101, 300), (0x01010102, 254)]
    assert codec.rejected == 0


def test_fh1_every_bad_packet_in_one_read_is_counted_and_the_rest_decoded(cobs_path: str) -> None:
    codec = Fh1Codec("d")
    full = b"\xff" + b"\x01" * 254
    bad = [
        full + b"\x09\x01",  # a full block, then one running past the end
        full + b"\x09\x01",
        b"\x02\x01\x09\x01",  # a short block, then one running past the end
        b"\x02\x01\x09\x01",
        raw_packet(2, 1, 1, b"v")[:-1],  # version 2
        raw_packet(2, 1, 1, b"v")[:-1],
        raw_packet(1, 1, 1, b"c", crc_delta=0x8000)[:-1],  # bad CRC
        raw_packet(1, 1, 1, b"c", crc_delta=0x8000)[:-1],
        cobs.encode(b"\x01\x01\x01"),  # too short
        cobs.encode(b"\x01\x01\x01"),
    ]
    wire = b"\x00".join(bad) + b"\x00" + encode_packet(1, 50, b"good")
    frames = codec.feed(wire, 0.0)
    assert [f.payload for f in frames] == [b"good"]
    assert codec.rejected == 10
