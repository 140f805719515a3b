"""Human output: aligned plain-text tables (no dependencies)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-align text columns, right-align numbers."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = (
        [
            all(_is_num(row[i]) for row in cells if row[i] != "-") and any(row[i] != "-" for row in cells)
            for i in range(len(headers))
        ]
        if cells
        else [False] * len(headers)
    )
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers))] + [line(row) for row in cells])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _is_num(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


DEVICE_COLUMNS = (
    "device",
    "state",
    "frames",
    "rejected",
    "gaps",
    "reconnects",
    "flushed",
    "dropped",
    "buffered",
    "lost",
)


def status_table(status: dict[str, Any]) -> str:
    buf = status["buffer"]
    head = (
        f"uptime {status['uptime']:.1f}s  buffer {buf['depth']}/{buf['capacity']} frames, "
        f"{buf['bytes']} bytes, {buf['dropped']} dropped"
    )
    rows = [[name] + [d.get(c) for c in DEVICE_COLUMNS[1:]] for name, d in sorted(status["devices"].items())]
    out = head + "\n" + table(DEVICE_COLUMNS, rows)
    # a line each, not a column: the reasons are long, and a device in backoff must say why
    errors = [
        f"{name}: last_error: {d['last_error']}" for name, d in sorted(status["devices"].items()) if d.get("last_error")
    ]
    if errors:
        out += "\n\n" + "\n".join(errors)
    sinks = status.get("sinks") or []
    if sinks:
        sink_rows = [[s["name"]] + [s.get(c) for c in SINK_COLUMNS[1:]] for s in sinks]
        out += "\n\n" + table(SINK_COLUMNS, sink_rows)
    return out


#: one line per sink in the status table (each sink delivers at its own pace)
SINK_COLUMNS = ("sink", "state", "delivered", "missed", "pending", "lost", "failures", "last_error")


def buffers_table(buffers: dict[str, Any]) -> str:
    head = (
        f"buffer {buffers['depth']}/{buffers['capacity']} frames, {buffers['bytes']} bytes, "
        f"{buffers['dropped']} dropped"
    )
    rows = [
        [name, d["depth"], d["dropped"], None if d["oldest_age"] is None else f"{d['oldest_age']:.3f}s"]
        for name, d in sorted(buffers["devices"].items())
    ]
    return head + "\n" + table(("device", "depth", "dropped", "oldest"), rows)
