"""The ``ubx`` codec at each boundary and each resync offset (tests written from
mutation testing, docs/testing-internals.md): packet builders at their limits, the
CRC-24Q table, UBX/RTCM3/NMEA framing one byte either side of each bound, and the
``rejected`` count where damaged packets overlap.

Oracles apart from the codec: pyrtcm's ``calc_crc24q`` and RTKLIB's published table
entries, pyrtcm's ``serialize`` for RTCM3 frames, published NMEA sentences, and
checksums and ``rejected`` counts worked out by hand in the comments. Counting rules
(the module docstring): one ``rejected`` per damaged packet, per cut sentence and per
run of stray bytes; a failure starting inside a counted damaged packet's claimed
extent is not counted again, nor are the stray bytes right after a packet whose end
is unknown (an impossible length, a cut or overlong sentence).
"""

from __future__ import annotations

import pytest

from firmware_host.codecs import ubx
from firmware_host.codecs.ubx import UbxCodec, rtcm3_frame, ubx_packet
from firmware_host.errors import CodecOptionError

pyrtcm = pytest.importorskip("pyrtcm")
calc_crc24q = pytest.importorskip("pyrtcm.rtcmhelpers").calc_crc24q

pytestmark = pytest.mark.timeout(10)

# published (gpsinformation.org's RMC example; the GGA of tests/test_gnss_ubx.py)
RMC_BODY = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
RMC = b"$" + RMC_BODY.encode() + b"*6A\r\n"
GGA = b"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44\r\n"
# class 01 id 02, 4 zero bytes: CK_A runs 01 03 07 07 07 07 07 07 -> 07, CK_B = their sum 0x2E
OK0 = b"\xb5\x62\x01\x02\x04\x00\x00\x00\x00\x00\x07\x2e"
BAD0 = OK0[:-1] + b"\x00"  # the same with CK_B wrong: one damaged packet of 12 bytes
HUGE = b"\xb5\x62\x01\x07\xff\xff"  # a UBX header claiming 65535 bytes: over max_payload
# 1024 characters, '$' to checksum: 'P' ^ 'Q' = 0x01 and the 1018 'A's cancel in pairs
S1024 = b"$PQ" + b"A" * 1018 + b"*01"


def fletcher(body: bytes) -> bytes:
    """UBX's checksum as the u-blox manual writes it, one byte at a time."""
    ck_a = ck_b = 0
    for byte in body:
        ck_a = (ck_a + byte) & 0xFF
        ck_b = (ck_b + ck_a) & 0xFF
    return bytes((ck_a, ck_b))


def ubx_by_hand(cls: int, mid: int, payload: bytes) -> bytes:
    body = bytes((cls, mid)) + len(payload).to_bytes(2, "little") + payload
    return b"\xb5\x62" + body + fletcher(body)


def rtcm_by_pyrtcm(size: int, number: int = 1005) -> bytes:
    message = ((number << 4) & 0xFFF0).to_bytes(2, "big") + bytes(size - 2)
    frame: bytes = pyrtcm.RTCMMessage(payload=message).serialize()
    return frame


def run(data: bytes, codec: UbxCodec | None = None) -> tuple[list[bytes], int]:
    """Feed ``data`` in one read: the frames as they were on the wire, and ``rejected``."""
    codec = codec or UbxCodec("g")
    frames = codec.feed(data, 0.0)
    return [f.payload if f.payload is not None else (f.text or "").encode() + b"\r\n" for f in frames], codec.rejected


# -- checksums and builders ----------------------------------------------------------------------


def test_crc24q_table_is_each_byte_crc() -> None:
    # the table is built at import, before mutmut forks: build it again here
    table = ubx._crc24q_table()
    assert table == tuple(calc_crc24q(bytes([i])) for i in range(256))
    # RTKLIB's tbl_CRC24Q, first and last entries
    assert table[:4] == (0x000000, 0x864CFB, 0x8AD50D, 0x0C99F6) and table[255] == 0xDD8538


def test_first_unprintable_is_the_first_byte_outside_0x20_to_0x7e() -> None:
    first = ubx._first_unprintable
    assert first(b"") == -1 and first(b"$GP, ~A") == -1  # space and '~' are printable
    assert first(b"$\x00A\x01\x00") == 1  # the first of several, not the last nor the second
    assert first(b"$A\x7f") == 2  # DEL is not printable
    # with a byte over 0x7F in the line
    assert first(b"\xb5AB") == 0
    assert first(b"$ ~\xb5") == 3
    assert first(b"$A\x7f\xb5") == 2
    assert first(b"$A\x1f\xb5") == 2


