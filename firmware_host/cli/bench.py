"""``firmware-host bench``: runs the benchmark harness of a source checkout.

The harness (tools/bench.py, with its feeder and thread-per-port baseline
processes) measures the runtime against what users write instead; see
docs/benchmarks.md. It lives in tools/ because it drives the runtime from the
outside as separate processes, like a user would; this module only finds it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path


def find_harness() -> Path | None:
    """tools/bench.py next to this package (an editable install or a checkout),
    or where ``$FIRMWARE_HOST_BENCH`` points."""
    env = os.environ.get("FIRMWARE_HOST_BENCH")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "tools" / "bench.py")
    for path in candidates:
        if path.is_file():
            return path
    return None


def bench_main(argv: Sequence[str]) -> int:
    path = find_harness()
    if path is None:
        raise FileNotFoundError(
            "the benchmark harness (tools/bench.py) ships with the source checkout; "
            "run from one, or set FIRMWARE_HOST_BENCH to its path"
        )
    spec = importlib.util.spec_from_file_location("firmware_host_bench_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(list(argv)))
