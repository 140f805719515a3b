"""Payload generators for the emulator (their wire encoding is ``wire.py``'s).

A generator turns a tick index ``k`` (emulated time ``k / rate``) into the
items of that tick: ``bytes`` for a binary payload, ``str`` for one line of
text. NMEA items are whole sentences, ``$`` and ``*HH`` included, so a replay
can send a capture's lines untouched. Generators are pure functions of their
seeded ``random.Random`` and ``k``: a seed reproduces the stream exactly.
"""

from __future__ import annotations

import math
import os
import random
import struct
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any, ClassVar

from firmware_host.codecs.nmea import nmea_checksum
from firmware_host.codecs.ubx import rtcm3_frame, ubx_packet
from firmware_host.config.boards import EmulatorProfile
from firmware_host.config.payloads import TEXT_CODECS
from firmware_host.values.decoder import struct_format
from firmware_host.values.layout import FLOAT_TYPES, INTEGER_TYPES, CsvLayout, FieldSpec, FrameLayout, PayloadSchema

__all__ = ["Generator", "Item", "ReplayGenerator", "make_generator", "nmea_sentence"]

#: one frame's content: a binary payload, or one line of text
Item = bytes | str

#: a capture is read whole; captures are small, but a wrong path must not eat memory
MAX_REPLAY_BYTES = 16 << 20


class Generator(ABC):
    #: True when the items are lines of text
    text: ClassVar[bool] = False
    #: False when items may be invalid for the codec (replayed captures); the
    #: emulator then works out what the host will make of each one
    trusted: ClassVar[bool] = True

    @abstractmethod
    def tick(self, k: int) -> list[Item]:
        """The items (frames) of tick ``k``, k = 0, 1, 2, …"""


def _fit(data: bytes, size: int) -> bytes:
    """Pad or cut a natural payload to the board's ``payload_size`` (0: natural size)."""
    if size <= 0 or size == len(data):
        return data
    return data[:size] if size < len(data) else data + bytes(size - len(data))


class ImuGenerator(Generator):
    """6-axis IMU plus magnetometer: ``<I 3f 3f 3f f I`` = ts_ms, accel m/s², gyro rad/s,
    mag µT, temperature °C, status (48 bytes), the nucleo-imu firmware's struct."""

    _STRUCT = struct.Struct("<I9ffI")

    def __init__(self, rate: float, rng: random.Random, size: int) -> None:
        self.rate, self.rng, self.size = rate, rng, size
        self._heading = rng.uniform(0, 2 * math.pi)

    def tick(self, k: int) -> list[Item]:
        t = k / self.rate
        g = self.rng.gauss
        heading = self._heading + 0.05 * t  # the board turns slowly on the bench
        payload = self._STRUCT.pack(
            int(t * 1000) & 0xFFFFFFFF,
            0.03 * math.sin(2 * math.pi * 3 * t) + g(0, 0.01),
            0.03 * math.cos(2 * math.pi * 3 * t) + g(0, 0.01),
            9.81 + g(0, 0.02),
            0.01 * math.sin(2 * math.pi * 0.5 * t) + g(0, 0.002),
            g(0, 0.002),
            0.05 + g(0, 0.002),  # yaw rate: the slow turn
            22.0 * math.cos(heading) + g(0, 0.2),
            22.0 * math.sin(heading) + g(0, 0.2),
            -40.0 + g(0, 0.2),
            31.5 + 0.5 * math.sin(t / 60) + g(0, 0.02),
            0x0001,  # status: data ready
        )
        return [_fit(payload, self.size)]


class EnvGenerator(Generator):
    """Temperature °C, relative humidity %, pressure hPa: ``<3f`` (12 bytes)."""

    _STRUCT = struct.Struct("<3f")

    def __init__(self, rate: float, rng: random.Random, size: int) -> None:
        self.rate, self.rng, self.size = rate, rng, size
        self._base = (rng.uniform(18, 24), rng.uniform(35, 55), rng.uniform(1005, 1020))

    def tick(self, k: int) -> list[Item]:
        t = k / self.rate
        temp, hum, press = self._base
        g = self.rng.gauss
        payload = self._STRUCT.pack(
            temp + 0.8 * math.sin(t / 300) + g(0, 0.02),
            hum - 2.0 * math.sin(t / 300) + g(0, 0.1),
            press + 0.3 * math.sin(t / 900) + g(0, 0.02),
        )
        return [_fit(payload, self.size)]