def test_nmea_encode_adds_the_checksum_and_takes_a_leading_dollar() -> None:
    codec = UbxCodec()
    assert codec.encode(None, 0, RMC_BODY) == RMC  # "*6A": upper-case hex
    assert codec.encode(None, 0, "$" + RMC_BODY) == RMC
    assert codec.encode(None, 0, S1024[1:-3].decode()) == S1024 + b"\r\n"  # the longest


@pytest.mark.parametrize("body", ["", "$", "GP*X", "*", "GP\x01A", "\x01GP", "GP\x7f"])
def test_nmea_encode_refuses_what_is_not_a_body(body: str) -> None:
    with pytest.raises(ValueError) as err:
        UbxCodec().encode(None, 0, body)
    assert str(err.value) == "an NMEA body is printable ASCII without '*' (the checksum is added here)"


def test_nmea_encode_refuses_a_sentence_over_max_line() -> None:
    with pytest.raises(ValueError) as err:
        UbxCodec().encode(None, 0, "PQ" + "A" * 1019)  # 1025 characters with '$' and "*HH"
    assert str(err.value) == "a sentence is at most 1024 characters"


def test_rtcm3_frame_lengths_over_256_and_at_the_limit() -> None:
    assert rtcm3_frame(rtcm_by_pyrtcm(300)[3:-3]) == rtcm_by_pyrtcm(300)  # length 0x12C: D3 01 2C
    longest = rtcm_by_pyrtcm(1023)
    assert longest[:3] == b"\xd3\x03\xff" and rtcm3_frame(longest[3:-3]) == longest
    with pytest.raises(ValueError) as err:
        rtcm3_frame(bytes(1024))
    assert str(err.value) == "an RTCM3 message is at most 1023 bytes, got 1024"


def test_ubx_packet_class_and_id_bounds() -> None:
    assert ubx_packet(0, 0, b"") == b"\xb5\x62\x00\x00\x00\x00\x00\x00"
    # FF FF 00 00: CK_A runs FF FE FE FE, CK_B runs FF FD FB F9
    assert ubx_packet(0xFF, 0xFF, b"") == b"\xb5\x62\xff\xff\x00\x00\xfe\xf9"
    for cls, mid in ((-1, 0), (0, -1), (256, 0), (0, 256), (300, 5), (5, 300)):
        with pytest.raises(ValueError) as err:
            ubx_packet(cls, mid, b"")
        assert str(err.value) == "UBX class and id are bytes"


def test_ubx_packet_payload_limit() -> None:
    longest = ubx_packet(1, 2, bytes(65535))
    # 01 02 FF FF: CK_A runs 01 03 02 01 then stays 01 for 65535 zeros; CK_B = 1+3+2+1+65535 = 6 mod 256
    assert len(longest) == 65543 and longest[:6] == b"\xb5\x62\x01\x02\xff\xff" and longest[-2:] == b"\x01\x06"
    with pytest.raises(ValueError) as err:
        ubx_packet(1, 2, bytes(65536))
    assert str(err.value) == "a UBX payload is at most 65535 bytes, got 65536"


def test_ubx_encode_takes_an_empty_payload_and_names_what_it_refuses() -> None:
    codec = UbxCodec()
    assert codec.encode(0xB5, 0, b"\x01\x02") == b"\xb5\x62\x01\x02\x00\x00\x03\x0a"  # CK_A 01 03 03 03, CK_B 10
    with pytest.raises(ValueError) as err:
        codec.encode(0xB5, 0, b"\x01")
    assert str(err.value) == "a UBX body is class, id and payload: at least 2 bytes"
    with pytest.raises(ValueError) as err:
        codec.encode(0x01, 0, b"\x01\x02")
    assert str(err.value) == "ubx frames are UBX (0xB5), RTCM3 (0xD3) or NMEA text, not type 1"


# -- options and state -------------------------------------------------------------------------------


def test_max_payload_range_and_pending_limit() -> None:
    one = UbxCodec(max_payload=1)
    assert run(ubx_by_hand(1, 2, b"\x05"), one) == ([ubx_by_hand(1, 2, b"\x05")], 0)  # exactly max_payload
    assert run(ubx_by_hand(1, 2, b"\x05\x06"), one) == ([], 1)  # one more
    assert UbxCodec(max_payload=65535).pending_limit == 65543  # 8 + 65535
    assert UbxCodec(max_payload=1022).pending_limit == 1030  # 8 + 1022, over RTCM3's 6 + 1023
    # default 4096: a whole packet of 8 + 4096 bytes may wait, one byte short
    codec = UbxCodec()
    assert codec.pending_limit == 4104
    big = ubx_by_hand(1, 2, bytes(range(256)) * 16)
    assert codec.feed(big[:-1], 0.0) == [] and len(codec._pending) == 4103 <= codec.pending_limit
    assert [f.payload for f in codec.feed(big[-1:], 0.0)] == [big] and codec.rejected == 0


