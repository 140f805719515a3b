"""A throwaway Mosquitto broker on 127.0.0.1, for the MQTT tests and tools/bench_mqtt.py.

Needs the ``mosquitto`` binary (Debian: ``apt-get install mosquitto``; .ci/run
installs it when it can). Persistent, so a restart keeps sessions and queued
QoS 1 messages, which the broker-restart tests rely on. ``set_tcp_nodelay``:
without it Nagle's algorithm holds the broker's second PUBACK until the
client's delayed ACK of the first (up to 40 ms on Linux), and a batch that
waits for every PUBACK waits that long (docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["MOSQUITTO", "Broker", "free_port"]

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A real mosquitto on 127.0.0.1, persistent so a restart keeps sessions."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        # "user": started as root, mosquitto would switch to the mosquitto user
        # and could not write its persistence file in our temp dir
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {directory}/\n"
            "max_queued_messages 100000\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(200):  # bounded: until the listener accepts
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            await asyncio.to_thread(self.proc.wait, 10)
            self.proc = None
