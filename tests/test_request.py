"""Runtime.request against emulated boards on real ptys: acks dropped, delayed
or never sent; the test kit's expect. The accounting law is checked by the
fh_runtime fixture after each test."""

from __future__ import annotations

import asyncio
import re

import pytest

from firmware_host.codecs.fh1 import TYPE_COMMAND, TYPE_COMMAND_ACK, TYPE_LOG
from firmware_host.emulation.acks import AckPolicy
from firmware_host.errors import NotConnected, RequestTimeout, RequestUnsupported
from firmware_host.request import ack_reply, acked_seq

pytestmark = pytest.mark.timeout(30)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}


async def test_request_returns_the_ack_with_the_reply(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        async with board.answering(reply=b"ok") as answers:
            first = await rt.request("b", TYPE_COMMAND, b"led on", timeout=2.0)
            second = await rt.request("b", body="led off", timeout=2.0)
        assert (first.type, acked_seq(first), ack_reply(first)) == (TYPE_COMMAND_ACK, 0, b"ok")
        assert (acked_seq(second), ack_reply(second)) == (1, b"ok")  # the next seq of this device
        assert [(f.type, f.seq, f.payload) for f in answers.received] == [
            (TYPE_COMMAND, 0, b"led on"),
            (TYPE_COMMAND, 1, b"led off"),
        ]
        status = await rt.wait_frames("b", 2)
        # the acks are uplink frames like any other: counted, buffered, no gap
        assert status["devices"]["b"]["gaps"] == 0 and answers.acked == 2


async def test_a_dropped_ack_is_retried_with_the_same_seq(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        async with board.answering(drop_first=1) as answers:
            ack = await rt.request("b", body=b"\x01\x02", timeout=0.3, retries=1, backoff=0.05)
        assert (acked_seq(ack), ack_reply(ack)) == (0, b"\x01\x02")  # echo of the body
        assert (answers.commands, answers.dropped, answers.acked) == (2, 1, 1)
        assert [f.seq for f in answers.received] == [0, 0]  # the repeat carries the same seq


async def test_a_delayed_ack_within_the_timeout(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        async with board.answering(AckPolicy(delay=0.3, reply=b"late")) as answers:
            loop = asyncio.get_running_loop()
            started = loop.time()
            ack = await rt.request("b", timeout=2.0, retries=0)
            took = loop.time() - started
        assert ack_reply(ack) == b"late" and answers.commands == 1
        assert took >= 0.3


async def test_a_late_ack_to_an_earlier_copy_ends_the_request(fh_board, fh_runtime):
    """The ack to attempt 1 comes after its timeout, while attempt 2 waits: taken."""
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        async with board.answering(delay=0.4) as answers:
            ack = await rt.request("b", body=b"x", timeout=0.25, retries=3, backoff=0.01)
            assert acked_seq(ack) == 0
        assert answers.commands == 2  # the first ack arrived during the second attempt


async def test_a_stale_ack_to_an_earlier_request_is_not_taken(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        async with board.answering(delay=0.3) as answers:
            with pytest.raises(RequestTimeout):
                await rt.request("b", body=b"first", timeout=0.05, retries=0)
            # seq 0's ack comes while this one waits: only seq 1's ends it
            ack = await rt.request("b", body=b"second", timeout=2.0, retries=0)
            assert (acked_seq(ack), ack_reply(ack)) == (1, b"second")
            assert answers.acked == 2


async def test_no_ack_at_all_raises_request_timeout(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        async with board.answering(drop=1.0) as answers:
            with pytest.raises(RequestTimeout, match=r"no ack from 'b' for command seq 0 \(3 of 3 attempts"):
                await rt.request("b", timeout=0.1, retries=2, backoff=0.01)
            await answers.wait_received(3)
        assert answers.commands == 3 and answers.acked == 0


async def test_request_errors(fh_board, fh_runtime, fh_ports):
    board = fh_board("fh1")
    text = fh_board("lines")
    missing = str(fh_ports.directory / "not-there")
    config = {
        "devices": [
            board.config("b", **FAST),
            text.config("t", **FAST),
            {"name": "gone", "port": missing, "codec": "fh1", **FAST},
        ]
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("b", "connected")
        await rt.wait_state("t", "connected")
        with pytest.raises(KeyError):
            await rt.request("nope")
        with pytest.raises(RequestUnsupported, match="speaks lines"):
            await rt.request("t", body=b"x")
        with pytest.raises(ValueError, match="exceeds max_payload"):
            await rt.request("b", body=bytes(5000))
        with pytest.raises(ValueError, match="timeout"):
            await rt.request("b", timeout=0)
        with pytest.raises(ValueError, match="retries"):
            await rt.request("b", retries=11)
        with pytest.raises(NotConnected, match="'gone' is not connected"):
            async with asyncio.timeout(3):  # the attempts that could not be written wait no timeout
                await rt.request("gone", timeout=30, retries=1, backoff=0.0)


async def test_a_request_ends_when_the_runtime_stops(fh_board, fh_runtime):
    from firmware_host.errors import ShuttingDown

    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        pending = asyncio.create_task(rt.request("b", timeout=30.0, retries=0))
        await board.read_downlink()  # the command is out; no ack will come
        await rt.shutdown()
        with pytest.raises(ShuttingDown):
            await asyncio.wait_for(pending, 5)


# -- expect ------------------------------------------------------------------------------


async def test_expect_a_predicate_and_a_regex(fh_board, fh_runtime):
    board = fh_board("fh1")
    lines = fh_board("lines")
    async with fh_runtime({"devices": [board.config("b", **FAST), lines.config("l", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        await rt.wait_state("l", "connected")
        async with rt.expecting("b") as exp:
            await board.send_frames(3, type=1, payload=b"\x00\x01")
            await board.send_frames(1, type=TYPE_LOG, payload="boot ok, rev 7")
            frame = await exp.match(lambda f: f.type == 1 and f.seq == 2, timeout=5)
            assert frame.seq == 2
            log = await exp.match(r"rev (\d+)", timeout=5)  # a str regex: a binary payload as UTF-8
            assert log.type == TYPE_LOG
            assert exp.last_match is not None and exp.last_match.group(1) == "7"
        async with lines.streaming(rate=200):  # "frame <seq>" lines keep coming: no race with the call
            got = await rt.expect("l", re.compile(r"^frame (\d*7)$"), timeout=5)
        assert got.text is not None and got.text.endswith("7")
        with pytest.raises(TimeoutError, match="no frame of 'l' matched"):
            await rt.expect("l", rb"never", timeout=0.1)


async def test_acks_interleave_with_streamed_frames_without_a_gap(fh_board, fh_runtime):
    board = fh_board("nucleo-imu")
    async with fh_runtime({"devices": [board.config("imu", **FAST)]}) as rt:
        await rt.wait_state("imu", "connected")
        async with board.streaming(rate=500), board.answering(reply=b"ok") as answers:
            for i in range(20):
                ack = await rt.request("imu", body=bytes([i]), timeout=2.0)
                assert (acked_seq(ack), ack_reply(ack)) == (i, b"ok")
        status = await rt.wait_frames("imu", board.seq)  # streamed frames and acks: one seq line
        assert (status["devices"]["imu"]["gaps"], status["devices"]["imu"]["rejected"]) == (0, 0)
        assert answers.acked == 20


async def test_a_device_removed_during_a_request_is_not_connected_not_a_bad_argument(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        pending = asyncio.create_task(rt.request("b", timeout=0.3, retries=2, backoff=0.01))
        await board.read_downlink()  # the first attempt is out; no ack will come
        await rt.remove_device("b")
        with pytest.raises(NotConnected, match="'b' was removed during the request"):
            await asyncio.wait_for(pending, 5)


async def test_expect_still_sees_what_came_before_the_runtime_stopped(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}) as rt:
        await rt.wait_state("b", "connected")
        async with rt.expecting("b") as exp:
            await board.send_frames(3, type=1, payload=b"x")
            await rt.wait_flushed("b", 3)
            await rt.shutdown()
            assert (await exp.match(lambda f: f.seq == 2, timeout=5)).seq == 2
            with pytest.raises(TimeoutError, match="the runtime stopped"):
                await exp.match(lambda f: f.seq == 3, timeout=5)
        with pytest.raises(TimeoutError, match="the runtime stopped"):  # at once, not after the timeout
            async with asyncio.timeout(2):
                await rt.expect("b", lambda f: True, timeout=30)


def test_a_fleet_boards_answerer_keeps_no_frames():
    from firmware_host.emulation.acks import Answerer
    from firmware_host.frames import Frame

    kept, fleet = Answerer(AckPolicy()), Answerer(AckPolicy(), keep=False)
    for seq in range(100):
        for answerer in (kept, fleet):
            assert answerer.answer(Frame("h", seq, TYPE_COMMAND, 0.0, b"x")) is not None
    assert (len(kept.received), len(fleet.received)) == (100, 0)
    assert fleet.commands == fleet.acked == 100