class CsvGenerator(Generator):
    """A Pico printing ``ts_ms,adc0,adc1,temp_c`` rows (a header line first, as on boot)."""

    text = True
    HEADER = "ts_ms,adc0,adc1,temp_c"

    def __init__(self, rate: float, rng: random.Random) -> None:
        self.rate, self.rng = rate, rng

    def tick(self, k: int) -> list[Item]:
        t = k / self.rate
        adc0 = 2048 + int(900 * math.sin(2 * math.pi * 0.2 * t)) + int(self.rng.gauss(0, 4))
        adc1 = int(4095 * ((t / 10) % 1.0))  # a slow sawtooth (a potentiometer sweep)
        row = f"{int(t * 1000)},{min(max(adc0, 0), 4095)},{adc1},{27.0 + self.rng.gauss(0, 0.15):.2f}"
        return [self.HEADER, row] if k == 0 else [row]


class RandomGenerator(Generator):
    """Random bytes: ``payload_size`` of them, or 1 to 32 when the board says 0."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self.rng, self.size = rng, size

    def tick(self, k: int) -> list[Item]:
        return [self.rng.randbytes(self.size or self.rng.randint(1, 32))]


def nmea_sentence(body: str) -> str:
    """``$body*HH`` with the checksum computed."""
    return f"${body}*{nmea_checksum(body.encode('ascii')):02X}"


def _lat(deg: float) -> tuple[str, str]:
    total = round(abs(deg) * 60, 5)  # round first, so minutes never print as 60.00000
    d = int(total // 60)
    return f"{d:02d}{total - d * 60:08.5f}", "N" if deg >= 0 else "S"


def _lon(deg: float) -> tuple[str, str]:
    total = round(abs(deg) * 60, 5)
    d = int(total // 60)
    return f"{d:03d}{total - d * 60:08.5f}", "E" if deg >= 0 else "W"


class _Sat:
    __slots__ = ("az", "elev", "prn", "snr")

    def __init__(self, prn: int, rng: random.Random) -> None:
        self.prn = prn
        self.elev = rng.uniform(5, 85)
        self.az = rng.uniform(0, 360)
        self.snr: float | None = rng.uniform(18, 45) if rng.random() < 0.8 else None


class GnssGenerator(Generator):
    """A u-blox NEO-M8N-shaped NMEA stream, like the gpsd captures of that receiver.

    Every tick is one fix: RMC, VTG, GGA, GSA (GPS), GSA (GLONASS), GLL; the
    satellites in view (GPGSV, GLGSV) once per emulated second. The position
    walks at walking pace with a slowly wandering heading.
    """

    text = True
    KNOTS_PER_MPS = 1.943844

    def __init__(self, rate: float, rng: random.Random, base_time: float) -> None:
        self.rate, self.rng, self.base_time = rate, rng, base_time
        self.lat = 52.5163 + rng.uniform(-0.01, 0.01)
        self.lon = 13.3777 + rng.uniform(-0.01, 0.01)
        self.alt = rng.uniform(30, 60)
        self.heading = rng.uniform(0, 360)
        self.gps = [_Sat(p, rng) for p in sorted(rng.sample(range(1, 33), 9))]
        self.glonass = [_Sat(p, rng) for p in sorted(rng.sample(range(65, 89), 6))]
        self._gsv_every = max(1, round(rate))

    def _move(self) -> float:
        rng = self.rng
        self.heading = (self.heading + rng.gauss(0, 2.0)) % 360
        speed = max(0.0, 1.4 + rng.gauss(0, 0.1))  # m/s
        dist = speed / self.rate
        rad = math.radians(self.heading)
        self.lat += dist * math.cos(rad) / 111_320
        self.lon += dist * math.sin(rad) / (111_320 * math.cos(math.radians(self.lat)))
        self.alt += rng.gauss(0, 0.05)
        for sat in self.gps + self.glonass:  # signal strength flickers
            if sat.snr is not None:
                sat.snr = min(50.0, max(12.0, sat.snr + rng.gauss(0, 0.5)))
        return speed

    def tick(self, k: int) -> list[Item]:
        speed = self._move()
        now = datetime.fromtimestamp(self.base_time + k / self.rate, UTC)
        hms = f"{now:%H%M%S}.{now.microsecond // 10000:02d}"
        date = f"{now:%d%m%y}"
        lat, ns = _lat(self.lat)
        lon, ew = _lon(self.lon)
        knots = speed * self.KNOTS_PER_MPS
        cog = f"{self.heading:.2f}"
        used_gps = [s for s in self.gps if s.snr is not None][:12]
        used_glo = [s for s in self.glonass if s.snr is not None][:12]
        hdop = 0.8 + 4.0 / max(1, len(used_gps) + len(used_glo))
        vdop, pdop = hdop * 1.4, hdop * 1.7
        out: list[bytes | str] = [
            nmea_sentence(f"GNRMC,{hms},A,{lat},{ns},{lon},{ew},{knots:.3f},{cog},{date},,,A"),
            nmea_sentence(f"GNVTG,{cog},T,,M,{knots:.3f},N,{speed * 3.6:.3f},K,A"),
            nmea_sentence(
                f"GNGGA,{hms},{lat},{ns},{lon},{ew},1,{len(used_gps) + len(used_glo):02d},"
                f"{hdop:.2f},{self.alt:.1f},M,44.8,M,,"
            ),
            self._gsa(used_gps, pdop, hdop, vdop),
            self._gsa(used_glo, pdop, hdop, vdop),
        ]
        if k % self._gsv_every == 0:
            out += self._gsv("GP", self.gps) + self._gsv("GL", self.glonass)
        out.append(nmea_sentence(f"GNGLL,{lat},{ns},{lon},{ew},{hms},A,A"))
        return out

    @staticmethod
    def _gsa(used: list[_Sat], pdop: float, hdop: float, vdop: float) -> str:
        prns = [f"{s.prn:02d}" for s in used] + [""] * (12 - len(used))
        return nmea_sentence(f"GNGSA,A,3,{','.join(prns)},{pdop:.2f},{hdop:.2f},{vdop:.2f}")

    @staticmethod
    def _gsv(talker: str, sats: list[_Sat]) -> list[str]:
        total = (len(sats) + 3) // 4
        out = []
        for i in range(total):
            fields = [f"{talker}GSV", str(total), str(i + 1), f"{len(sats):02d}"]
            for s in sats[i * 4 : i * 4 + 4]:
                fields += [
                    f"{s.prn:02d}",
                    f"{s.elev:02.0f}",
                    f"{s.az:03.0f}",
                    "" if s.snr is None else f"{s.snr:02.0f}",
                ]
            out.append(nmea_sentence(",".join(fields)))
        return out


class UbxGenerator(GnssGenerator):
    """A u-blox receiver on USB in its default mix: per fix one UBX NAV-PVT,
    the NMEA sentences of ``gnss`` and one RTCM3 1005 (the reference station's
    position, as a base station sends it). Items are whole packets (bytes) and
    sentences (str); the NAV-PVT and the sentences carry the same position."""

    text = False
    #: NAV-PVT's payload, u-blox 8 protocol spec (UBX-13003221) 32.17.14: 92 bytes
    _PVT = struct.Struct("<IHBBBBBBIiBBBBiiiiIIiiiiiIIHB5sihH")

    def __init__(self, rate: float, rng: random.Random, base_time: float) -> None:
        super().__init__(rate, rng, base_time)
        #: the base station's antenna: where the walk starts
        self.base_ecef = _ecef(self.lat, self.lon, self.alt + 44.8)

    def tick(self, k: int) -> list[Item]:
        sentences = super().tick(k)  # moves the fix first
        now = datetime.fromtimestamp(self.base_time + k / self.rate, UTC)
        used = sum(1 for s in self.gps + self.glonass if s.snr is not None)
        itow = ((now.weekday() + 1) % 7 * 86400 + now.hour * 3600 + now.minute * 60 + now.second) * 1000
        pvt = self._PVT.pack(
            itow + now.microsecond // 1000, now.year, now.month, now.day, now.hour, now.minute, now.second,
            0x07, 50, now.microsecond * 1000 % 1_000_000_000, 3, 0x01, 0xE0, used,
            round(self.lon * 1e7), round(self.lat * 1e7), round((self.alt + 44.8) * 1000), round(self.alt * 1000),
            2500, 4000, 0, 0, 0, 1400, round(self.heading * 1e5) % 36_000_000, 300, 500_000, 150, 0, bytes(5),
            0, 0, 0,
        )  # fmt: skip
        return [ubx_packet(0x01, 0x07, pvt), *sentences, rtcm3_frame(_rtcm1005(self.base_ecef))]


def _rtcm1005(ecef: tuple[float, float, float], station: int = 1) -> bytes:
    """RTCM 1005 (stationary antenna reference point): 152 bits, RTCM 10403.3 3.5.3."""
    x, y, z = (round(v * 10_000) & ((1 << 38) - 1) for v in ecef)  # 0.1 mm, 38-bit two's complement
    fields = [(1005, 12), (station, 12), (0, 6), (1, 1), (1, 1), (0, 1), (1, 1), (x, 38), (0, 1), (0, 1),
              (y, 38), (0, 2), (z, 38)]  # fmt: skip
    bits = 0
    for value, width in fields:
        bits = (bits << width) | value
    return bits.to_bytes(19, "big")


def _ecef(lat: float, lon: float, height: float) -> tuple[float, float, float]:
    """WGS84 geodetic (degrees, metres) to earth-centred x, y, z in metres."""
    a, e2 = 6_378_137.0, 6.69437999014e-3
    phi, lam = math.radians(lat), math.radians(lon)
    n = a / math.sqrt(1 - e2 * math.sin(phi) ** 2)
    return (
        (n + height) * math.cos(phi) * math.cos(lam),
        (n + height) * math.cos(phi) * math.sin(lam),
        (n * (1 - e2) + height) * math.sin(phi),
    )


class ReplayGenerator(Generator):
    """Replays a capture's lines (``#`` comments and blank lines skipped), looping.

    For NMEA a tick is one epoch: the lines from one RMC (or GGA, when the
    capture has no RMC) up to the next, so the replay keeps the receiver's
    rhythm; other captures play one line per tick.
    """

    text = True
    trusted = False

    def __init__(self, path: str, nmea: bool) -> None:
        with open(path, "rb") as f:
            raw = f.read(MAX_REPLAY_BYTES + 1)
        if len(raw) > MAX_REPLAY_BYTES:
            raise ValueError(f"{path}: capture larger than {MAX_REPLAY_BYTES >> 20} MiB")
        lines = []
        for line in raw.split(b"\n"):
            line = line.rstrip(b"\r")
            if line and not line.startswith(b"#"):
                # surrogateescape: the exact bytes go back on the wire, valid UTF-8 or not
                lines.append(line.decode("utf-8", "surrogateescape"))
        if not lines:
            raise ValueError(f"{path}: no lines to replay")
        self.epochs = self._epochs(lines) if nmea else [[line] for line in lines]

    @staticmethod
    def _epochs(lines: list[str]) -> list[list[str]]:
        kinds = {line[3:6] for line in lines if line[:1] in "$!" and len(line) > 6}
        marker = "RMC" if "RMC" in kinds else "GGA" if "GGA" in kinds else None
        if marker is None:
            return [[line] for line in lines]
        epochs: list[list[str]] = [[]]
        for line in lines:
            if line[3:6] == marker and epochs[-1]:
                epochs.append([])
            epochs[-1].append(line)
        return epochs

    def tick(self, k: int) -> list[Item]:
        return list(self.epochs[k % len(self.epochs)])


def _field_value(spec: FieldSpec, t: float, phase: float, rng: random.Random) -> Any:
    """One plausible raw value of ``spec`` at time ``t``: a slow wave within the
    type's range (a float's is ±100), so successive frames differ like a sensor's."""
    wave = math.sin(2 * math.pi * (t / 10 + phase))  # -1..1, a 10 s period
    kind = spec.type
    if kind in FLOAT_TYPES:
        return 100 * wave + rng.gauss(0, 0.01)
    if kind in INTEGER_TYPES:
        bits = int(kind[1:])
        lo, hi = (0, (1 << bits) - 1) if kind[0] == "u" else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        span = min(hi - lo, 1 << 20)  # a sensor's counts, not the whole u64 range
        return max(lo, min(hi, lo + int((wave + 1) / 2 * span) if kind[0] == "u" else int(wave * span / 2)))
    if kind == "bool":
        return wave > 0
    if kind == "bytes":
        return rng.randbytes(spec.size)
    text = f"{spec.name[:4]}{int(t) % 1000}".encode()
    return text[: spec.size] if spec.size else text  # str; a csv cell has no size


