"""The header-only C encoder (tools/c/fh1_encoder.h): compiled with the system
C compiler, its packets must decode on the host to exactly what was encoded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from firmware_host.codecs import Fh1Codec, encode_packet
from firmware_host.codecs.crc import CRC16_CHECK
from tests.conftest import c_compiler

pytestmark = pytest.mark.timeout(60)

C_DIR = Path(__file__).resolve().parents[1] / "tools" / "c"


@pytest.fixture(scope="module")
def example_output(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    cc = c_compiler("tools/c/example.c")
    exe = tmp_path_factory.mktemp("c") / "example"
    # strict C99 and warnings as errors: the header must build cleanly in firmware projects
    build = subprocess.run(
        [cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2", "-o", str(exe), str(C_DIR / "example.c")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_crc_check_value(example_output: list[str]) -> None:
    assert example_output[0] == f"crc {CRC16_CHECK:04x}"


def test_host_decodes_exactly_what_c_encoded(example_output: list[str]) -> None:
    packets = [line.split() for line in example_output if line.startswith("pkt ")]
    assert len(packets) >= 30
    codec = Fh1Codec("c", max_payload=1024)
    lengths = set()
    for _, type_text, seq_text, payload_hex, wire_hex in packets:
        frame_type, seq = int(type_text), int(seq_text)
        payload = b"" if payload_hex == "-" else bytes.fromhex(payload_hex)
        wire = bytes.fromhex(wire_hex)
        assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
        frames = codec.feed(wire, 0.0)
        assert len(frames) == 1, (frame_type, seq, len(payload))
        frame = frames[0]
        assert (frame.type, frame.seq, frame.payload) == (frame_type, seq, payload)
        # the minimal COBS encoding, byte for byte the same as the host's encoder
        assert wire == encode_packet(frame_type, seq, payload), len(payload)
        lengths.add(len(payload))
    assert codec.rejected == 0
    # the edge cases are all there: empty, around one full COBS block, the maximum
    assert {0, 253, 254, 255, 246, 247, 1024} <= lengths
    seqs = [int(p[2]) for p in packets]
    assert seqs[seqs.index(0xFFFFFFFE) : seqs.index(0xFFFFFFFE) + 3] == [0xFFFFFFFE, 0xFFFFFFFF, 0]


def test_seq_wrap_is_not_a_gap(example_output: list[str]) -> None:
    wires = [bytes.fromhex(line.split()[4]) for line in example_output if line.startswith("pkt 6 ")]
    codec = Fh1Codec("c")
    frames = codec.feed(b"".join(wires), 0.0)
    assert [f.seq for f in frames] == [0xFFFFFFFE, 0xFFFFFFFF, 0] and codec.gaps == 0


def test_too_small_buffer_sends_nothing(example_output: list[str]) -> None:
    assert example_output[-1] == "overflow 0"
