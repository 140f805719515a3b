"""Serial device servers for tests: a real ser2net, and pyserial's own RFC 2217
server (``serial.rfc2217.PortManager``) in threads, each serving a pty whose
master end the test writes to as the device."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path

import serial
import serial.rfc2217

SER2NET = shutil.which("ser2net") or next(
    (p for p in ("/usr/sbin/ser2net", "/usr/local/sbin/ser2net") if os.access(p, os.X_OK)), None
)
SKIP_NO_SER2NET = "ser2net is not installed (apt-get install ser2net; CI installs it)"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deadline_poll(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true, for where no event exists (another
    process's state); fails naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Pty:
    """A pty pair; the test keeps the master (the device's side). The slave
    is closed here: the server opens it by name."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.name = os.ttyname(slave)
        os.close(slave)

    def slave_open(self) -> bool:
        """Whether someone (the server) holds the slave open: without one the master hangs up."""
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        return not any(ev & select.POLLHUP for _, ev in poller.poll(0))

    def wait_slave_open(self, timeout: float = 5) -> None:
        deadline_poll(self.slave_open, timeout, f"the server to open {self.name}")

    def speed(self) -> int:
        """The slave's output speed (a termios B constant): what the server set."""
        return int(termios.tcgetattr(self.master)[5])

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def close(self) -> None:
        os.close(self.master)


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp: no
    connection is made, so ser2net opens no device for a probe)."""
    needle = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            return any(line.split()[1] == needle and line.split()[3] == "0A" for line in list(f)[1:])
    except OSError:
        return False


class Ser2net:
    """A ser2net (4.x, YAML config) in the foreground serving ``device`` on
    127.0.0.1:``port`` through ``accepter`` (``tcp`` or ``telnet(rfc2217),tcp``)."""

    def __init__(self, workdir: Path, device: str, accepter: str, line: str = "9600n81") -> None:
        assert SER2NET is not None
        self.port = free_tcp_port()
        self.config = workdir / f"ser2net-{self.port}.yaml"
        self.config.write_text(
            "%YAML 1.1\n---\n"
            "connection: &device\n"
            f"  accepter: {accepter},127.0.0.1,{self.port}\n"
            f"  connector: serialdev,{device},{line},local\n"
        )
        self.pidfile = workdir / f"ser2net-{self.port}.pid"
        self.log = workdir / f"ser2net-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None
        assert SER2NET is not None
        with open(self.log, "ab") as log:
            # -n: foreground; -d: debug to stdout; -u: no UUCP lock files; -P: our own pid file
            self.proc = subprocess.Popen(
                [SER2NET, "-n", "-d", "-u", "-P", str(self.pidfile), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline_poll(lambda: _listening(self.port) or self.proc.poll() is not None, 10, "ser2net to listen")  # type: ignore[union-attr]
        if self.proc.poll() is not None:
            raise AssertionError(f"ser2net exited ({self.proc.returncode}): {self.log.read_text()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGKILL)  # as a crash or a power cut: no goodbye to the client
        proc.wait(timeout=10)


class PyserialRfc2217Server:
    """pyserial's RFC 2217 server (as its examples/rfc2217_server.py), one
    client, in two threads: serial -> network, network -> serial. ``serial``
    is the port it set (its baudrate is what the client asked for)."""

    def __init__(self, device: str) -> None:
        self.serial = _PtySerial(device, baudrate=9600, timeout=0.05)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"rfc2217://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        #: the client's address, once one connected
        self.peer: tuple[str, int] | None = None
        self._thread = threading.Thread(target=self._serve, name="rfc2217-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, peer = self.listener.accept()
        except OSError:  # closed before any client came
            return
        self.peer = peer
        self._conn = conn
        manager = serial.rfc2217.PortManager(self.serial, _Connection(conn))
        reader = threading.Thread(target=self._to_network, args=(conn, manager), daemon=True)
        reader.start()
        try:
            while not self._stop.is_set():
                data = conn.recv(1024)
                if not data:
                    break
                self.serial.write(b"".join(manager.filter(data)))
        except OSError:
            pass
        finally:
            self._stop.set()
            reader.join(5)

    def _to_network(self, conn: socket.socket, manager: serial.rfc2217.PortManager) -> None:
        try:
            while not self._stop.is_set():
                data = self.serial.read(self.serial.in_waiting or 1)
                if data:
                    conn.sendall(b"".join(manager.escape(data)))
        except (OSError, serial.SerialException):
            pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        if self._conn is not None:
            try:
                self._conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        if self._conn is not None:
            self._conn.close()
        self.serial.close()


class _PtySerial(serial.Serial):
    """A pty has no modem lines (TIOCMGET fails on it): they read as low, so
    PortManager's notification of them does not end its thread."""

    @property
    def cts(self) -> bool:
        return False

    @property
    def dsr(self) -> bool:
        return False

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return False


class _Connection:
    """What PortManager writes its answers to."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn

    def write(self, data: bytes) -> None:
        self._conn.sendall(data)
