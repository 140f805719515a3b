"""The test kit's scripted ports (``firmware_host/transport/fake.py``): what each
read, write, close and open does, item by item (tests written from mutation
testing, docs/testing-internals.md)."""

from __future__ import annotations

import asyncio

import pytest

from firmware_host.errors import PortClosed
from firmware_host.transport.fake import FakeOpener, FakePort

pytestmark = pytest.mark.timeout(10)


async def test_a_fake_port_replays_its_items_and_an_error_closes_it():
    port = FakePort([b"a", b"b", OSError("boom")])
    assert port.url == "fake://"
    assert port.closed is False
    assert await port.read() == b"a"
    assert await port.read() == b"b"
    with pytest.raises(OSError, match=r"^boom$"):
        await port.read()
    assert port.closed
    with pytest.raises(PortClosed, match=r"^port closed$"):
        await port.read()
    with pytest.raises(PortClosed, match=r"^port closed$"):
        port.write(b"x")


async def test_items_after_an_error_are_still_read_before_closed_is_said():
    port = FakePort([PortClosed("first"), b"after"], url="fake://u")
    assert port.url == "fake://u"
    with pytest.raises(PortClosed, match=r"^first$"):
        await port.read()
    assert await port.read() == b"after"
    with pytest.raises(PortClosed, match=r"^port closed$"):
        await port.read()


async def test_feed_and_fail_append_to_the_script():
    port = FakePort()
    reading = asyncio.ensure_future(port.read())
    await asyncio.sleep(0)
    assert not reading.done()
    port.feed(b"fed")
    assert await asyncio.wait_for(reading, 1) == b"fed"
    port.fail()
    with pytest.raises(PortClosed, match=r"^unplugged$"):
        await port.read()
    port2 = FakePort()
    port2.fail(ValueError("mine"))
    with pytest.raises(ValueError, match=r"^mine$"):
        await port2.read()


async def test_writes_are_recorded_as_bytes():
    port = FakePort()
    port.write(bytearray(b"ab"))
    port.write(b"c")
    assert port.writes == [b"ab", b"c"]
    assert all(type(w) is bytes for w in port.writes)


async def test_close_wakes_a_pending_read_and_is_idempotent():
    port = FakePort()
    reading = asyncio.ensure_future(port.read())
    await asyncio.sleep(0)
    await port.close()
    assert port.closed
    with pytest.raises(PortClosed, match=r"^port closed$"):
        await asyncio.wait_for(reading, 1)
    await port.close()  # a second close queues nothing more
    with pytest.raises(PortClosed, match=r"^port closed$"):
        await port.read()
    assert port._items.empty()


async def test_the_opener_hands_out_each_urls_script_in_order():
    first, second = FakePort(), FakePort()
    opener = FakeOpener({"fake://a": [first, OSError("busy"), second], "fake://b": []})
    assert await opener("fake://a", 9600) is first
    with pytest.raises(OSError, match=r"^busy$"):
        await opener("fake://a", 9600)
    assert await opener("fake://a", 115200) is second
    with pytest.raises(PortClosed, match=r"^cannot open fake://a: no such device$"):
        await opener("fake://a", 9600)
    with pytest.raises(PortClosed, match=r"^cannot open fake://b: no such device$"):
        await opener("fake://b", 9600)
    with pytest.raises(PortClosed, match=r"^cannot open fake://c: no such device$"):
        await opener("fake://c", 9600)
    assert opener.opens == {"fake://a": 4, "fake://b": 1, "fake://c": 1}
