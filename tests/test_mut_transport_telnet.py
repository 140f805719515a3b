"""The telnet layer (``firmware_host/transport/telnet.py``) against streams built
from RFC 854/855 by hand (tests written from mutation testing,
docs/testing-internals.md).

The oracle is construction: a stream is made of tokens (data, an escaped 255,
``IAC WILL|WONT|DO|DONT opt``, ``IAC SB opt ... IAC SE``, one-byte commands such
as NOP), each of which says what the parser must give back; the stream is then
cut anywhere.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.transport.telnet import TelnetParser, escape, negotiation, subnegotiation

pytestmark = pytest.mark.timeout(20)

# RFC 854's codes, written out here rather than imported
IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
NOP, GA, BRK = 241, 249, 243
COM_PORT = 44
LIMIT = 64  # the documented bound of a subnegotiation (option byte included)


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def negotiation(self, command: int, option: int) -> None:
        self.events.append(("neg", command, option))

    def subnegotiation(self, option: int, payload: bytes) -> None:
        self.events.append(("sub", option, payload))


def feed_cut(stream: bytes, cuts: list[int]) -> tuple[bytes, list[tuple[object, ...]]]:
    seen = Seen()
    parser = TelnetParser(seen)
    bounds = [0, *sorted(cuts), len(stream)]
    data = b"".join(parser.feed(stream[a:b]) for a, b in itertools.pairwise(bounds))
    return data, seen.events


def feed_bytewise(stream: bytes) -> tuple[bytes, list[tuple[object, ...]]]:
    return feed_cut(stream, list(range(1, len(stream))))


# -- the helpers that build the wire form -------------------------------------------


def test_escape_doubles_each_255_and_leaves_the_rest():
    assert escape(b"") == b""
    assert escape(b"abc") == b"abc"
    assert escape(b"\xff") == b"\xff\xff"
    assert escape(b"a\xffb\xff\xff") == b"a\xff\xffb\xff\xff\xff\xff"


def test_negotiation_and_subnegotiation_bytes():
    assert negotiation(WILL, COM_PORT) == bytes([255, 251, 44])
    assert negotiation(DONT, 3) == bytes([255, 254, 3])
    assert subnegotiation(COM_PORT, b"\x01\x00") == bytes([255, 250, 44, 1, 0, 255, 240])
    # a 255 inside the payload is doubled
    assert subnegotiation(COM_PORT, b"\x65\xff") == bytes([255, 250, 44, 0x65, 255, 255, 255, 240])


# -- the parser, case by case ------------------------------------------------------------


def test_a_chunk_without_iac_is_returned_as_it_is():
    chunk = b"plain data"
    seen = Seen()
    assert TelnetParser(seen).feed(chunk) is chunk
    assert seen.events == []


def test_each_negotiation_command_is_handed_over():
    for command in (WILL, WONT, DO, DONT):
        data, events = feed_cut(b"a" + bytes([IAC, command, 7]) + b"b", [])
        assert data == b"ab"
        assert events == [("neg", command, 7)]


def test_an_iac_at_the_very_start_and_end_of_a_chunk():
    # IAC at index 0 of the first chunk, and the command's bytes in later chunks
    assert feed_cut(bytes([IAC, WILL, 3]), [1, 2]) == (b"", [("neg", WILL, 3)])
    assert feed_cut(bytes([IAC, IAC]) + b"x", [1]) == (b"\xffx", [])
    assert feed_cut(bytes([IAC, IAC]), []) == (b"\xff", [])


def test_data_between_commands_in_one_chunk_is_all_kept():
    stream = b"ab" + bytes([IAC, IAC]) + b"cd" + bytes([IAC, WILL, 1]) + b"ef" + bytes([IAC, NOP]) + b"gh"
    assert feed_cut(stream, []) == (b"ab\xffcdefgh", [("neg", WILL, 1)])


def test_one_byte_commands_are_swallowed():
    for command in (NOP, GA, BRK, SE, 200):
        assert feed_cut(b"a" + bytes([IAC, command]) + b"b", []) == (b"ab", [])


def test_data_after_a_negotiation_is_data_again():
    assert feed_cut(bytes([IAC, DO, 0]) + b"xyz", []) == (b"xyz", [("neg", DO, 0)])
    # the option byte may be 255 or SE: it is an option, not a command
    assert feed_cut(bytes([IAC, WILL, 255]) + b"q", []) == (b"q", [("neg", WILL, 255)])


def test_a_subnegotiation_with_an_escaped_255():
    stream = bytes([IAC, SB, COM_PORT, 101, IAC, IAC, 7, IAC, SE]) + b"after"
    expected = (b"after", [("sub", COM_PORT, bytes([101, 255, 7]))])
    assert feed_cut(stream, []) == expected
    assert feed_bytewise(stream) == expected


def test_an_empty_subnegotiation_is_dropped():
    assert feed_cut(bytes([IAC, SB, IAC, SE]) + b"k", []) == (b"k", [])


def test_a_subnegotiation_of_only_its_option_has_an_empty_payload():
    assert feed_cut(bytes([IAC, SB, 9, IAC, SE]), []) == (b"", [("sub", 9, b"")])


def test_a_malformed_subnegotiation_end_drops_it_and_goes_back_to_data():
    # IAC followed by neither IAC nor SE inside SB: dropped, the byte after is data
    stream = bytes([IAC, SB, COM_PORT, 1, 2, IAC, NOP]) + b"tail"
    assert feed_cut(stream, []) == (b"tail", [])
    # and the next subnegotiation starts afresh
    stream += bytes([IAC, SB, COM_PORT, 3, IAC, SE])
    assert feed_cut(stream, []) == (b"tail", [("sub", COM_PORT, b"\x03")])


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 2])
def test_the_subnegotiation_bound_is_64_bytes_with_the_option(size):
    body = bytes([COM_PORT]) + bytes(range(1, size))  # ``size`` bytes in all, no 255
    data, events = feed_cut(bytes([IAC, SB]) + body + bytes([IAC, SE]) + b"z", [])
    assert data == b"z"
    assert events == ([("sub", COM_PORT, body[1:])] if size <= LIMIT else [])


def test_the_bound_counts_an_escaped_255_once():
    body = bytes([COM_PORT]) + b"\xff" * (LIMIT - 1)
    stream = bytes([IAC, SB]) + escape(body) + bytes([IAC, SE])
    assert feed_cut(stream, []) == (b"", [("sub", COM_PORT, body[1:])])
    over = bytes([IAC, SB]) + escape(body + b"\xff") + bytes([IAC, SE])
    assert feed_cut(over, []) == (b"", [])


def test_an_overflowed_subnegotiation_does_not_spoil_the_next():
    long = bytes([IAC, SB, COM_PORT]) + b"x" * 100 + bytes([IAC, SE])
    short = bytes([IAC, SB, COM_PORT, 5, IAC, SE])
    assert feed_cut(long + short, []) == (b"", [("sub", COM_PORT, b"\x05")])


def test_a_chunk_without_iac_inside_a_subnegotiation_is_not_data():
    stream = bytes([IAC, SB, COM_PORT]) + b"abc" + bytes([IAC, SE]) + b"d"
    assert feed_cut(stream, [3, 6]) == (b"d", [("sub", COM_PORT, b"abc")])
    # cut between IAC and SE inside SB, and between IAC and the option
    assert feed_cut(stream, [7]) == (b"d", [("sub", COM_PORT, b"abc")])
    assert feed_cut(bytes([IAC, DO]) + b"\x2c" + b"e", [2]) == (b"e", [("neg", DO, 44)])


# -- random streams of tokens, cut anywhere -------------------------------------------------


def _token() -> st.SearchStrategy[tuple[bytes, bytes, list[tuple[object, ...]]]]:
    """(wire bytes, data the parser gives, events it hands over)."""
    plain = st.binary(min_size=1, max_size=8).map(lambda b: b.replace(b"\xff", b"")).filter(bool)
    data = plain.map(lambda b: (b, b, []))
    escaped = st.just((bytes([IAC, IAC]), b"\xff", []))
    neg = st.tuples(st.sampled_from([WILL, WONT, DO, DONT]), st.integers(0, 255)).map(
        lambda co: (bytes([IAC, co[0], co[1]]), b"", [("neg", co[0], co[1])])
    )
    one = st.sampled_from([NOP, GA, BRK, 242, 244, 245, 246, 247, 248]).map(lambda c: (bytes([IAC, c]), b"", []))
    sub = st.tuples(st.integers(0, 255), st.binary(max_size=LIMIT + 4)).map(
        lambda op: (
            bytes([IAC, SB]) + escape(bytes([op[0]]) + op[1]) + bytes([IAC, SE]),
            b"",
            [("sub", op[0], op[1])] if len(op[1]) + 1 <= LIMIT else [],
        )
    )
    return st.one_of(data, escaped, neg, one, sub)


@settings(max_examples=150, deadline=None)
@given(st.lists(_token(), max_size=10), st.lists(st.integers(0, 400), max_size=6))
def test_random_streams_parse_to_what_they_were_made_of(tokens, cuts):
    stream = b"".join(t[0] for t in tokens)
    want_data = b"".join(t[1] for t in tokens)
    want_events = [e for t in tokens for e in t[2]]
    got = feed_cut(stream, [c for c in cuts if c <= len(stream)])
    assert got == (want_data, want_events)
