"""The test kit's fixtures, each driving real firmware-host code: the serial
mock under open_serial and a Runtime, emulated boards on ptys, fh_device
(emulated here; the --fh-port path runs in test_testkit_pytester.py), and the
runtime harness."""

from __future__ import annotations

import pytest
import serial

from firmware_host import Codec, Fh1Codec, Frame, PortClosed, encode_packet
from firmware_host.codecs import BUILTIN_CODECS
from firmware_host.codecs.fh1 import TYPE_COMMAND
from firmware_host.config import config_from_dict
from firmware_host.testing import AccountingError, assert_accounting, resolve_board
from firmware_host.transport.serial import open_serial
from tests.conftest import read_jsonl

pytestmark = pytest.mark.timeout(20)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}


def packets(seqs: range, frame_type: int = 0) -> bytes:
    return b"".join(encode_packet(frame_type, s, s.to_bytes(4, "little")) for s in seqs)


# -- fh_serial_mock ---------------------------------------------------------------


async def test_serial_mock_under_open_serial(fh_serial_mock):
    dev = fh_serial_mock.device("/dev/ttyACM0", b"hello ")
    port = await open_serial("/dev/ttyACM0", 921600)
    try:
        assert await port.read() == b"hello "
        dev.feed(b"world")
        assert await port.read() == b"world"
        port.write(b"cmd\n")
        assert await dev.wait_written(4) == b"cmd\n"
        dev.fail(OSError(5, "Input/output error"))  # pyserial reports it as SerialException
        with pytest.raises(PortClosed, match="read failed"):
            await port.read()
    finally:
        await port.close()
    assert dev.opens == 1 and dev.baudrates == [921600] and not dev.is_open
    assert fh_serial_mock.serial_for_url.call_count == 1


async def test_serial_mock_open_errors_and_unplug(fh_serial_mock):
    with pytest.raises(PortClosed, match="not a mocked device"):
        await open_serial("/dev/ttyUSB9", 9600)  # unregistered: never reaches real hardware
    dev = fh_serial_mock.device("/dev/ttyACM0")
    dev.open_error = PermissionError(13, "Permission denied")
    with pytest.raises(PortClosed, match="permission denied: add the user to the dialout group"):
        await open_serial("/dev/ttyACM0", 9600)
    dev.open_error = None
    port = await open_serial("/dev/ttyACM0", 9600)
    dev.feed(b"late")  # queued, not read before the cable goes
    dev.unplug()
    with pytest.raises(PortClosed, match="disconnected"):
        await port.read()
    await port.close()
    with pytest.raises(PortClosed, match="no such port: `firmware-host devices`"):
        await open_serial("/dev/ttyACM0", 9600)
    dev.replug()
    port = await open_serial("/dev/ttyACM0", 9600)
    assert await port.read() == b"late"  # the script survives the replug, in order
    await port.close()
    assert (dev.open_attempts, dev.opens) == (4, 2)


