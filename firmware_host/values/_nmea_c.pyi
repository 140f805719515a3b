"""Types of the optional C module (``_nmea_c.c``); see values/nmea_fast.py."""

from typing import Any

MAX_PAYLOAD: int

class Parser:
    def __init__(self) -> None: ...
    def add(
        self, head: str, talker: str, msg: str, open_group: bool, specs: tuple[tuple[tuple[str, int, int], ...], ...], /
    ) -> None: ...
    def fields(self, text: str, /) -> dict[str, Any] | None: ...

def round10(x: float, /) -> float: ...