class _FieldWaves:
    """Each field of a schema as a slow wave of its own phase."""

    def __init__(self, rate: float, rng: random.Random, specs: tuple[FieldSpec, ...]) -> None:
        self.rate, self.rng, self.specs = rate, rng, specs
        self._phases = [rng.random() for _ in specs]

    def values(self, k: int) -> list[tuple[FieldSpec, list[Any]]]:
        t, rng = k / self.rate, self.rng
        return [
            (spec, [_field_value(spec, t + i, phase, rng) for i in range(spec.count)])
            for spec, phase in zip(self.specs, self._phases, strict=True)
        ]


class SchemaGenerator(Generator):
    """Binary payloads from the board's own schema (``payload = "schema"``):
    the frame type's layout packed as the firmware would."""

    def __init__(self, rate: float, rng: random.Random, layout: FrameLayout) -> None:
        self._waves = _FieldWaves(rate, rng, layout.fields)
        self._struct = struct.Struct(struct_format(layout))

    def tick(self, k: int) -> list[Item]:
        return [self._struct.pack(*(v for _spec, values in self._waves.values(k) for v in values))]


class CsvSchemaGenerator(Generator):
    """csv rows from the board's ``[schema.csv]``, the header line first (as on boot)."""

    text = True

    def __init__(self, rate: float, rng: random.Random, layout: CsvLayout) -> None:
        self._waves = _FieldWaves(rate, rng, layout.fields)
        self._delimiter = layout.delimiter
        self._header = layout.delimiter.join(spec.name for spec in layout.fields)

    @staticmethod
    def _cell(spec: FieldSpec, value: Any) -> str:
        if spec.type == "str":
            return str(value.decode("utf-8", "replace"))
        return str(int(value)) if spec.type == "bool" else str(value)

    def tick(self, k: int) -> list[Item]:
        row = self._delimiter.join(self._cell(spec, value) for spec, (value,) in self._waves.values(k))
        return [self._header, row] if k == 0 else [row]