@pytest.mark.parametrize("bad", [0, -1, 65536, True, 1.5, "8"])
def test_max_payload_out_of_range_is_one_clear_error(bad: object) -> None:
    with pytest.raises(CodecOptionError) as err:
        UbxCodec("g", max_payload=bad)  # type: ignore[arg-type]
    assert str(err.value) == f"codec 'ubx' option 'max_payload' must be an int in 1..65535, got {bad!r}"


def test_default_device_and_reset() -> None:
    codec = UbxCodec()
    assert [f.device for f in codec.feed(GGA, 0.0)] == [""]
    fresh = UbxCodec()
    fresh.reset()  # nothing pending: nothing counted
    assert fresh.rejected == 0 and fresh._pending == b""
    assert run(b"xyz" + GGA, fresh) == ([GGA], 1)  # reset forgets no stray run: this one counts
    codec = UbxCodec()
    assert run(b"xyz$GN", codec) == ([], 1)
    codec.reset()  # the cut sentence: one more
    assert codec.rejected == 2


# -- UBX framing -------------------------------------------------------------------------------------


def test_ubx_header_judged_at_six_bytes_and_a_short_false_sync() -> None:
    codec = UbxCodec()
    assert run(HUGE, codec) == ([], 1) and codec._pending == b""  # its length is known: judged now
    codec = UbxCodec()
    assert run(b"\xb5\x00", codec) == ([], 1) and codec._pending == b""  # B5 not followed by 62: stray
    codec = UbxCodec()
    assert run(b"\xb5", codec) == ([], 0) and codec._pending == b"\xb5"  # may yet be a packet


def test_ubx_payload_over_256_bytes() -> None:
    packet = ubx_by_hand(0x02, 0x15, bytes(range(256)) + bytes(44))  # length 0x012C
    assert run(packet + GGA) == ([packet, GGA], 0)


def test_an_impossible_length_claims_its_header_only() -> None:
    # a '$' inside the header (the class byte) is not counted again
    assert run(b"\xb5\x62\x24\x07\xff\xff" + GGA) == ([GGA], 1)
    assert run(b"xyz\xb5\x62\x24\x07\xff\xff" + GGA) == ([GGA], 2)  # the stray run, the header
    assert run(b"xyz" + HUGE + GGA) == ([GGA], 2)
    # a cut sentence right after the 6 header bytes counts on its own
    assert run(HUGE + b"$\x00" + GGA) == ([GGA], 2)


# -- RTCM3 framing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "rejected", "pending"),
    [
        (b"\xd3\x10", 1, b""),  # reserved bits set: D3 starts nothing, known at 2 bytes
        (b"\xd3\x04", 1, b""),  # the lowest reserved bit
        (b"\xd3\x04\x00", 1, b""),
        (b"\xd3\x03", 0, b"\xd3\x03"),  # length bits only: may yet be a frame
        (b"\xd3", 0, b"\xd3"),
    ],
)
def test_rtcm3_reserved_bits(data: bytes, rejected: int, pending: bytes) -> None:
    codec = UbxCodec()
    assert run(data, codec) == ([], rejected) and codec._pending == pending


def test_rtcm3_lengths_with_the_high_bits() -> None:
    frames = [rtcm_by_pyrtcm(300), rtcm_by_pyrtcm(1023), rtcm_by_pyrtcm(256)]
    assert run(b"".join(frames) + GGA) == ([*frames, GGA], 0)


# -- NMEA framing --------------------------------------------------------------------------------------


def test_sentence_of_max_line() -> None:
    assert run(S1024 + b"\r\n") == ([S1024 + b"\r\n"], 0)
    codec = UbxCodec()
    assert [f.text for f in codec.feed(S1024 + b"\n", 0.0)] == [S1024.decode()]
    # 1025 bytes, no line end yet: it may still be a sentence of 1024 and its \r
    codec = UbxCodec()
    assert run(S1024 + b"\r", codec) == ([], 0) and len(codec._pending) == 1025
    assert [f.text for f in codec.feed(b"\n", 0.0)] == [S1024.decode()] and codec.rejected == 0


