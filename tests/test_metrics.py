"""``[metrics] listen``: ``/metrics`` and ``/healthz`` over real HTTP.

A real runtime (an emulated board on a pty, a real jsonl file) serves on a
free loopback port; a real HTTP client (urllib, in a thread) scrapes it, and
prometheus_client's own parser reads the text back. The numbers must equal
``status()`` taken right after, the runtime being quiescent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware_host import Frame, Sink
from firmware_host.config.schema import ConfigError, config_from_dict
from firmware_host.control.http import DEVICE_COUNTERS, PLUGIN_TASK_COUNTERS, SINK_COUNTERS, MetricsServer
from firmware_host.runtime import Runtime
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(30)

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}
Key = tuple[str, frozenset[tuple[str, str]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of one request: a real HTTP client."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read().decode()


async def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    return await asyncio.get_running_loop().run_in_executor(None, fetch, url, method)


def samples(text: str) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def one(found: dict[Key, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


class FlakySink(Sink):
    """Its writes raise while ``failing`` is set (a broker outage), then succeed."""

    name = "flaky"

    def __init__(self) -> None:
        self.failing = False
        self.seqs: list[int] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        if self.failing:
            raise ConnectionError("broker unreachable")
        self.seqs.extend(f.seq for f in frames)


def flaky_of(status: dict[str, Any]) -> dict[str, Any]:
    [sink] = [s for s in status["sinks"] if s["name"] == "flaky"]
    return sink


def config(board: Any, out: Path, port: int) -> dict[str, Any]:
    return {
        "buffer": {"flush_interval": 0.02, "batch_size": 50},
        "shutdown": {"grace": 0.5},
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "devices": [board.config("b", **FAST)],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }


def assert_metrics_equal_status(found: dict[Key, float], status: dict[str, Any]) -> None:
    buf = status["buffer"]
    for key in ("depth", "bytes", "capacity", "max_bytes"):
        assert one(found, f"firmware_host_buffer_{key}") == buf[key], key
    assert one(found, "firmware_host_buffer_dropped_total") == buf["dropped"]
    for name, d in status["devices"].items():
        for key in DEVICE_COUNTERS:
            assert one(found, f"firmware_host_device_{key}_total", device=name) == d[key], (name, key)
        assert one(found, "firmware_host_device_buffered", device=name) == d["buffered"]
        assert one(found, "firmware_host_device_state", device=name, state=d["state"]) == 1
    for i, s in enumerate(status["sinks"]):
        labels = {"sink": s["name"], "index": str(i)}
        for key in SINK_COUNTERS:
            assert one(found, f"firmware_host_sink_{key}_total", **labels) == s[key], (s["name"], key)
        assert one(found, "firmware_host_sink_pending", **labels) == s["pending"]
        assert one(found, "firmware_host_sink_state", **labels, state=s["state"]) == 1
    for name, t in status["tasks"].items():
        assert one(found, "firmware_host_task_restarts_total", task=name) == t["restarts"]
        assert one(found, "firmware_host_task_state", task=name, state=t["state"]) == 1
    # one state sample per device, sink and task: the current one
    states = [k for k in found if k[0].endswith("_state")]
    assert len(states) == len(status["devices"]) + len(status["sinks"]) + len(status["tasks"])


async def test_metrics_equal_status_at_the_same_moment(fh_board, fh_runtime, tmp_path: Path):
    board, out, flaky, port = fh_board("fh1"), tmp_path / "out.jsonl", FlakySink(), free_port()
    async with fh_runtime(config(board, out, port), sinks=[flaky]) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(120)
        await rt.wait_until(lambda s: all(x["delivered"] == 120 for x in s["sinks"]), 15)
        code, ctype, text = await get(f"http://127.0.0.1:{port}/metrics")
        status = await rt.status()  # quiescent: nothing arrives or leaves in between
        assert code == 200 and ctype.startswith("text/plain; version=")
        found = samples(text)
        assert status["devices"]["b"]["frames"] == 120 and len(status["sinks"]) == 2
        assert_metrics_equal_status(found, status)
        # the process itself (prometheus_client's process collector, Linux /proc)
        assert one(found, "process_resident_memory_bytes") > 0
        assert one(found, "process_open_fds") > 0
        # HEAD: the headers alone
        code, _, body = await get(f"http://127.0.0.1:{port}/metrics", "HEAD")
        assert (code, body) == (200, "")
        assert_accounting(status)


async def test_plugin_task_counters_are_exported(fh_board, fh_runtime, tmp_path: Path):
    """A plugin's periodic task: runs, failures, overruns, missed as in status."""
    board, out, port = fh_board("fh1"), tmp_path / "out.jsonl", free_port()
    async with fh_runtime(config(board, out, port)) as rt:
        rt.status_sections["plugins"] = lambda: [
            {"name": "p", "tasks": [{"name": "t", "runs": 7, "failures": 2, "overruns": 1, "missed": 3}]}
        ]
        _, _, text = await get(f"http://127.0.0.1:{port}/metrics")
        found = samples(text)
        for key, value in zip(PLUGIN_TASK_COUNTERS, (7, 2, 1, 3), strict=True):
            assert one(found, f"firmware_host_plugin_task_{key}_total", plugin="p", task="t") == value
        # a plugin status that broke shows as an error in status; the scrape still works
        rt.status_sections["plugins"] = lambda: 1 / 0
        code, _, text = await get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200 and "firmware_host_plugin_task" not in text


