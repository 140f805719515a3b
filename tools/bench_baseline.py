"""The naive baseline: what users write instead of firmware-host.

One thread per port doing blocking pyserial reads (``ser.read(ser.in_waiting or 1)``,
the idiom pyserial's docs and most answers recommend), splitting the stream on
0x00, a straightforward pure-Python COBS decode per frame, a CRC-16/CCITT-FALSE
check, one ``queue.Queue`` and one writer thread appending one ``json.dumps`` line
per frame to a buffered file (flushed whenever the queue runs empty).

CRC: ``binascii.crc_hqx`` by default (``--crc hqx``). It is the stdlib's
CRC-16/CCITT-FALSE, the first answer a search for that CRC in Python gives, and it
is the stronger baseline: a per-byte CRC loop (``--crc python``) makes the baseline
several times slower and would flatter the runtime. COBS has no stdlib
implementation, so the baseline uses the textbook per-byte decoder (Wikipedia's C
translated line by line), as a user would.

Protocol with the bench: prints ``{"ready": true}`` once every port is open; then
reads commands on stdin: ``stats`` prints ``{"frames", "written", "rejected",
"queue"}``; ``stop`` stops the readers, drains the queue into the file, prints the
final stats and exits.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import queue
import sys
import threading
import time

import serial


def cobs_decode(data: bytes) -> bytes:
    """COBS-decode one packet (no 0x00 delimiter), byte by byte."""
    out = bytearray()
    idx = 0
    n = len(data)
    while idx < n:
        code = data[idx]
        if code == 0:
            raise ValueError("zero byte in COBS data")
        idx += 1
        for _ in range(code - 1):
            if idx >= n:
                raise ValueError("truncated COBS block")
            out.append(data[idx])
            idx += 1
        if code != 0xFF and idx < n:
            out.append(0)
    return bytes(out)


def crc16_python(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE, bit by bit (what a user copies from a datasheet)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def crc16_hqx(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


class Baseline:
    def __init__(self, ports: list[str], names: list[str], out: str, baud: int, crc: str) -> None:
        self.ports = ports
        self.names = names
        self.out = out
        self.baud = baud
        self.crc = crc16_hqx if crc == "hqx" else crc16_python
        self.q: queue.Queue[tuple[str, int, int, float, bytes] | None] = queue.Queue()
        self.stop = threading.Event()
        self.frames = [0] * len(ports)
        self.rejected = [0] * len(ports)
        self.written = 0
        self.opened = threading.Barrier(len(ports) + 1)

    def reader(self, i: int) -> None:
        name = self.names[i]
        crc16 = self.crc
        ser = serial.Serial(self.ports[i], self.baud, timeout=0.5)
        self.opened.wait()
        buf = bytearray()
        put = self.q.put
        try:
            while not self.stop.is_set():
                try:
                    data = ser.read(ser.in_waiting or 1)
                except (serial.SerialException, OSError):
                    break  # the device went away (the feeder closed its side)
                if not data:
                    continue
                ts = time.time()
                buf += data
                while True:
                    end = buf.find(b"\x00")
                    if end < 0:
                        break
                    packet = bytes(buf[:end])
                    del buf[: end + 1]
                    if not packet:
                        continue
                    try:
                        raw = cobs_decode(packet)
                    except ValueError:
                        self.rejected[i] += 1
                        continue
                    if len(raw) < 8 or raw[0] != 1 or crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
                        self.rejected[i] += 1
                        continue
                    seq = int.from_bytes(raw[2:6], "little")
                    put((name, seq, raw[1], ts, raw[6:-2]))
                    self.frames[i] += 1
        finally:
            ser.close()

    def writer(self) -> None:
        get, q = self.q.get, self.q
        with open(self.out, "a", encoding="utf-8") as f:
            while True:
                item = get()
                if item is None:
                    break
                name, seq, ftype, ts, payload = item
                f.write(
                    json.dumps(
                        {
                            "device": name,
                            "seq": seq,
                            "type": ftype,
                            "ts": ts,
                            "payload": base64.b64encode(payload).decode("ascii"),
                        }
                    )
                    + "\n"
                )
                self.written += 1
                if q.empty():
                    f.flush()

    def stats(self, **extra: object) -> None:
        print(
            json.dumps(
                {
                    "frames": sum(self.frames),
                    "written": self.written,
                    "rejected": sum(self.rejected),
                    "queue": self.q.qsize(),
                    **extra,
                }
            ),
            flush=True,
        )

    def run(self) -> None:
        readers = [threading.Thread(target=self.reader, args=(i,), daemon=True) for i in range(len(self.ports))]
        writer = threading.Thread(target=self.writer, daemon=True)
        writer.start()
        for t in readers:
            t.start()
        self.opened.wait()
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                self.stats()
            elif cmd == "stop":
                break
        self.stop.set()
        for t in readers:
            t.join()
        self.q.put(None)
        writer.join()
        self.stats(final=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ports", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--baud", type=int, default=921600)
    p.add_argument("--crc", choices=("hqx", "python"), default="hqx")
    args = p.parse_args(argv)
    names = [f"d{i:02d}" for i in range(len(args.ports))]
    Baseline(args.ports, names, args.out, args.baud, args.crc).run()


if __name__ == "__main__":
    main()
