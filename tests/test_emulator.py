"""The emulator: fleet specs, payload generators, fault injection, and every
shipped board run through the runtime with the host's counters held to the
emulator's exact accounting."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import os
import random
import struct
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware_host.codecs import encode_packet, make_codec
from firmware_host.codecs.nmea import nmea_checksum
from firmware_host.config.boards import BOARDS_ENV_VAR, Board, load_boards
from firmware_host.config.schema import config_from_dict
from firmware_host.emulation.fleet import DEFAULT_FLEET, EmulatedDevice, FaultOptions, Fleet, parse_emulate_spec
from firmware_host.emulation.generators import GnssGenerator, ReplayGenerator, make_generator
from firmware_host.emulation.hostwatch import HostWatch
from firmware_host.emulation.stream import Pacer
from firmware_host.emulation.virtualport import VirtualPort, wake
from firmware_host.emulation.wire import FaultWire, make_wire
from firmware_host.runtime import Runtime
from firmware_host.testing import BoardSpec, EmulatedBoard, resolve_board

pytestmark = pytest.mark.timeout(60)

CAPTURE = Path(__file__).resolve().parent / "data" / "gpsd" / "neo-m8n.log"  # a real receiver, vendored
# One epoch of the gpsd project's neo-m8n.log capture (BSD-2-Clause, the GPSD
# project), plus one line with a broken checksum, for replay tests that must
# not depend on the shared folder.
NEO_M8N_EPOCH = """\
# u-blox NEO-M8N, from gpsd's test logs
$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76
$GNVTG,,T,,M,0.117,N,0.216,K,A*3F
$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44
$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15
$GNGSA,A,3,67,83,76,82,68,,,,,,,,1.56,0.91,1.27*1D
$GPGSV,4,4,13,32,76,331,31*48
$GNGLL,4404.14063,N,12118.85478,W,171926.00,A,A*66
$GNRMC,171927.00,A,4404.14058,N,12118.85475,W,0.084,,180315,,,A*79
$GNGGA,171927.00,4404.14058,N,12118.85475,W,1,12,0.91,1147.0,M,-21.3,M,,*00
"""
# fields per sentence type in the real NEO-M8N capture (talker and type included)
CAPTURE_FIELDS = {"GNRMC": 13, "GNVTG": 10, "GNGGA": 15, "GNGSA": 18, "GNGLL": 8}


@pytest.fixture(autouse=True)
def _no_user_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOARDS_ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def boards() -> dict[str, Board]:
    return load_boards()


def law(status: dict[str, Any]) -> None:
    for name, d in status["devices"].items():
        assert d["frames"] == d["flushed"] + d["dropped"] + d["buffered"], (name, d)


def host_view(status: dict[str, Any], name: str) -> dict[str, int]:
    d = status["devices"][name]
    return {"frames": d["frames"], "rejected": d["rejected"], "gaps": d["gaps"]}


async def run_fleet(
    tmp_path: Path,
    plan: list[tuple[Board, int]],
    *,
    faults: FaultOptions = FaultOptions(),
    rate: float | None = None,
    ready: Callable[[Fleet, dict[str, Any]], bool],
    timeout: float = 10.0,
) -> tuple[Fleet, dict[str, Any]]:
    """Run ``plan`` through an in-process runtime until ``ready``, stop sending,
    let the host read the rest, shut down; returns the fleet and final status."""
    fleet = Fleet(plan, tmp_path / "ports", faults=faults, rate=rate, seed=1234)
    await fleet.start()
    sink = tmp_path / "frames.jsonl"
    cfg = config_from_dict(
        {"buffer": {"flush_interval": 0.1}, "sinks": [{"type": "jsonl", "path": str(sink)}]}, source="<test>"
    )
    # quick reconnects keep the unplug tests short
    devices = [dataclasses.replace(d, backoff_initial=0.02, backoff_max=0.1) for d in fleet.device_configs()]
    rt = Runtime(dataclasses.replace(cfg, devices=devices))
    await rt.start()
    try:
        await rt.wait_until(lambda s: ready(fleet, s), timeout)
        await fleet.stop_sending()
        expected = {d.name: d.expected() for d in fleet.devices}
        try:  # the host reads what is still in flight
            await rt.wait_until(lambda s: all(host_view(s, n) == e for n, e in expected.items()), 5.0)
        except TimeoutError:
            pass  # the asserts below show the difference
        status = await rt.status()
    finally:
        summary = await rt.shutdown()
        await fleet.stop()
    law(summary.status)
    for dev in fleet.devices:
        assert not dev.inexact, dev
        assert host_view(status, dev.name) == dev.expected(), (dev.name, dev.counters())
        assert host_view(summary.status, dev.name) == dev.expected()
    # every decoded frame reached the sink
    records = [json.loads(line) for line in sink.read_text().splitlines()]
    assert len(records) == sum(d["frames"] for d in summary.status["devices"].values())
    assert not (tmp_path / "ports").exists() or not any((tmp_path / "ports").iterdir())
    return fleet, summary.status


def frames_at_least(n: int) -> Callable[[Fleet, dict[str, Any]], bool]:
    return lambda fleet, s: all(d["frames"] >= n for d in s["devices"].values())


# --------------------------------------------------------------------- spec


def test_parse_emulate_spec(boards: dict[str, Board]) -> None:
    default = parse_emulate_spec(("@default",), boards)
    assert [(b.name, n) for b, n in default] == [(name, 1) for name in DEFAULT_FLEET]
    assert [(b.name, n) for b, n in parse_emulate_spec(["nucleo-imu:2,gnss-nmea"], boards)] == [
        ("nucleo-imu", 2),
        ("gnss-nmea", 1),
    ]
    # repeated boards add up, first-seen order
    assert [(b.name, n) for b, n in parse_emulate_spec(["csv-uart", "nucleo-imu:2", "csv-uart:3"], boards)] == [
        ("csv-uart", 4),
        ("nucleo-imu", 2),
    ]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nope", "unknown board 'nope' (known: csv-uart, env-sensor, gnss-nmea, gnss-ubx, nucleo-imu)"),
        ("nucleo-imu:0", "bad count '0'"),
        ("nucleo-imu:x", "bad count 'x'"),
        ("nucleo-imu:2:3", "bad count '2:3'"),
        ("nucleo-imu:", "bad count ''"),
        (",", "empty board name"),
        ("nucleo-imu:999", "bad count '999'"),
    ],
)
def test_parse_emulate_spec_errors(boards: dict[str, Board], spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_emulate_spec([spec], boards)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert "nucleo-imu" in message  # always names the known boards


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise": -0.1},
        {"corrupt": 1.5},
        {"skip": float("nan")},
        {"burst": -1},
        {"unplug_every": -1.0},
        {"unplug_for": 0.0},
    ],
)
def test_fault_options_validate(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultOptions(**kwargs)


def test_board_to_dict_is_json(boards: dict[str, Board]) -> None:
    d = json.loads(json.dumps(boards["nucleo-imu"].to_dict()))
    assert d["name"] == "nucleo-imu" and d["vid_pid"] == "0483:374b"
    assert d["usb"] == {"vid": 0x0483, "pid": 0x374B}
    assert d["codec"] == "fh1" and d["codec_options"] == {"max_payload": 256} and d["baudrate"] == 921600
    assert d["emulator"] == {"rate": 1000.0, "payload": "imu", "payload_size": 48, "frame_type": 1, "replay": None}
    assert boards["env-sensor"].to_dict()["usb"] is None


# --------------------------------------------------------------------- generators


def test_imu_env_csv_payloads(boards: dict[str, Board]) -> None:
    imu = make_generator(boards["nucleo-imu"].emulator, "fh1", rate=1000.0, rng=random.Random(1))
    first, second = imu.tick(0)[0], imu.tick(5)[0]
    assert isinstance(first, bytes) and len(first) == 48
    ts, _ax, _ay, az, *_rest, status = struct.unpack("<I9ffI", second)
    assert ts == 5 and abs(az - 9.81) < 0.5 and status == 1
    env = make_generator(boards["env-sensor"].emulator, "fh1", rate=10.0, rng=random.Random(1))
    temp, hum, press = struct.unpack("<3f", env.tick(0)[0])
    assert 15 < temp < 30 and 20 < hum < 70 and 950 < press < 1050
    csv = make_generator(boards["csv-uart"].emulator, "lines", rate=50.0, rng=random.Random(1))
    assert csv.tick(0)[0] == "ts_ms,adc0,adc1,temp_c"
    row = csv.tick(3)
    assert len(row) == 1 and isinstance(row[0], str)
    ts_ms, adc0, adc1, temp_c = row[0].split(",")
    assert ts_ms == "60" and 0 <= int(adc0) <= 4095 and 0 <= int(adc1) <= 4095 and float(temp_c) > 0


def test_seed_reproduces_payloads(boards: dict[str, Board]) -> None:
    for name in DEFAULT_FLEET:
        board = boards[name]
        runs = [
            make_generator(board.emulator, board.codec, rate=board.emulator.rate, rng=random.Random(9), base_time=0.0)
            for _ in range(2)
        ]
        assert [runs[0].tick(k) for k in range(20)] == [runs[1].tick(k) for k in range(20)]


def test_gnss_sentences_are_valid_and_shaped_like_the_capture() -> None:
    gen = GnssGenerator(5.0, random.Random(3), base_time=1735732800.0)
    codec = make_codec("nmea", "gnss")
    lines = [s for k in range(10) for s in gen.tick(k)]
    frames = codec.feed("".join(s + "\r\n" for s in lines).encode(), 0.0)
    assert codec.rejected == 0 and len(frames) == len(lines)
    kinds = {s[1:6] for s in lines}
    assert {"GNRMC", "GNVTG", "GNGGA", "GNGSA", "GNGLL", "GPGSV", "GLGSV"} <= kinds
    fields = dict(CAPTURE_FIELDS)
    if CAPTURE.exists():  # the real capture, when the shared folder is there
        for line in CAPTURE.read_text().splitlines():
            if line[1:6] in fields:
                fields[line[1:6]] = len(line.split("*")[0].split(","))
    for s in lines:
        if s[1:6] in fields:
            assert len(s.split("*")[0].split(",")) == fields[s[1:6]], s
    # one fix per tick, the satellites once per emulated second, time advancing 0.2 s
    assert [s[1:6] for s in gen.tick(11)] == ["GNRMC", "GNVTG", "GNGGA", "GNGSA", "GNGSA", "GNGLL"]
    rmc = [s.split(",") for s in lines if s.startswith("$GNRMC")]
    assert [r[1] for r in rmc[:3]] == ["120000.00", "120000.20", "120000.40"]
    assert rmc[0][2] == "A" and rmc[0][9] == "010125"

    # the position moves at walking pace: ~1.4 m/s for 1.8 s
    def position(r: list[str]) -> tuple[float, float]:
        return float(r[3][:2]) + float(r[3][2:]) / 60, float(r[5][:3]) + float(r[5][3:]) / 60

    (lat0, lon0), (lat9, lon9) = position(rmc[0]), position(rmc[9])
    metres = math.hypot((lat9 - lat0) * 111_320, (lon9 - lon0) * 111_320 * math.cos(math.radians(lat0)))
    assert 0.5 < metres < 5.0
    assert all(1.0 < float(r[7]) / 1.943844 < 2.0 for r in rmc)  # knots


def test_replay_groups_epochs(tmp_path: Path) -> None:
    capture = tmp_path / "neo.log"
    capture.write_text(NEO_M8N_EPOCH)
    gen = ReplayGenerator(str(capture), nmea=True)
    assert [len(e) for e in gen.epochs] == [7, 2]
    assert gen.tick(0)[0].startswith("$GNRMC,171926") and gen.tick(1)[0].startswith("$GNRMC,171927")
    assert gen.tick(2) == gen.tick(0)  # loops


# --------------------------------------------------------------------- the wire


@pytest.mark.parametrize("name", DEFAULT_FLEET)
def test_corrupt_frames_are_rejected_exactly_once(boards: dict[str, Board], name: str) -> None:
    board = boards[name]
    wire = make_wire(board.codec, board.codec_options, frame_type=board.emulator.frame_type)
    assert isinstance(wire, FaultWire)
    gen = make_generator(board.emulator, board.codec, rate=board.emulator.rate, rng=random.Random(5))
    rng = random.Random(6)
    items = [item for k in range(60) for item in gen.tick(k)]
    for seq, item in enumerate(items):
        assert wire.effect(wire.frame(item, seq)) == (1, 0)
        assert wire.effect(wire.corrupt(item, seq, rng)) == (0, 1), item
    noise = [wire.noise(rng, rng.randint(2, 17)) for _ in range(200)]
    for got in noise:
        assert got is not None
        data, frames, rejected = got
        assert data.endswith(wire.delimiter)
        assert (frames, rejected) == wire.effect(data)
        if board.codec != "lines":
            assert frames == 0


# --------------------------------------------------------------------- through the runtime


@pytest.mark.parametrize("name", DEFAULT_FLEET)
def test_each_shipped_board_through_the_runtime(tmp_path: Path, boards: dict[str, Board], name: str) -> None:
    board = boards[name]
    rate = max(board.emulator.rate, 100.0)  # enough frames in well under a second
    fleet, status = asyncio.run(run_fleet(tmp_path, [(board, 1)], rate=rate, ready=frames_at_least(40)))
    dev = fleet.devices[0]
    assert dev.sent >= 40 and dev.corrupted == dev.skipped == dev.noise_events == 0
    assert status["devices"][dev.name]["rejected"] == 0 and status["devices"][dev.name]["gaps"] == 0
    records = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(dev.sent))
    first = records[0]
    if board.codec == "fh1":
        assert first["type"] == board.emulator.frame_type
        assert len(base64.b64decode(first["payload"])) == board.emulator.payload_size
    else:
        assert first["type"] is None and first["text"]


def test_noise(tmp_path: Path, boards: dict[str, Board]) -> None:
    plan = [(boards["nucleo-imu"], 1), (boards["gnss-nmea"], 1), (boards["csv-uart"], 1)]

    def ready(fleet: Fleet, s: dict[str, Any]) -> bool:
        return all(d.noise_events >= 5 for d in fleet.devices) and frames_at_least(40)(fleet, s)

    fleet, _ = asyncio.run(run_fleet(tmp_path, plan, faults=FaultOptions(noise=0.1), rate=200.0, ready=ready))
    for dev in fleet.devices:
        assert dev.noise_bytes > dev.noise_events and dev.corrupted == 0
    csv = fleet.device("csv-uart-0")
    assert csv.noise_frames > 0  # `lines` takes garbage for text: it shows up as frames


def test_corrupt(tmp_path: Path, boards: dict[str, Board]) -> None:
    plan = [(boards["env-sensor"], 1), (boards["gnss-nmea"], 1), (boards["csv-uart"], 1)]

    def ready(fleet: Fleet, s: dict[str, Any]) -> bool:
        return all(d.corrupted >= 5 for d in fleet.devices) and frames_at_least(40)(fleet, s)

    fleet, status = asyncio.run(run_fleet(tmp_path, plan, faults=FaultOptions(corrupt=0.1), rate=200.0, ready=ready))
    for dev in fleet.devices:
        assert status["devices"][dev.name]["rejected"] == dev.corrupted > 0
    env = fleet.device("env-sensor-0")
    assert env.gaps > 0  # a corrupted fh1 frame takes its seq with it: the next one is a gap


def test_skip(tmp_path: Path, boards: dict[str, Board]) -> None:
    plan = [(boards["env-sensor"], 1), (boards["csv-uart"], 1)]

    def ready(fleet: Fleet, s: dict[str, Any]) -> bool:
        return all(d.skipped >= 5 for d in fleet.devices) and frames_at_least(40)(fleet, s)

    fleet, status = asyncio.run(run_fleet(tmp_path, plan, faults=FaultOptions(skip=0.1), rate=200.0, ready=ready))
    env, csv = fleet.device("env-sensor-0"), fleet.device("csv-uart-0")
    assert status["devices"][env.name]["gaps"] == env.skipped == env.gaps
    assert status["devices"][csv.name]["gaps"] == 0  # text: host seqs, nothing to see


def test_burst(tmp_path: Path, boards: dict[str, Board]) -> None:
    fleet, status = asyncio.run(
        run_fleet(tmp_path, [(boards["nucleo-imu"], 2)], faults=FaultOptions(burst=50), ready=frames_at_least(300))
    )
    for dev in fleet.devices:
        assert dev.sent % 50 == 0  # whole bursts only
        assert status["devices"][dev.name]["gaps"] == 0


def test_unplug_replug(tmp_path: Path, boards: dict[str, Board]) -> None:
    plan = [(boards["env-sensor"], 1), (boards["gnss-nmea"], 1)]

    def ready(fleet: Fleet, s: dict[str, Any]) -> bool:
        # a replug's gap shows with the first frame after it: wait for that frame too
        return (
            all(d["reconnects"] >= 2 and d["state"] == "connected" for d in s["devices"].values())
            and fleet.device("env-sensor-0").gaps >= 2
        )

    fleet, status = asyncio.run(
        run_fleet(tmp_path, plan, faults=FaultOptions(unplug_every=0.25, unplug_for=0.1), rate=100.0, ready=ready)
    )
    for dev in fleet.devices:
        assert dev.unplugs >= 2 and dev.lost_unplugged > 0 and dev.host_opens >= 3
    env = fleet.device("env-sensor-0")
    # frames produced while unplugged took their seqs: one gap per replug
    assert status["devices"][env.name]["gaps"] == env.gaps >= 2


def test_replay_board_through_the_runtime(tmp_path: Path) -> None:
    directory = tmp_path / "boards"
    directory.mkdir()
    (directory / "neo.log").write_text(NEO_M8N_EPOCH)
    (directory / "replay.toml").write_text(
        'name = "neo-replay"\ncodec = "nmea"\nbaudrate = 9600\n'
        '[emulator]\nrate = 50\npayload = "gnss"\nreplay = "neo.log"\n'
    )
    board = load_boards([directory])["neo-replay"]
    assert board.emulator.replay == str(directory / "neo.log")

    def ready(fleet: Fleet, s: dict[str, Any]) -> bool:
        return fleet.devices[0].invalid >= 3

    fleet, _ = asyncio.run(run_fleet(tmp_path, [(board, 1)], ready=ready))
    dev: EmulatedDevice = fleet.devices[0]
    # per loop: 8 good sentences, and the capture's last line fails its checksum
    assert dev.sent >= 8 * dev.invalid - 8 and dev.invalid >= 3


def test_fleet_links_and_configs(tmp_path: Path, boards: dict[str, Board]) -> None:
    async def main() -> None:
        fleet = Fleet(parse_emulate_spec(["env-sensor:2,gnss-nmea"], boards))
        await fleet.start()
        directory = Path(fleet.directory or "")
        try:
            assert [d.name for d in fleet.devices] == ["env-sensor-0", "env-sensor-1", "gnss-nmea-0"]
            assert directory.name.startswith("firmware-host-emu-")
            for dev, dc in zip(fleet.devices, fleet.device_configs()):
                assert Path(dev.path).is_symlink() and dev.path == str(directory / dev.name)
                assert (dc.name, dc.port, dc.board, dc.codec, dc.baudrate) == (
                    dev.name,
                    dev.path,
                    dev.board.name,
                    dev.board.codec,
                    dev.board.baudrate,
                )
                assert dc.codec_options == dev.board.codec_options
            # nobody opened the ports: like CDC firmware, nothing was sent
            assert all(d.sent == 0 and d.bytes_written == 0 for d in fleet.devices)
        finally:
            await fleet.stop()
        assert not directory.exists()

    asyncio.run(main())


# --------------------------------------------------------------------- one emulator for the CLI and the test kit


async def readable(fd: int) -> None:
    """Await input on ``fd`` (no polling)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, wake, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class _Host:
    """The host's end of an emulated port, opened as pyserial opens it (with an
    input flush, which tells the device someone listens)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        termios.tcflush(self.fd, termios.TCIFLUSH)

    async def read_until(self, delimiter: bytes, count: int, timeout: float = 5.0) -> bytes:
        """At least ``count`` delimiter-terminated frames, whole ones only."""
        data = b""
        async with asyncio.timeout(timeout):
            while data.count(delimiter) < count:
                await readable(self.fd)
                data += os.read(self.fd, 65536)
        return data[: data.rindex(delimiter) + 1]

    def close(self) -> None:
        os.close(self.fd)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", DEFAULT_FLEET)
def test_fleet_bytes_are_the_test_kits_bytes(tmp_path: Path, boards: dict[str, Board], name: str) -> None:
    """What a fleet device writes on its pty is, frame for frame, what the test
    kit's EmulatedBoard encodes for the same board, seq and payload."""
    board = boards[name]

    async def main() -> tuple[bytes, bytes]:
        async with Fleet([(board, 1)], tmp_path / "ports", rate=200.0, seed=7) as fleet:
            dev = fleet.devices[0]
            assert isinstance(dev.emulator, EmulatedBoard)  # the test kit's class, not a look-alike
            host = _Host(dev.path)
            try:
                wire = await host.read_until(dev.emulator.wire.delimiter, 30)
            finally:
                host.close()
        kit = EmulatedBoard(VirtualPort(), resolve_board(name))
        try:
            delimiter = kit.wire.delimiter
            again = []
            for chunk in wire.split(delimiter)[:-1]:
                [frame] = kit.wire.decoder().feed(chunk + delimiter, 0.0)
                if frame.text is None:  # fh1: the host's seq, type and payload
                    again.append(kit.encode(frame.payload, type=frame.type, seq=frame.seq))
                elif board.codec == "nmea":  # the sentence's body; the kit adds $ and the checksum
                    again.append(kit.encode(frame.text[1 : frame.text.rindex("*")]))
                else:
                    again.append(kit.encode(frame.text))
        finally:
            kit.port.close()
        return wire, b"".join(again)

    wire, again = asyncio.run(main())
    assert wire.count(b"\n" if board.codec != "fh1" else b"\x00") >= 30
    assert again == wire