async def test_healthz_503_while_a_sink_fails_and_200_when_it_recovers(fh_board, fh_runtime, tmp_path: Path):
    board, out, flaky, port = fh_board("fh1"), tmp_path / "out.jsonl", FlakySink(), free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    async with fh_runtime(config(board, out, port), sinks=[flaky]) as rt:
        await rt.wait_state("b", "connected")
        code, ctype, body = await get(url)
        assert (code, ctype, json.loads(body)) == (200, "application/json", {"healthy": True, "reasons": []})
        flaky.failing = True
        await board.send_frames(10)
        await rt.wait_until(lambda s: flaky_of(s)["state"] == "retrying", 15)
        code, _, body = await get(url)
        reply = json.loads(body)
        assert code == 503 and reply["healthy"] is False
        [reason] = reply["reasons"]
        assert reason.startswith("sink flaky is retrying") and "broker unreachable" in reason
        flaky.failing = False
        await rt.wait_until(lambda s: flaky_of(s)["state"] == "ok" and flaky_of(s)["delivered"] == 10, 15)
        code, _, body = await get(url)
        assert (code, json.loads(body)["healthy"]) == (200, True)
        assert flaky.seqs == list(range(10))
        # once a stop is requested the runtime is going away: 503 during the drain
        rt.request_stop("test")
        code, _, body = await get(url)
        assert code == 503 and json.loads(body)["reasons"] == ["the runtime is shutting down"]


async def test_other_paths_and_methods(fh_board, fh_runtime, tmp_path: Path):
    board, out, port = fh_board("fh1"), tmp_path / "out.jsonl", free_port()
    async with fh_runtime(config(board, out, port)):
        assert (await get(f"http://127.0.0.1:{port}/"))[0] == 404
        assert (await get(f"http://127.0.0.1:{port}/metrics/x"))[0] == 404
        assert (await get(f"http://127.0.0.1:{port}/metrics?name[]=x"))[0] == 200  # a query is ignored
        assert (await get(f"http://127.0.0.1:{port}/metrics", "POST"))[0] == 405
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"nonsense\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
        await writer.wait_closed()


