"""Stream-splitting helpers shared by the codec and pipeline tests: a codec
must give the same frames however the bytes are cut into reads."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

from firmware_host.codecs.base import Codec
from firmware_host.frames import Frame


def key(frame: Frame) -> tuple[object, ...]:
    """Everything a frame carries, comparable."""
    return (frame.device, frame.seq, frame.type, frame.ts, frame.payload, frame.text)


def feed_all(codec: Codec, chunks: Iterable[bytes], ts: float) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for chunk in chunks:
        out.extend(key(f) for f in codec.feed(chunk, ts))
    return out


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (out-of-range and repeated cuts are ignored)."""
    points = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def random_chunks(data: bytes, rng: random.Random, max_chunk: int) -> list[bytes]:
    """``data`` in reads of 1..max_chunk bytes."""
    chunks, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        chunks.append(data[i : i + n])
        i += n
    return chunks
