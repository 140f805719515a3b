"""``send`` and ``request`` through the control socket: the real CLI in a
subprocess against an in-process runtime whose devices are emulated boards on
real ptys (answering commands with acks, some dropped or delayed), and the
protocol's argument checks. The accounting law is checked by fh_runtime."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.codecs.fh1 import TYPE_COMMAND
from firmware_host.control.client import request as control_request
from firmware_host.control.protocol import MAX_BODY
from firmware_host.errors import ControlError
from tests.conftest import cli_async

pytestmark = pytest.mark.timeout(60)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}


@pytest.fixture
def sock() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="fhreq")  # short: a socket path has 107 bytes
    yield str(Path(d) / "ctl.sock")
    shutil.rmtree(d, ignore_errors=True)


async def cli(*args: str, control: str) -> tuple[int, str, str]:
    return await cli_async(*args, "--control", control)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("firmware-host: ") and "Traceback" not in err, err
    return lines[0]


async def test_send_reaches_the_board_through_its_codec(fh_board, fh_runtime, sock, tmp_path):
    board, text = fh_board("fh1"), fh_board("lines")
    config = {"devices": [board.config("b", **FAST), text.config("t", **FAST)]}
    async with fh_runtime(config, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        await rt.wait_state("t", "connected")
        rc, out, err = await cli("send", "b", "--hex", "01ff00", control=sock)
        assert rc == 0, err
        assert out == "sent 3 bytes to b (type 0xf0, seq 0)\n"
        [frame] = await board.read_downlink()
        assert (frame.type, frame.seq, frame.payload) == (TYPE_COMMAND, 0, b"\x01\xff\x00")
        body = tmp_path / "body.bin"
        body.write_bytes(bytes(range(10)))
        rc, out, err = await cli("send", "b", "--type", "0x21", "--file", str(body), "--json", control=sock)
        assert rc == 0, err
        assert json.loads(out) == {"device": "b", "type": 0x21, "seq": 1, "bytes": 10}
        [frame] = await board.read_downlink()
        assert (frame.type, frame.seq, frame.payload) == (0x21, 1, bytes(range(10)))
        rc, out, err = await cli("send", "t", "--text", "reset all", control=sock)
        assert rc == 0, err
        [line] = await text.read_downlink()
        assert line.text == "reset all"  # a line through the lines codec's encode


async def test_request_with_dropped_delayed_and_missing_acks(fh_board, fh_runtime, sock):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        async with board.answering(drop_first=1) as answers:  # the first copy's ack is lost
            rc, out, err = await cli("request", "b", "--hex", "0a0b", "--timeout", "0.5", control=sock)
            assert (rc, out) == (0, "0a0b\n"), err  # the echo of the body, after a retry
            assert (answers.commands, answers.dropped) == (2, 1)
        async with board.answering(delay=0.4, reply=b"ok") as answers:
            rc, out, err = await cli(
                "request", "b", "--text", "hi", "--timeout", "3", "--retries", "0", "--json", control=sock
            )
            assert rc == 0, err
            reply = json.loads(out)
            assert (reply["device"], reply["seq"], reply["type"], reply["reply"]) == ("b", 1, TYPE_COMMAND, "6f6b")
            assert reply["elapsed"] >= 0.4 and answers.commands == 1
        async with board.answering(drop=1.0) as answers:
            rc, out, err = await cli("request", "b", "--timeout", "0.1", "--retries", "1", control=sock)
            assert rc == 1 and out == ""
            assert "no ack from 'b' for command seq 2 (2 of 2 attempts written" in one_line_error(err)
            assert answers.commands == 2


async def test_bad_arguments_exit_2_in_one_line(fh_board, fh_runtime, sock, tmp_path):
    board, text = fh_board("fh1", max_payload=64), fh_board("lines")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(MAX_BODY + 1))
    config = {"devices": [board.config("b", **FAST), text.config("t", **FAST)]}
    async with fh_runtime(config, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        cases = [
            (("request", "nope"), "unknown device 'nope' (known: b, t)"),
            (("request", "t", "--text", "x"), "request: device 't' speaks lines"),
            (("request", "b", "--timeout", "61"), "request: 'timeout' must be a number of seconds"),
            (("request", "b", "--retries", "11"), "request: 'retries' must be an integer from 0 to 10"),
            (("request", "b", "--timeout", "0"), "Invalid value for '--timeout'"),
            (("send", "b", "--hex", "0g"), "--hex '0g': expected hex digits"),
            (("send", "b"), "give the body with --hex H, --text S or --file F"),
            (("send", "b", "--hex", "00", "--text", "x"), "give one of --hex, --text, --file"),
            (("send", "b", "--file", str(big)), f"the body is longer than {MAX_BODY} bytes"),
            (("send", "b", "--file", str(tmp_path / "none")), "No such file or directory"),
            (("send", "b", "--hex", "00" * 65), "send: fh1 payload of 65 bytes exceeds max_payload 64"),
            (("send", "t", "--text", "two\nlines"), "send: a line must not contain"),
            (("send", "b", "--type", "256", "--hex", "00"), "is not a frame type from 0 to 255"),
        ]
        # independent mistakes, started together: the test waits for the slowest CLI, not the sum
        results = await asyncio.gather(*(cli(*args, control=sock) for args, _ in cases))
        for (args, message), (rc, out, err) in zip(cases, results):
            assert rc == 2, (args, err)
            assert message in one_line_error(err), (args, err)
            assert out == ""


async def test_a_device_that_is_not_connected(fh_runtime, sock, fh_ports):
    missing = str(fh_ports.directory / "absent")
    async with fh_runtime({"devices": [{"name": "g", "port": missing, "codec": "fh1", **FAST}]}, control_path=sock):
        for args in (("send", "g", "--hex", "00"), ("request", "g", "--timeout", "0.05", "--retries", "0")):
            rc, _out, err = await cli(*args, control=sock)
            assert rc == 1 and "'g' is not connected" in one_line_error(err), err


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"cmd": "send", "device": "b"}, None),  # an empty body is a frame too
        ({"cmd": "send", "device": "b", "hex": "00", "extra": 1}, "send: unknown argument 'extra'"),
        ({"cmd": "send", "device": "b", "hex": 7}, "send: 'hex' must be a string of hex digits"),
        ({"cmd": "send", "device": "b", "hex": "0" * (3 * MAX_BODY + 1)}, "send: 'hex' is longer than"),
        ({"cmd": "send", "device": "b", "hex": "00", "text": "x"}, "give 'hex' or 'text', not both"),
        ({"cmd": "send", "device": "b", "text": "a\x00b"}, "'text' must be a string without NUL"),
        ({"cmd": "send", "device": "b", "type": True}, "'type' must be an integer from 0 to 255"),
        ({"cmd": "send", "device": "b", "type": -1}, "'type' must be an integer from 0 to 255"),
        ({"cmd": "send", "device": 5}, "send: 'device' must be a non-empty string"),
        ({"cmd": "send"}, "send: missing 'device'"),
        ({"cmd": "request", "device": "b", "timeout": float("nan")}, "'timeout' must be a number"),
        ({"cmd": "request", "device": "b", "timeout": 10**400}, "'timeout' must be a number"),
        ({"cmd": "request", "device": "b", "timeout": "1"}, "'timeout' must be a number"),
        ({"cmd": "request", "device": "b", "retries": 1.5}, "'retries' must be an integer"),
        ({"cmd": "request", "device": "b", "backoff": 1}, "request: unknown argument 'backoff'"),
    ],
)
async def test_protocol_argument_checks(fh_board, fh_runtime, sock, req, message):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        if message is None:
            assert (await control_request(sock, req))["bytes"] == 0
            return
        with pytest.raises(ControlError, match=message.replace("(", r"\(")) as info:
            await control_request(sock, req)
        assert info.value.exit_code == 2