def test_sentence_one_over_max_line_with_a_bare_line_end_is_rejected() -> None:
    # 1025 characters '$' to checksum, its checksum right ('P', 1020 'A's): too long all the same
    assert run(b"$P" + b"A" * 1020 + b"*50\n" + GGA) == ([GGA], 1)


def test_too_long_is_known_at_1026_bytes_without_a_line_end() -> None:
    codec = UbxCodec()
    assert run(b"$" + b"A" * 1025, codec) == ([], 1)
    codec = UbxCodec()
    assert run(b"$" + b"A" * 1024, codec) == ([], 0) and len(codec._pending) == 1025
    # an unprintable byte at 1024 is seen now
    assert run(b"$" + b"A" * 1023 + b"\x00") == ([], 1)


def test_too_long_claims_max_line_and_its_end_is_unknown() -> None:
    # claimed: 1024 bytes from its '$'; a cut sentence at 1025 lies past them
    assert run(b"$" + b"A" * 1024 + b"$\x00") == ([], 2)
    # the line end at 1026 is beyond the search: the stray bytes after it are the long line's own
    assert run(b"$" + b"A" * 1025 + b"\nxyz" + GGA) == ([GGA], 1)
    # a '$' 1018 bytes in (offset 1021) is inside the claim, not counted again
    assert run(b"xyz$" + b"A" * 1017 + b"$" + b"A" * 1030 + GGA) == ([GGA], 2)


def test_shortest_sentence_and_checksum_without_star() -> None:
    assert run(b"$*00\r\n") == ([b"$*00\r\n"], 0)  # empty body, XOR 0
    assert run(b"$A,41\r\n") == ([], 1)  # "41" is 'A' in hex, but no '*' before it
    assert run(b"$0\n" + GGA) == ([GGA], 1)


def test_cut_sentences() -> None:
    assert run(b"$GP\x00") == ([], 1)  # an ASCII control byte cuts it at once
    assert run(b"$" + OK0) == ([OK0], 1)  # cut by the packet right after its '$'
    assert run(b"$A\x00zz" + GGA) == ([GGA], 1)  # its end is unknown: the bytes after are its own
    # cut at 2 (offset 5): a '$' inside (offset 5) is not counted again
    assert run(b"xyz$A$\xb5\x00") == ([], 2)
    assert run(b"$$\xff") == ([], 1)
    assert run(b"xyz$\x00" + GGA) == ([GGA], 2)


# -- where damage overlaps ---------------------------------------------------------------------


def test_a_damaged_packet_after_a_stray_run_counts() -> None:
    assert run(b"xyz" + BAD0 + GGA) == ([GGA], 2)
    message = b"\xd3\x00\x02\x00\x00"
    assert calc_crc24q(message) != 0
    assert run(b"xyz" + message + b"\x00\x00\x00" + GGA) == ([GGA], 2)


def test_a_false_sync_starting_nothing() -> None:
    assert run(GGA + b"\xb5" + GGA) == ([GGA, GGA], 1)  # a stray run of one byte
    # the damaged packet's last byte: inside its extent, not counted
    assert run(BAD0[:-1] + b"\xb5" + GGA) == ([GGA], 1)


@pytest.mark.parametrize(
    ("last", "tail", "frames", "rejected"),
    [
        # the damaged packet's last byte starts a failing candidate, not counted again; its
        # second byte lies past the damaged packet: a stray run; then a '$' cut short
        (b"\xb5", b"\x62\x24\x07\xff\xff", [], 3),  # an impossible length
        (b"\xb5", b"\x62\x24\x07\x00\x00\x00\x00", [], 3),  # a UBX checksum (2B A5 is right)
        (b"\xd3", b"\x00\x24" + bytes(36) + b"\x00\x00\x00", [], 3),  # an RTCM3 CRC
        (b"$", b"x$\x00", [], 3),  # a cut sentence
        (b"$", b"x$" + b"A" * 1030, [], 3),  # a sentence too long
        (b"$", b"x" + GGA, [GGA], 2),  # an NMEA checksum ("x$" changes it); the GGA inside decodes
    ],
)
def test_a_failure_at_a_damaged_packets_last_byte(last: bytes, tail: bytes, frames: list[bytes], rejected: int) -> None:
    assert calc_crc24q(b"\xd3\x00\x24" + bytes(36)) != 0
    assert run(BAD0[:-1] + last + tail + GGA) == ([*frames, GGA], rejected)
