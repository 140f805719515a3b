"""The firmware side of commands in C (tools/c/fh1_command.h), compiled with
the system C compiler: it must take exactly the packets the host's codec
takes, and its acks must decode on the host as the replies to those seqs,
also in a live runtime where the compiled program is the device on a pty."""

from __future__ import annotations

import os
import subprocess
import tty
from pathlib import Path

import pytest

from firmware_host.codecs import Fh1Codec, encode_packet
from firmware_host.codecs.cobs import encode as cobs_encode
from firmware_host.codecs.fh1 import TYPE_COMMAND, TYPE_COMMAND_ACK
from firmware_host.request import ack_reply, acked_seq
from tests.conftest import c_compiler

pytestmark = pytest.mark.timeout(60)

C_DIR = Path(__file__).resolve().parents[1] / "tools" / "c"
MAX_BODY = 256  # command_example.c's buffer


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = c_compiler("tools/c/command_example.c")
    exe = tmp_path_factory.mktemp("c") / "command_example"
    # strict C99 and warnings as errors: the header must build cleanly in firmware projects
    build = subprocess.run(
        [
            cc,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-pedantic",
            "-Werror",
            "-O2",
            "-o",
            str(exe),
            str(C_DIR / "command_example.c"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert build.returncode == 0, build.stderr
    return str(exe)


def raw(packet: bytes) -> bytes:
    """A packet on the wire as it is, however wrong."""
    return cobs_encode(packet) + b"\x00"


def with_crc(body: bytes) -> bytes:
    from binascii import crc_hqx

    return body + crc_hqx(body, 0xFFFF).to_bytes(2, "little")


VECTORS = {
    "empty body": encode_packet(TYPE_COMMAND, 0, b""),
    "text": encode_packet(TYPE_COMMAND, 1, b"ping"),
    "zeros": encode_packet(TYPE_COMMAND, 2, b"\x00\x00\x01\x00"),
    **{
        f"{n} bytes": encode_packet(TYPE_COMMAND, 10 + n, bytes((i % 255) + 1 for i in range(n)))
        for n in (245, 246, 247, 248, 253, 254, 255, 256)
    },
    "largest, zeros": encode_packet(TYPE_COMMAND, 3, bytes(MAX_BODY)),
    "seq wraps": encode_packet(TYPE_COMMAND, 0xFFFFFFFF, b"w"),
    "another type": encode_packet(0x05, 4, b"data"),
    "resync": b"\x00",
    "bad crc": raw(with_crc(b"\x01\xf0\x05\x00\x00\x00abc")[:-1] + b"\x00"),
    "bad version": raw(with_crc(b"\x02\xf0\x06\x00\x00\x00abc")),
    "too short": raw(b"\x01\xf0\x07\x00\x00\x00\x00"),
    "cobs overrun": b"\x05ab\x00",
    "too long": encode_packet(TYPE_COMMAND, 8, bytes((i % 255) + 1 for i in range(MAX_BODY + 1))),
    "too long, zeros": encode_packet(TYPE_COMMAND, 9, bytes(MAX_BODY + 1)),  # fits the buffer, not max_payload
    "after all that": encode_packet(TYPE_COMMAND, 5, b"still in sync"),
}


def test_the_c_decoder_takes_what_the_host_takes_and_acks_each_command(firmware: str) -> None:
    stream = b"".join(VECTORS.values())
    run = subprocess.run([firmware], input=stream, capture_output=True, timeout=20)
    assert run.returncode == 0, run.stderr
    log = run.stderr.decode().splitlines()
    host = Fh1Codec("host", max_payload=MAX_BODY)
    expected_log = []
    expected_acks = []
    for name, wire in VECTORS.items():
        rejected = host.rejected
        frames = host.feed(wire, 0.0)
        if host.rejected > rejected:
            expected_log.append(("rej", name))
        for f in frames:
            if f.type == TYPE_COMMAND:
                expected_log.append(("cmd", f"{f.seq} {f.payload.hex() or '-'}"))
                expected_acks.append((f.seq, b"ok:" + f.payload))
            else:
                expected_log.append(("pkt", f"{f.type} {f.seq}"))
    assert [line.split(" ", 1)[0] for line in log] == [kind for kind, _ in expected_log]
    assert [line.split(" ", 1)[1] for line in log if not line.startswith("rej")] == [
        text for kind, text in expected_log if kind != "rej"
    ]
    # the acks, decoded by the host: the replies to those seqs, in order, with the board's own seqs
    device = Fh1Codec("dev", max_payload=MAX_BODY + 16)
    acks = device.feed(run.stdout, 0.0)
    assert device.rejected == 0 and device.gaps == 0
    assert [a.type for a in acks] == [TYPE_COMMAND_ACK] * len(expected_acks)
    assert [(acked_seq(a), ack_reply(a)) for a in acks] == expected_acks
    assert [a.seq for a in acks] == list(range(len(acks)))
    # byte for byte what the host's encoder makes of the same ack
    assert run.stdout == b"".join(
        encode_packet(TYPE_COMMAND_ACK, i, seq.to_bytes(4, "little") + reply)
        for i, (seq, reply) in enumerate(expected_acks)
    )


async def test_a_runtime_request_answered_by_the_c_firmware_on_a_pty(firmware: str, fh_runtime) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([firmware], stdin=master, stdout=master, stderr=subprocess.PIPE)
    try:
        path = os.ttyname(slave)
        config = {"devices": [{"name": "c", "port": path, "codec": "fh1", "backoff_initial": 0.02}]}
        async with fh_runtime(config) as rt:
            await rt.wait_state("c", "connected")
            first = await rt.request("c", TYPE_COMMAND, b"\x01\x02", timeout=5.0)
            second = await rt.request("c", body="led on", timeout=5.0)
            assert (acked_seq(first), ack_reply(first)) == (0, b"ok:\x01\x02")
            assert (acked_seq(second), ack_reply(second)) == (1, b"ok:led on")
            assert (first.seq, second.seq) == (0, 1)  # the firmware's own uplink seqs
            status = await rt.wait_frames("c", 2)
            assert status["devices"]["c"]["rejected"] == 0 and status["devices"]["c"]["gaps"] == 0
    finally:
        os.close(slave)  # the firmware's read of the master ends (EIO): it exits
        try:
            proc.wait(timeout=10)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
            assert proc.stderr is not None
            proc.stderr.close()