class _Scripted(random.Random):
    """A Random whose first ``choice`` calls return the bytes of ``first``."""

    def __init__(self, first: bytes) -> None:
        super().__init__(0)
        self.first = list(first)

    def choice(self, seq: Any) -> Any:
        return self.first.pop(0) if self.first else super().choice(seq)


@pytest.mark.parametrize(
    ("codec", "decodes"),
    [("fh1", encode_packet(1, 0, b"ok")[:-1]), ("nmea", b"$GPTXT*" + b"%02X" % nmea_checksum(b"GPTXT"))],
    ids=["fh1", "nmea"],
)
def test_noise_that_would_decode_is_rolled_again(codec: str, decodes: bytes) -> None:
    """Garbage that happens to be a valid frame never goes out as noise: the
    first roll here is one, so the wire must roll again."""
    wire = make_wire(codec)
    assert wire.effect(decodes + wire.delimiter) == (1, 0)  # it would decode
    noise = wire.noise(_Scripted(decodes), len(decodes) + 1)
    assert noise is not None and noise.data != decodes + wire.delimiter
    assert noise.frames == 0 and wire.effect(noise.data) == (0, noise.rejected)


@pytest.mark.parametrize("codec", ["fh1", "nmea", "lines"])
def test_the_kits_noise_is_the_wires(codec: str) -> None:
    """The test kit's board.noise() is the fleet's Wire.noise, draw for draw."""

    async def main() -> bytes:
        kit = EmulatedBoard(VirtualPort(), BoardSpec(codec), seed=11)
        try:
            return b"".join([await kit.noise(n) for n in (1, 5, 40)])
        finally:
            kit.port.close()

    rng, wire = random.Random(11), make_wire(codec)
    expected = []
    for n in (1, 5, 40):
        noise = wire.noise(rng, n)
        assert noise is not None and len(noise.data) == max(n, 1)
        expected.append(noise.data)
    assert asyncio.run(main()) == b"".join(expected)