async def dropped(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection without a byte (a FIN, or a reset when
    it left a request unread)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def test_a_slowloris_does_not_block_scrapes_and_is_dropped(fh_board, fh_runtime, tmp_path: Path):
    board, out = fh_board("fh1"), tmp_path / "out.jsonl"
    async with fh_runtime(config(board, out, free_port())) as rt:
        server = MetricsServer(rt.runtime, "127.0.0.1", 0, head_timeout=2.0)
        await server.start()
        try:
            host, port = server.address
            started = time.monotonic()
            silent = await asyncio.open_connection(host, port)  # connects, sends nothing
            trickle = await asyncio.open_connection(host, port)  # a head that never ends
            trickle[1].write(b"GET /metrics HTTP/1.1\r\nX: ")
            huge = await asyncio.open_connection(host, port)  # a head past the bound
            huge[1].write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
            code, _, text = await get(f"http://{host}:{port}/metrics")  # served meanwhile
            assert code == 200 and "firmware_host_device_frames_total" in text
            assert time.monotonic() - started < 2.0  # not after the slow ones' deadline
            for reader, writer in (silent, trickle, huge):
                assert await dropped(reader)  # without a reply
                writer.close()
            assert time.monotonic() - started >= 2.0
        finally:
            await server.close()


async def test_connections_over_the_cap_are_closed(fh_board, fh_runtime, tmp_path: Path):
    board, out = fh_board("fh1"), tmp_path / "out.jsonl"
    async with fh_runtime(config(board, out, free_port())) as rt:
        server = MetricsServer(rt.runtime, "127.0.0.1", 0, head_timeout=5, max_connections=2)
        await server.start()
        try:
            host, port = server.address
            held = [await asyncio.open_connection(host, port) for _ in range(2)]
            for _, writer in held:  # admitted: a request still gets its reply
                writer.write(b"GET /healthz HTTP/1.1\r\n")
            async with asyncio.timeout(5):  # the server's accept tasks run (no timed sleep)
                while server.connections < 2:
                    await asyncio.sleep(0)
            extra_reader, extra_writer = await asyncio.open_connection(host, port)
            assert await dropped(extra_reader)  # over the cap: closed at once
            extra_writer.close()
            for reader, writer in held:
                writer.write(b"\r\n")
                assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 OK\r\n")
                writer.close()
        finally:
            await server.close()


async def test_address_in_use_is_one_line_and_nothing_left_running(fh_board, tmp_path: Path):
    board = fh_board("fh1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rt = Runtime(config_from_dict(config(board, tmp_path / "out.jsonl", port)))
        with pytest.raises(Exception, match=rf"^\[metrics\] listen 127.0.0.1:{port}: ") as caught:
            await rt.start()
        assert type(caught.value).__name__ == "RuntimeFailure"
        assert all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())


async def test_missing_prometheus_client_is_a_config_error(fh_board, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(__import__("sys").modules, "firmware_host.control.http")
    rt = Runtime(config_from_dict(config(fh_board("fh1"), tmp_path / "out.jsonl", 9464)))
    with pytest.raises(ConfigError) as caught:
        await rt.start()
    assert "\n" not in str(caught.value)
    assert "metrics.listen: [metrics] listen needs prometheus_client" in str(caught.value)
    assert "pip install 'firmware-host[metrics]'" in str(caught.value)


def test_without_listen_the_runtime_does_not_import_prometheus_client() -> None:
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "from firmware_host.config import config_from_dict\n"
        "from firmware_host.runtime import Runtime\n"
        "async def main():\n"
        "    rt = Runtime(config_from_dict({}))\n"
        "    await rt.start(); await rt.shutdown()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'firmware_host.control.http'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("listen", "why"),
    [
        ("127.0.0.1", "expected HOST:PORT"),
        ("127.0.0.1:0", "port from 1 to 65535"),
        ("127.0.0.1:65536", "port from 1 to 65535"),
        (":9464", "expected HOST:PORT"),
        ("::1:9464", "IPv6 host must be in brackets"),
        ("127.0.0.1:-1", "expected HOST:PORT"),
        ("127.0.0.1:９", "expected HOST:PORT"),
        ("a b:9464", "not a host name"),
        (9464, "expected an address"),
        ("", "expected an address"),
    ],
)
def test_bad_listen_is_one_line(listen: object, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"metrics": {"listen": listen}}, source="gw.toml")
    text = str(caught.value)
    assert text.startswith("gw.toml: metrics.listen: ") and why in text and "\n" not in text


def test_good_listen() -> None:
    assert config_from_dict({}).metrics.address is None
    assert config_from_dict({"metrics": {"listen": "0.0.0.0:9464"}}).metrics.address == ("0.0.0.0", 9464)
    assert config_from_dict({"metrics": {"listen": "[::1]:1"}}).metrics.address == ("::1", 1)
    with pytest.raises(ConfigError, match="unknown key 'port' in \\[metrics\\]"):
        config_from_dict({"metrics": {"port": 1}})
