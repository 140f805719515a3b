"""A failure part way through start() leaves nothing running."""

from __future__ import annotations

import asyncio

import pytest

from firmware_host import FakeOpener, FakePort, Runtime, config_from_dict

pytestmark = pytest.mark.timeout(15)


async def test_failing_start_hook_stops_what_was_started(tmp_path):
    cfg = config_from_dict(
        {
            "devices": [{"name": "a", "port": "fake://a", "codec": "lines"}],
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "f.jsonl")}],
        }
    )
    rt = Runtime(cfg, opener=FakeOpener({"fake://a": [FakePort([b"one\n"])]}), control_path=str(tmp_path / "c.sock"))

    async def broken(_: Runtime) -> None:
        raise RuntimeError("plugin start failed")

    rt.on_start.append(broken)
    before = set(asyncio.all_tasks())
    with pytest.raises(RuntimeError, match="plugin start failed"):
        await rt.start()
    assert rt.summary is not None  # shut down in order, accounting included
    assert all(e.task.done() for e in rt.devices.values())
    assert not (tmp_path / "c.sock").exists()  # the control socket is gone
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leftover == set()