def make_generator(
    profile: EmulatorProfile,
    codec: str,
    *,
    rate: float,
    rng: random.Random,
    base_time: float | None = None,
    schema: PayloadSchema | None = None,
) -> Generator:
    """The generator a board's emulator profile names (or its capture replay)."""
    if profile.replay:
        return ReplayGenerator(os.fspath(profile.replay), nmea=codec == "nmea")
    name = profile.payload
    if name == "schema":
        if schema is None:
            raise ValueError('payload "schema" needs the board to have a [schema]')
        if codec in TEXT_CODECS:
            if schema.csv is None:
                raise ValueError('payload "schema" on a text codec needs a [schema.csv]')
            return CsvSchemaGenerator(rate, rng, schema.csv)
        layout = schema.layout(profile.frame_type)
        if layout is None:
            raise ValueError(f'payload "schema": the schema has no layout for frame type {profile.frame_type:#04x}')
        return SchemaGenerator(rate, rng, layout)
    if name == "imu":
        return ImuGenerator(rate, rng, profile.payload_size)
    if name == "env":
        return EnvGenerator(rate, rng, profile.payload_size)
    if name == "csv":
        return CsvGenerator(rate, rng)
    if name == "gnss":
        return GnssGenerator(rate, rng, time.time() if base_time is None else base_time)
    if name == "ubx":
        return UbxGenerator(rate, rng, time.time() if base_time is None else base_time)
    if name == "random":
        return RandomGenerator(rng, profile.payload_size)
    raise ValueError(f"unknown payload generator {name!r}")