async def test_serial_mock_drives_a_runtime(fh_serial_mock, fh_runtime, fh_jsonl):
    """Scripted reads become frames; a SerialException makes the reader
    reconnect; downlink writes are captured."""
    dev = fh_serial_mock.device("/dev/ttyACM0", packets(range(50)))
    config = {
        "buffer": {"flush_interval": 0.02},
        "devices": [{"name": "imu", "port": "/dev/ttyACM0", "codec": "fh1", **FAST}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_frames("imu", 50)
        dev.fail(serial.SerialException("cable yanked"))
        dev.feed(packets(range(50, 80)))  # read by the next connection
        await rt.wait_counter("imu", "reconnects", 1)
        status = await rt.wait_frames("imu", 80)
        assert status["devices"]["imu"]["gaps"] == 0
        await rt.wait_state("imu", "connected")
        assert rt.send("imu", TYPE_COMMAND, b"reset")
        written = await dev.wait_written(len(encode_packet(TYPE_COMMAND, 0, b"reset")))
        await rt.wait_flushed("imu", 80)
    [cmd] = Fh1Codec().feed(written, 0.0)
    assert (cmd.type, cmd.payload) == (TYPE_COMMAND, b"reset")
    assert dev.opens == 2 and "cable yanked" in (rt.summary.status["devices"]["imu"]["last_error"] or "")
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(80))


async def test_serial_mock_unplug_under_a_runtime(fh_serial_mock, fh_runtime):
    dev = fh_serial_mock.device("/dev/ttyACM0", packets(range(10)))
    config = {"devices": [{"name": "d", "port": "/dev/ttyACM0", "codec": "fh1", **FAST}]}
    async with fh_runtime(config) as rt:
        await rt.wait_frames("d", 10)
        dev.unplug()
        await rt.wait_state("d", "backoff")
        await dev.wait_for(lambda: dev.open_attempts >= 3)  # retrying against a missing device
        dev.feed(packets(range(10, 20)))
        dev.replug()
        await rt.wait_frames("d", 20)
        assert (await rt.status())["devices"]["d"]["reconnects"] == 1


# -- fh_board -------------------------------------------------------------------------


async def test_board_frames_noise_and_downlink(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(20, type=3, payload=b"xyz")
        await board.noise(64)
        await board.send_frames(5, payload=lambda seq: f"s{seq}")
        status = await rt.wait_frames("b", 25)
        d = status["devices"]["b"]
        assert d["rejected"] >= 1 and d["gaps"] == 0  # noise is rejected and costs no frame
        assert rt.send("b", TYPE_COMMAND, b"ping")
        [frame] = await board.read_downlink()
        assert (frame.type, frame.payload) == (TYPE_COMMAND, b"ping")
    assert board.sent == 25 and board.seq == 25


async def test_board_by_name_uses_its_codec_settings(fh_board, fh_runtime):
    imu = fh_board("nucleo-imu")
    entry = imu.config("imu0")
    assert (entry["codec"], entry["max_payload"], entry["baudrate"]) == ("fh1", 256, 921600)
    seen = []
    async with fh_runtime({"devices": [entry]}, processors=[lambda fs: seen.extend(fs) or fs]) as rt:
        await rt.wait_state("imu0", "connected")
        await imu.send_frames(3)
        await rt.wait_frames("imu0", 3)
    assert [(f.type, len(f.payload)) for f in seen] == [(1, 48)] * 3  # the board's frame type and size


async def test_board_text_codecs_and_replug(fh_board, fh_runtime):
    gnss, console = fh_board("gnss-nmea"), fh_board("lines", max_line=64)
    config = {"devices": [gnss.config("gnss", **FAST), console.config("con", **FAST)]}
    seen: list[str] = []
    async with fh_runtime(config, processors=[lambda fs: seen.extend(f.text for f in fs) or fs]) as rt:
        await rt.wait_state("gnss", "connected")
        await rt.wait_state("con", "connected")
        await gnss.send_lines(["GPTXT,01,01,02,hello"])
        await gnss.noise(40)
        await console.send_lines(["boot ok"])
        with pytest.raises(TypeError):
            await fh_board("fh1").send_lines(["x"])
        status = await rt.wait_frames("gnss", 1)
        await rt.wait_counter("gnss", "rejected", 1)
        console.unplug()
        await rt.wait_state("con", "backoff")
        console.replug()
        await rt.wait_counter("con", "reconnects", 1)
        await rt.wait_state("con", "connected")
        await console.send_lines(["after replug"])
        status = await rt.wait_frames("con", 2)
    assert status["devices"]["con"]["frames"] == 2
    assert seen.count("boot ok") == 1 and "after replug" in seen
    assert any(t.startswith("$GPTXT,01,01,02,hello*") for t in seen)


async def test_board_streams_at_a_rate(fh_board, fh_runtime):
    board = fh_board("env-sensor")  # fh1, type 0x02, 12-byte payloads
    async with fh_runtime({"devices": [board.config("env", **FAST)]}) as rt:
        async with board.streaming(rate=500):
            status = await rt.wait_frames("env", 30)
    assert status["devices"]["env"]["gaps"] == 0 and board.sent >= 30


async def test_board_streaming_across_a_replug(fh_board, fh_runtime):
    """The kit streams on the emulator's paced loop: unplugged it sends nothing
    and takes no seq, and it resumes by itself once replugged."""
    board = fh_board("lines")
    async with fh_runtime({"devices": [board.config("con", **FAST)]}) as rt:
        async with board.streaming(rate=200):
            await rt.wait_frames("con", 20)
            board.unplug()
            await rt.wait_state("con", "backoff")
            seq = board.seq
            board.replug()
            await rt.wait_counter("con", "reconnects", 1)
            frames = (await rt.wait_state("con", "connected"))["devices"]["con"]["frames"]
            await rt.wait_frames("con", frames + 20)
    assert board.unplugs == 1 and board.seq >= seq + 20
    assert 0 < board.bytes_written <= sum(len(f"frame {i}\n") for i in range(board.seq))


class KvCodec(Codec):
    """A plugin's codec, none of the built-ins: ``key=value`` lines."""

    name = "kv"
    text = True

    def __init__(self, device: str = "") -> None:
        super().__init__(device)
        self.seq = 0
        self._pending = b""

    def feed(self, data: bytes, ts: float) -> list[Frame]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        self._pending = self._pending[-256:]
        frames = []
        for line in lines:
            if line.count(b"=") != 1 or not line.isascii():
                self.rejected += 1
                continue
            frames.append(Frame(self.device, self.seq, None, ts, None, line.decode()))
            self.seq += 1
        return frames

    def reset(self) -> None:
        self._pending = b""

    def encode(self, frame_type: int | None, seq: int, body: bytes | str) -> bytes:
        return (body.encode() if isinstance(body, str) else body) + b"\n"


async def test_board_with_a_plugin_codec(fh_board, fh_runtime):
    """A plugin codec gets the emulator's generic wire: its own encode, and
    noise probed against it so that it never decodes."""
    board = fh_board("kv", codecs={"kv": KvCodec})
    # a Config, not a dict: fh_runtime validates a dict without the runtime's codecs
    config = config_from_dict({"devices": [board.config("kv", **FAST)]}, known_codecs={"kv", *BUILTIN_CODECS})
    async with fh_runtime(config, codecs={"kv": KvCodec}) as rt:
        await rt.wait_state("kv", "connected")
        assert await board.send_lines(["a=1", "b=2"]) == b"a=1\nb=2\n"
        for _ in range(5):
            await board.noise(40)
        await board.send_frames(1, payload="c=3")
        status = await rt.wait_frames("kv", 3)
        await rt.wait_counter("kv", "rejected", 5)
        assert status["devices"]["kv"]["frames"] == 3


def test_resolve_board_errors():
    with pytest.raises(LookupError, match="unknown board or codec 'nope'"):
        resolve_board("nope")
    assert resolve_board("nmea").codec == "nmea"
    assert resolve_board("fh1", codec_options={"max_payload": 64}).codec_options == {"max_payload": 64}


# -- fh_device ---------------------------------------------------------------------------


async def test_fh_device_is_emulated_without_fh_port(fh_device, fh_runtime):
    assert fh_device.emulated and fh_device.codec == "fh1"
    async with fh_device.streaming(), fh_runtime({"devices": [fh_device.config("dut", **FAST)]}) as rt:
        await rt.wait_frames("dut", 10)


@pytest.mark.fh_hardware
def test_fh_hardware_is_skipped_without_fh_port():
    raise AssertionError("must not run without --fh-port")


# -- fh_runtime --------------------------------------------------------------------------


def test_assert_accounting():
    good = {"devices": {"a": {"frames": 5, "flushed": 2, "dropped": 1, "buffered": 2}}}
    assert_accounting(good)
    bad = {"devices": {"a": {"frames": 5, "flushed": 2, "dropped": 1, "buffered": 1}}}
    with pytest.raises(AccountingError, match="a: frames 5 != flushed 2"):
        assert_accounting(bad)


async def test_runtime_is_shut_down_when_the_test_fails(fh_serial_mock, fh_runtime):
    fh_serial_mock.device("/dev/ttyACM0", packets(range(3)))
    config = {"devices": [{"name": "d", "port": "/dev/ttyACM0", "codec": "fh1"}]}
    holder = []
    with pytest.raises(RuntimeError, match="test body failed"):
        async with fh_runtime(config) as rt:
            holder.append(rt)
            await rt.wait_frames("d", 3)
            raise RuntimeError("test body failed")
    summary = holder[0].summary
    assert summary is not None and summary.status["devices"]["d"]["state"] == "closed"
    with pytest.raises(TimeoutError):
        async with fh_runtime(config) as rt:
            await rt.wait_frames("d", 1, timeout=0.05)  # no script left: times out, never hangs


def test_fh_jsonl(fh_jsonl, tmp_path):
    assert fh_jsonl.parent == tmp_path and not fh_jsonl.exists()


async def test_fh_runtime_takes_a_dict_config_that_names_a_codec_it_is_given(fh_runtime):
    """A dict config may name a codec passed as ``codecs=`` (as a config file
    may name a plugin's): it used to be refused as an unknown codec."""
    from firmware_host import FakeOpener, FakePort, LinesCodec

    class Shout(LinesCodec):
        name = "shout"

    port = FakePort([b"hello\nworld\n"])
    config = {"devices": [{"name": "d", "port": "fake://d", "codec": "shout"}]}
    async with fh_runtime(config, codecs={"shout": Shout}, opener=FakeOpener({"fake://d": [port]})) as rt:
        await rt.wait_frames("d", 2)
