"""Instructions per frame and per read of the paced pipeline, counted by callgrind.

    python tools/bench_icount.py                      # this checkout
    python tools/bench_icount.py --source /tmp/old    # another checkout (a git worktree)

CPU time on a shared or virtual machine drifts by more than the changes worth
making (docs/benchmarks.md), so this counts instructions instead: valgrind's
callgrind runs one runtime process, in-process and deterministic, and the count
does not depend on the machine's speed (repeat runs agree to about 0.1%).

The pipeline is the paced scenario's, minus the timing: 48 ptys, fh1 with
64-byte payloads, the jsonl sink, uvloop when installed, ``tune_gc()`` as
``run`` does. Just before each tick of the read clock every pty gets one read's
worth of frames (25 frames: 20 ms of 921600 baud), so every read finds exactly
that. Each shape runs twice, with few and with many ticks; the difference
divides out start-up and shutdown. Two shapes (25 and 40 frames per read) then
separate the cost per frame from the cost per read. User-space instructions
only: the kernel's side of the reads and writes is not counted.

With ``--decode`` the frames carry 12-byte env-sensor-like payloads (three
``f32``) and the devices a board schema for them, once decoded and once with
``decode = false``: the instructions decoding adds per frame, which the CPU
figures of ``bench.py --only decode`` cannot show on a loaded machine.

Needs valgrind (``apt-get install valgrind``); about two minutes (four with ``--decode``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(64))
#: --decode: what an env sensor sends (22.91 degC, 43.76 %RH, 1006.84 hPa). As
#: f32 these are 22.91079330444336 and so on: the digits a real sensor's floats
#: have, and what the writer of the fields spends its time on (session 9 used
#: 21.5, 45.0 and 1013.25, whose short repr flattered the standard json)
ENV_PAYLOAD = struct.pack("<fff", 22.91, 43.76, 1006.84)
ENV_BOARD_NAME = "icount-env"
ENV_BOARD: dict[str, object] = {
    "name": ENV_BOARD_NAME,
    "codec": "fh1",
    "emulator": {"rate": 10, "payload": "schema"},
    "schema": {
        "frames": [
            {
                "type": 0,
                "fields": [
                    {"name": "temperature", "type": "f32"},
                    {"name": "humidity", "type": "f32"},
                    {"name": "pressure", "type": "f32"},
                ],
            }
        ]
    },
}
SHAPES = (25, 40)  # frames per read; 40 frames (3,000 bytes) stay under READ_COALESCE_BYTES
TICKS = (10, 40)


def make_reads(ports: int, per_read: int, ticks: int, payload: bytes = PAYLOAD) -> list[list[bytes]]:
    """What each port receives before each tick: consecutive fh1 frames."""
    from firmware_host.codecs.fh1 import encode_packet

    return [
        [b"".join(encode_packet(0, t * per_read + k, payload) for k in range(per_read)) for t in range(ticks)]
        for _ in range(ports)
    ]


async def pipeline(reads: list[list[bytes]], decode: bool | None = None) -> tuple[int, int]:
    """``decode``: None, no board (the default scenario); else the env board, decoding on or off."""
    """Run the runtime until every read was fed and flushed; (frames, flushed)."""
    import firmware_host
    from firmware_host import Runtime, config_from_dict
    from firmware_host._sync import ReadClock

    ports, ticks = len(reads), len(reads[0])
    pairs = [os.openpty() for _ in range(ports)]
    for _, slave in pairs:
        tty.setraw(slave)
    work = tempfile.mkdtemp(prefix="fh-icount-")
    from firmware_host.config.boards import board_from_dict

    extra: dict[str, object] = {} if decode is None else {"board": ENV_BOARD_NAME, "decode": decode}
    cfg = config_from_dict(
        {
            "buffer": {"capacity": 100_000},
            "devices": [
                {"name": f"d{i:02d}", "port": os.ttyname(s), "codec": "fh1", "baudrate": 921600, **extra}
                for i, (_, s) in enumerate(pairs)
            ],
            "sinks": [{"type": "jsonl", "path": os.path.join(work, "out.jsonl")}],
        },
        source="bench_icount",
        boards={ENV_BOARD_NAME: board_from_dict(ENV_BOARD)},
    )
    firmware_host.tune_gc()
    runtime = Runtime(cfg)
    fed = 0
    done = asyncio.get_running_loop().create_future()
    fire = ReadClock._fire

    def feed() -> None:
        nonlocal fed
        for (master, _), port_reads in zip(pairs, reads):
            os.write(master, port_reads[fed])
        fed += 1

    def fire_after_feeding(clock: ReadClock) -> None:
        # the readers that wait on this tick find one read's worth each
        if fed < ticks:
            feed()
        elif not done.done():
            done.set_result(None)
        fire(clock)

    setattr(ReadClock, "_fire", fire_after_feeding)  # noqa: B010  (mypy refuses a method assignment)
    try:
        await runtime.start()
        await runtime.wait_until(lambda s: all(d["state"] == "connected" for d in s["devices"].values()), 30)
        feed()  # the first read of each port waits for readiness, not for a tick
        await done
        total = ports * sum(r.count(b"\x00") for r in reads[0])
        # the buffer's counters, not the whole status: status also builds every
        # device's and sink's view, a cost of the observer, not of the pipeline
        while True:
            changed = runtime.changes.waiter()
            snap = await runtime.snapshot()
            # every frame in the sink before the shutdown: a slow (loaded) machine
            # could otherwise outlast the shutdown's drain and fail the run
            if sum(a.flushed for a in snap.accounts.values()) >= total:
                break
            await asyncio.wait_for(changed, 600)
        status = (await runtime.shutdown()).status
    finally:
        setattr(ReadClock, "_fire", fire)  # noqa: B010
        for master, slave in pairs:
            os.close(master)
            os.close(slave)
        shutil.rmtree(work, ignore_errors=True)
    devices = status["devices"].values()
    return sum(d["frames"] for d in devices), sum(d["flushed"] for d in devices)


def run_child(data_file: str, decode: bool | None) -> int:
    """The process callgrind counts: load the reads, run the pipeline once."""
    with open(data_file, "rb") as f:
        reads = pickle.load(f)
    try:
        import uvloop

        frames, flushed = uvloop.run(pipeline(reads, decode))
    except ImportError:
        frames, flushed = asyncio.run(pipeline(reads, decode))
    expected = len(reads) * len(reads[0]) * reads[0][0].count(b"\x00")
    print(f"frames {frames} flushed {flushed} expected {expected}")
    return 0 if frames == flushed == expected else 1


def count(source: Path, data_file: str, decode: bool | None = None) -> int:
    """Instructions of one child run under callgrind."""
    # a fixed hash seed: dict and set layouts, and so the counts, repeat
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(source) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--cache-sim=no",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            data_file,
            *(() if decode is None else ("--decode-child", "on" if decode else "off")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None or "frames" not in proc.stdout:
        raise SystemExit(
            f"bench_icount: the counted run failed ({proc.returncode}): "
            f"{proc.stdout.strip().splitlines()[-1:]} {proc.stderr.strip().splitlines()[-1:]}"
        )
    return int(found.group(1))


def per_frame(source: Path, ports: int, payload: bytes, decode: bool | None) -> float:
    """Instructions per frame (and per read, printed) of one configuration."""
    label = "" if decode is None else f" (decode {'on' if decode else 'off'})"
    per_read: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="fh-icount-") as tmp:
        for shape in SHAPES:
            counts = []
            for ticks in TICKS:
                data_file = os.path.join(tmp, f"reads-{shape}-{ticks}.pickle")
                with open(data_file, "wb") as f:  # made here, so the counted run only reads it
                    pickle.dump(make_reads(ports, shape, ticks, payload), f)
                counts.append(count(source, data_file, decode))
            reads = (TICKS[1] - TICKS[0]) * ports
            per_read[shape] = (counts[1] - counts[0]) / reads
            print(f"{shape} frames per read: {per_read[shape] / shape:,.0f} instructions per frame{label}", flush=True)
    (a, ia), (b, ib) = sorted(per_read.items())
    frame = (ib - ia) / (b - a)
    # rough: each shape's count varies by about 1% from run to run (timing
    # still decides when the flusher runs), and this divides a difference
    print(f"per frame {frame:,.0f}, per read {ia - a * frame:,.0f} instructions, roughly ({source}){label}")
    return frame


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=ROOT, help="checkout whose firmware_host is counted")
    ap.add_argument("--ports", type=int, default=48)
    ap.add_argument(
        "--decode", action="store_true", help="env-sensor payloads with a board schema: decoding on against off"
    )
    ap.add_argument("--child", metavar="DATA", help=argparse.SUPPRESS)
    ap.add_argument("--decode-child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args.child, None if args.decode_child is None else args.decode_child == "on")
    if not (args.source / "firmware_host").is_dir():
        ap.error(f"{args.source} holds no firmware_host package")
    if not 1 <= args.ports <= 256:
        ap.error("--ports must be in 1..256")
    if shutil.which("valgrind") is None:
        print("bench_icount: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(args.source))
    if not args.decode:
        per_frame(args.source, args.ports, PAYLOAD, None)
        return 0
    off = per_frame(args.source, args.ports, ENV_PAYLOAD, False)
    on = per_frame(args.source, args.ports, ENV_PAYLOAD, True)
    print(f"decoding adds {on - off:,.0f} instructions per frame: {100 * (on - off) / off:+.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