@pytest.mark.timeout(10)
def test_a_write_cut_by_a_replug_stops_there() -> None:
    """A write the cable cut ends there, for the kit's boards and the fleet's
    alike (both write through EmulatedBoard): the rest never lands on the
    replugged pty, which would start with half a frame."""

    async def main() -> None:
        board = EmulatedBoard(VirtualPort(), BoardSpec("fh1"))
        try:
            data = bytes(range(1, 256)) * 4096  # ~1 MB, far more than a pty holds: nobody reads
            write = asyncio.create_task(board.write(data))
            await asyncio.sleep(0)  # the write fills the pty and parks
            assert not write.done()
            board.unplug()
            board.replug()
            written = await asyncio.wait_for(write, 2.0)
            assert 0 < written < len(data) and board.bytes_written == written
            assert board.port.unread() == 0 and board.unplugs == 1
        finally:
            board.port.close()

    asyncio.run(main())


def test_pacer() -> None:
    pacer = Pacer(100.0, burst=10)
    assert [pacer.due(t) for t in (0.0, 0.099, 0.1, 0.25)] == [10, 10, 20, 30]
    assert [pacer.time_of(k) for k in (0, 9, 10, 25)] == [0.0, 0.0, 0.1, 0.2]
    assert pacer.lag_limit == 50 and Pacer(1.0, burst=4).lag_limit == 4
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="rate must be a positive number"):
            Pacer(bad)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("wait", [True, False])
def test_host_watch_counts_downlink(wait: bool) -> None:
    """Downlink is counted exactly whether or not the device waits for the host
    (the pty is in packet mode either way: without it, wait_for_host=False
    took the host's bytes for packet headers)."""

    async def main() -> HostWatch:
        port = VirtualPort()
        host = HostWatch(port, wait=wait)
        fd = os.open(port.path, os.O_RDWR | os.O_NOCTTY)
        try:
            assert host.listening is not wait
            os.write(fd, b"hello")
            assert port.master is not None
            await readable(port.master)
            host.poll(asyncio.get_running_loop().time())
        finally:
            os.close(fd)
            port.close()
        return host

    host = asyncio.run(main())
    assert host.downlink_bytes == 5
