"""Record and replay (firmware_host.recorder, recordfile, emulation.replay):
a device's raw bytes recorded through the control socket, played back on a
pty through a runtime, the same frames; faults whose effect on the runtime's
counters is known in advance, exactly; bounded recorders that lose (counted,
marked), never block the reader; damaged files replayed as far as they go."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from firmware_host.codecs import make_codec
from firmware_host.recorder import FileRecorder, RawSubscription
from firmware_host.recordfile import (
    DATA,
    END,
    LOSS,
    Header,
    RecordingError,
    RecordParser,
    encode_data,
    encode_end,
    encode_header,
    encode_loss,
    loss_counts,
    parse_recording,
    read_recording,
)
from firmware_host.testing import ReplayFaults, assert_accounting
from tests.conftest import fill, read_jsonl

pytestmark = pytest.mark.timeout(30)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}
HEADER = Header(device="d", port="/dev/x", baudrate=115200, codec="fh1", started=1.5)


def frames_of(path: Path, device: str) -> list[tuple[int, int, str]]:
    """(seq, type, payload) of a device's frames in a jsonl sink's file."""
    return [(r["seq"], r["type"], r["payload"]) for r in read_jsonl(path) if r["device"] == device]


def counters(status: dict[str, Any], device: str) -> tuple[int, int, int]:
    d = status["devices"][device]
    return d["frames"], d["rejected"], d["gaps"]


async def start_recording(sock: str, device: str, **extra: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(json.dumps({"cmd": "record", "device": device, **extra}).encode() + b"\n")
    reply = json.loads(await reader.readline())
    assert reply["ok"], reply
    return reader, writer


async def read_all(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while chunk := await reader.read(65536):
        out += chunk
    return bytes(out)


# -- the file format ---------------------------------------------------------------------


def test_the_format_round_trips_in_any_pieces_and_skips_kinds_it_does_not_know():
    data = (
        encode_header(HEADER)
        + encode_data(0, b"abc")
        + encode_loss(10, 2, 40)
        + b"\x09" + (5).to_bytes(8, "little") + (3).to_bytes(4, "little") + b"new"  # a later version's kind
        + encode_data(20, b"\x00de")
        + encode_end(30, {"reason": "stopped"})
    )  # fmt: skip
    whole = parse_recording(data)
    assert whole.header == HEADER
    assert whole.chunks == [(0, b"abc"), (20, b"\x00de")]
    assert (whole.lost_chunks, whole.lost_bytes, whole.end, whole.truncated) == (2, 40, {"reason": "stopped"}, 0)
    parser = RecordParser()
    kinds = [rec.kind for i in range(len(data)) for rec in parser.feed(data[i : i + 1])]  # a byte at a time
    assert kinds == [DATA, LOSS, 9, DATA, END]
    assert loss_counts(encode_loss(0, 3, 7)[13:]) == (3, 7)


def test_a_cut_file_keeps_its_whole_records_and_says_so():
    data = encode_header(HEADER) + encode_data(0, b"one") + encode_data(5, b"two")
    cut = parse_recording(data[:-2])
    assert cut.chunks == [(0, b"one")]
    assert cut.truncated == 13 + 1  # the partial record's head and the one byte of its body
    assert cut.end is None
    assert "cut short" in cut.notes()[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no FHREC header"),
        (b"PK\x03\x04 a zip file\n", "no FHREC header"),
        (b"FHREC/2 {}\n", "version 2 is not supported"),
        (b"FHREC/1 {nope\n", "not JSON"),
        (b'FHREC/1 {"baudrate": "fast"}\n', "'baudrate' must be a int"),
        (encode_header(HEADER) + b"\x01" + bytes(8) + (1 << 30).to_bytes(4, "little"), "a record of 1073741824 bytes"),
    ],
)
def test_what_is_not_a_recording_is_one_clear_error(data: bytes, message: str):
    with pytest.raises(RecordingError, match=message):
        parse_recording(data)


# -- the bounded recorder -------------------------------------------------------------------


async def test_a_writer_that_cannot_keep_up_loses_reads_counted_and_marked_never_blocking(tmp_path: Path):
    """A FIFO nobody reads is a disk that stopped: the writer's thread blocks,
    ``put`` never does; every read is kept or lost, and the file says where."""
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    drain_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the far end, not reading yet
    os.set_blocking(drain_fd, True)
    # a second writer held open until the end: the reader sees EOF only once
    # the recorder has closed, however late its thread opened the FIFO
    keep_fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    sub = RawSubscription(None, HEADER, limit=8192)
    writer = FileRecorder(str(fifo), sub)
    task = asyncio.create_task(writer.run())
    chunk = bytes(range(256)) * 4
    loop = asyncio.get_running_loop()
    puts = 0
    # 300 KiB: more than the pipe (64 KiB) and the buffer (8 KiB) hold, so reads are lost
    while sub.lost_chunks < 50 or puts < 300:
        before = loop.time()
        sub.put(chunk, 0.0)
        puts += 1
        assert loop.time() - before < 0.05  # never waits on the writer
        await asyncio.sleep(0)  # the writer takes what it can between reads, as between a reader's reads
        assert puts < 10_000, "nothing was ever lost"
    sub.close("done")
    os.close(keep_fd)

    def read_to_eof() -> bytes:  # the disk comes back: everything is written, then the END record
        out = bytearray()
        while data := os.read(drain_fd, 65536):
            out += data
        return bytes(out)

    try:
        got, _ = await asyncio.gather(asyncio.to_thread(read_to_eof), task)
    finally:
        os.close(drain_fd)
    rec = parse_recording(bytes(got))
    assert writer.error is None
    assert puts == sub.chunks + sub.lost_chunks
    assert len(rec.chunks) == sub.chunks and rec.lost_chunks == sub.lost_chunks > 0
    assert rec.lost_bytes == sub.lost_bytes == sub.lost_chunks * len(chunk)
    assert rec.end is not None and rec.end["lost_chunks"] == sub.lost_chunks and rec.end["reason"] == "done"


async def test_a_full_disk_ends_the_recording_with_the_reason(tiny_fs: Path):
    filler = fill(tiny_fs)
    try:
        sub = RawSubscription(None, HEADER)
        writer = FileRecorder(str(tiny_fs / "x.fhrec"), sub)
        task = asyncio.create_task(writer.run())
        for _ in range(100):
            sub.put(bytes(4096), 0.0)
            await asyncio.sleep(0)
        await asyncio.wait_for(task, 10)  # it ends by itself: nothing more can be written
        assert writer.error is not None and "No space left" in writer.error
        assert sub.closed and sub.reason is not None and sub.reason.startswith("write failed")
        sub.put(b"more", 0.0)  # a closed recording takes nothing (the reader goes on)
        assert sub.chunks + sub.lost_chunks <= 100
    finally:
        filler.unlink()


async def test_buffer_bounds_are_checked():
    for bad in (0, 4095, 64 * 1024 * 1024 + 1):
        with pytest.raises(ValueError, match="recording buffer"):
            RawSubscription(None, HEADER, limit=bad)


# -- through a runtime -------------------------------------------------------------------------


async def test_record_through_the_control_socket_then_replay_gives_the_live_frames(
    fh_board, fh_runtime, short_tmp: Path, tmp_path: Path
):
    board = fh_board("fh1")
    sock = str(short_tmp / "ctl.sock")
    live_out, replay_out = tmp_path / "live.jsonl", tmp_path / "replay.jsonl"
    config = {
        "devices": [board.config("b", **FAST)],
        "sinks": [{"type": "jsonl", "path": str(live_out)}],
        "buffer": {"flush_interval": 0.05},
    }
    async with fh_runtime(config, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        reader, writer = await start_recording(sock, "b")
        collected = asyncio.create_task(read_all(reader))
        for i in range(5):  # several reads, with faults of the live kind in between
            await board.send_frames(10)
            if i == 2:
                await board.noise(12)
            await asyncio.sleep(0.02)
        await board.send_frames(3, seq=1000)  # a gap
        live = await rt.wait_frames("b", 53)
        await rt.wait_counter("b", "gaps", 1)
        status = await rt.shutdown()  # the recording ends with the runtime: an END record
        data = await asyncio.wait_for(collected, 10)
        writer.close()
    live_counts = counters(status.status, "b")
    assert live_counts == (53, counters(live, "b")[1], 1)
    recording = parse_recording(data)
    assert recording.end is not None and recording.end["reason"] == "the runtime stopped"
    assert recording.header.device == "b" and recording.header.codec == "fh1"
    assert recording.nbytes == status.status["devices"]["b"]["bytes"] == board.bytes_written
    assert len(recording.chunks) > 1 and recording.lost_chunks == 0
    path = tmp_path / "b.fhrec"
    path.write_bytes(data)

    replay = fh_board.replay(path, speed=4)
    assert (replay.expected.frames, replay.expected.rejected, replay.expected.gaps) == live_counts
    config = {
        "devices": [replay.config("b", **FAST)],
        "sinks": [{"type": "jsonl", "path": str(replay_out)}],
        "buffer": {"flush_interval": 0.05},
    }
    async with fh_runtime(config) as rt:
        await replay.play()
        await rt.wait_frames("b", replay.expected.frames)
        summary = await rt.shutdown()
    assert counters(summary.status, "b") == live_counts
    assert frames_of(replay_out, "b") == frames_of(live_out, "b")
    assert len(frames_of(live_out, "b")) == 53


@pytest.mark.parametrize("codec", ["fh1", "nmea"])
async def test_a_replay_with_faults_says_in_advance_exactly_what_the_runtime_counts(
    fh_board, fh_runtime, tmp_path: Path, codec: str
):
    wire = make_codec(codec, "x")
    body = (lambda s: f"FHTST,{s}") if codec == "nmea" else (lambda s: s.to_bytes(4, "little") * 4)
    chunks = [(i * 1000, b"".join(wire.encode(0, i * 20 + k, body(i * 20 + k)) for k in range(20))) for i in range(30)]
    header = Header(device="x", port="/dev/x", baudrate=115200, codec=codec, started=0.0)
    path = tmp_path / "x.fhrec"
    path.write_bytes(encode_header(header) + b"".join(encode_data(t, d) for t, d in chunks))
    faults = ReplayFaults(noise=0.05, corrupt=0.05, drop=0.05, skip=0.05, seed=11)
    replay = fh_board.replay(path, speed=0, faults=faults)
    expected = replay.expected
    # every fault had something to do, so the counts prove something
    assert 0 < expected.frames < 600 and expected.rejected > 20
    if codec == "fh1":
        assert expected.gaps > 10
    again = fh_board.replay(path, speed=0, faults=faults)
    assert again.chunks == replay.chunks  # seeded: the same bytes every time
    async with fh_runtime({"devices": [replay.config("x", **FAST)]}) as rt:
        await replay.play()
        status = await rt.wait_until(lambda s: counters(s, "x")[:2] >= (expected.frames, expected.rejected), timeout=15)
        assert counters(status, "x") == (expected.frames, expected.rejected, expected.gaps)
        assert_accounting(await rt.status())


async def test_a_cut_recording_replays_what_it_holds(fh_board, fh_runtime, tmp_path: Path):
    wire = make_codec("fh1", "x")
    data = encode_header(HEADER) + b"".join(encode_data(i, wire.encode(0, i, b"abcd")) for i in range(10))
    path = tmp_path / "cut.fhrec"
    path.write_bytes(data[:-3])  # a power cut in the last record
    replay = fh_board.replay(path, speed=0)
    assert replay.recording.truncated > 0
    assert (replay.expected.frames, replay.expected.rejected, replay.expected.gaps) == (9, 0, 0)
    async with fh_runtime({"devices": [replay.config("x", **FAST)]}) as rt:
        await replay.play()
        status = await rt.wait_frames("x", 9)
        assert counters(status, "x") == (9, 0, 0)


async def test_a_partial_last_frame_counts_once_the_port_closes(fh_board, fh_runtime, tmp_path: Path):
    wire = make_codec("fh1", "x")
    frame = wire.encode(0, 0, b"abcd")
    path = tmp_path / "tail.fhrec"
    path.write_bytes(encode_header(HEADER) + encode_data(0, frame + frame[:3]))
    replay = fh_board.replay(path, speed=0)
    assert (replay.expected.frames, replay.expected.rejected, replay.expected.rejected_at_close) == (1, 0, 1)
    assert "once the port closes" in replay.expected.line()
    async with fh_runtime({"devices": [replay.config("x", **FAST)]}) as rt:
        await replay.play()
        await rt.wait_frames("x", 1)
        summary = await rt.shutdown()
    assert counters(summary.status, "x") == (1, 1, 0)


async def test_a_client_that_does_not_read_loses_its_recording_reads_never_the_runtimes(
    fh_board, fh_runtime, short_tmp: Path
):
    board = fh_board("fh1", max_payload=1024)
    sock = str(short_tmp / "ctl.sock")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        reader, writer = await start_recording(sock, "b", buffer=4096)
        total = 0
        for _ in range(60):  # ~3 MB: far beyond the socket's buffers and the 4 KiB of the recording
            await board.send_frames(50, payload=bytes(1000))
            total += 50
        status = await rt.wait_frames("b", total)  # the reader counted every frame
        summary = await rt.shutdown()
        data = await asyncio.wait_for(read_all(reader), 10)  # only now does the client read
        writer.close()
    rec = parse_recording(data)
    assert rec.end is not None
    assert rec.lost_chunks == rec.end["lost_chunks"] > 0
    assert len(rec.chunks) == rec.end["chunks"]
    assert rec.nbytes + rec.lost_bytes == summary.status["devices"]["b"]["bytes"] == board.bytes_written
    assert counters(status, "b")[0] == total


async def test_record_requests_are_checked(fh_board, fh_runtime, short_tmp: Path):
    from firmware_host.control.client import request

    board = fh_board("fh1")
    sock = str(short_tmp / "ctl.sock")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock) as rt:
        cases = [
            ({"cmd": "record"}, "record: missing 'device'"),
            ({"cmd": "record", "device": "nope"}, "unknown device 'nope' (known: b)"),
            ({"cmd": "record", "device": "b", "buffer": 10}, "'buffer' must be a whole number of bytes from 4096"),
            ({"cmd": "record", "device": "b", "buffer": True}, "'buffer' must be"),
            ({"cmd": "record", "device": "b", "file": "/etc/x"}, "unknown argument 'file'"),
        ]
        for req, message in cases:
            with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
                await request(sock, req)
            assert getattr(err.value, "exit_code", None) == 2
        assert rt.runtime.devices["b"].reader.recorder is None  # nothing was left attached
        reader, writer = await start_recording(sock, "b")
        assert rt.runtime.devices["b"].reader.recorder is not None
        writer.close()  # the client leaves: the recording ends and detaches
        await asyncio.wait_for(read_all(reader), 5)
        for n in range(1, 50):  # each frame is a read, and a status change to look again at
            await board.send_frames(1)
            await rt.wait_frames("b", n)
            if rt.runtime.devices["b"].reader.recorder is None:
                break
        assert rt.runtime.devices["b"].reader.recorder is None


async def test_a_removed_device_ends_its_recording(fh_board, fh_runtime, short_tmp: Path):
    board = fh_board("fh1")
    sock = str(short_tmp / "ctl.sock")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        reader, writer = await start_recording(sock, "b")
        await board.send_frames(3)
        await rt.wait_frames("b", 3)
        await rt.remove_device("b")
        rec = parse_recording(await asyncio.wait_for(read_all(reader), 5))
        writer.close()
    assert rec.end is not None and rec.end["reason"] == "the device was removed"
    assert rec.nbytes == board.bytes_written


def test_read_recording_refuses_a_file_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import firmware_host.recordfile as recordfile

    path = tmp_path / "big.fhrec"
    path.write_bytes(encode_header(HEADER) + encode_data(0, bytes(100)))
    monkeypatch.setattr(recordfile, "MAX_FILE", 50)
    with pytest.raises(RecordingError, match="too large"):
        read_recording(str(path))
    assert stat.S_ISREG(path.stat().st_mode)


@pytest.mark.parametrize(("speed", "low", "high"), [(1.0, 0.4, None), (4.0, 0.1, 0.35), (0.0, 0.0, 0.35)])
async def test_a_replay_keeps_the_recorded_pace_or_a_multiple_of_it(
    fh_board, fh_runtime, tmp_path: Path, speed: float, low: float, high: float | None
):
    wire = make_codec("fh1", "x")
    path = tmp_path / "paced.fhrec"
    path.write_bytes(
        encode_header(HEADER) + b"".join(encode_data(i * 200_000, wire.encode(0, i, b"ab")) for i in range(3))
    )
    replay = fh_board.replay(path, speed=speed)
    async with fh_runtime({"devices": [replay.config("x", **FAST)]}) as rt:
        await replay.wait_for_host()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await replay.play()
        took = loop.time() - started
        await rt.wait_frames("x", 3)
    assert took >= low  # never early: the reads 0.4 s apart in the recording, divided by the speed
    if high is not None:
        assert took < high


# -- a second reviewer's findings ---------------------------------------------------------


def hostile(path: Path, device: str, codec: str = "lines") -> Path:
    with open(path, "wb") as f:
        f.write(encode_header(Header(device=device, port="/dev/x", baudrate=115200, codec=codec)))
        f.write(encode_data(0, b"hello\n"))
        f.write(encode_end(10, {"reason": "stopped"}))
    return path


@pytest.mark.parametrize("device", ["../victim.txt", "/abs/victim.txt", "..", "a\x00b", "x" * 300])
def test_a_recordings_device_name_is_never_a_path(tmp_path: Path, device: str, capsys: Any) -> None:
    from firmware_host.emulation.replay import replay_main

    ports = tmp_path / "ports"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    rec = hostile(tmp_path / "evil.fhrec", device.replace("/abs", str(tmp_path)))
    assert replay_main(str(rec), directory=str(ports), duration=0.05, speed=0) == 0
    assert victim.read_text() == "keep me"
    assert sorted(os.listdir(ports)) == []  # the port link was named "replay", and is gone again
    out = capsys.readouterr().out
    assert out.startswith("replay ") and str(ports) in out


def test_a_header_version_too_long_to_be_a_number_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "big.fhrec"
    path.write_bytes(b"FHREC/" + b"9" * 5000 + b" {}\n")
    with pytest.raises(RecordingError, match="bad recording header"):
        read_recording(str(path))


def test_faults_need_a_delimited_codec(tmp_path: Path) -> None:
    from firmware_host.emulation.replay import replay_main

    rec = hostile(tmp_path / "u.fhrec", "gps", codec="ubx")
    assert replay_main(str(rec), directory=str(tmp_path / "p"), faults=ReplayFaults(noise=0.1), duration=0.05) == 2


def test_one_read_bigger_than_the_buffer_is_kept_when_nothing_is_held() -> None:
    sub = RawSubscription(None, HEADER, limit=4096)
    sub.put(bytes(5000), 0.0)  # a tty read may be 64 KiB, the smallest buffer 4 KiB
    sub.put(bytes(10), 0.0)  # while it is held, the next one does not fit
    assert (sub.chunks, sub.nbytes, sub.lost_chunks, sub.lost_bytes) == (1, 5000, 1, 10)


def test_a_short_write_is_finished() -> None:
    from firmware_host.recorder import _write_all

    class Trickle:
        def __init__(self) -> None:
            self.got = bytearray()

        def write(self, data: memoryview) -> int:
            self.got += data[:3]  # what a nearly full disk or a pipe may take
            return min(3, len(data))

    f = Trickle()
    _write_all(f, b"0123456789")  # type: ignore[arg-type]
    assert bytes(f.got) == b"0123456789"


async def test_a_record_request_whose_client_left_leaves_no_recording(fh_board, fh_runtime, tmp_path: Path) -> None:
    """The reply could not be sent (the client closed at once): nobody will ever
    read that recording, so it is taken off the reader then, not after the idle
    timeout (200 such clients held 8.5 MB for 30 s)."""
    import tempfile

    board = fh_board("fh1")
    with tempfile.TemporaryDirectory(prefix="fh-") as short:  # a socket path within 107 bytes
        sock = os.path.join(short, "ctl.sock")
        async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock) as rt:
            await rt.wait_state("b", "connected")
            for _ in range(20):
                _, w = await asyncio.open_unix_connection(sock)
                w.write(json.dumps({"cmd": "record", "device": "b", "buffer": 1 << 20}).encode() + b"\n")
                w.close()
            raw = rt.devices["b"].raw
            async with asyncio.timeout(10):
                # no event says "the server gave up on a reply": look each tick, bounded
                while rt._control.stats()["requests"] < 20 or raw.subscribers:
                    await asyncio.sleep(0.01)


def test_a_replay_counts_what_its_reads_cost_not_only_their_bytes(monkeypatch: Any) -> None:
    import firmware_host.recordfile as recordfile

    body = encode_header(HEADER) + b"".join(encode_data(i, b"ab") for i in range(100)) + encode_data(100, b"")
    assert len(parse_recording(body).chunks) == 100  # the empty read holds nothing
    monkeypatch.setattr(recordfile, "MAX_HELD", 50 * (2 + recordfile.READ_COST))
    with pytest.raises(RecordingError, match="read 51 of the recording takes it over"):
        parse_recording(body)
