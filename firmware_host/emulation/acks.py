"""How an emulated board answers the host's fh1 commands.

Firmware that takes commands (type ``TYPE_COMMAND``, 0xF0) answers each with
an ack (``TYPE_COMMAND_ACK``, 0xF1) whose payload is the command's seq
(uint32 little-endian) followed by the reply bytes; ``tools/c/fh1_command.h``
is that firmware side in C. :class:`AckPolicy` says what this board replies
and which acks go missing or come late, :class:`Answerer` decides per
command (no I/O: the board writes, see ``EmulatedBoard.answering``).

Faults are deterministic first (``drop_first``: the first N commands get no
ack), then random but seeded (``drop``), so a test knows which attempt of a
request is answered.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from firmware_host.codecs.fh1 import TYPE_COMMAND
from firmware_host.frames import Frame
from firmware_host.request import ACK_SEQ

__all__ = ["MAX_ACK_DELAY", "AckPolicy", "Answerer"]

#: the longest an emulated board may hold an ack back, seconds
MAX_ACK_DELAY = 60.0


@dataclass(frozen=True)
class AckPolicy:
    """What a board answers to commands. ``reply`` None echoes the command's body."""

    drop_first: int = 0  # the first N commands (repeats included) get no ack
    drop: float = 0.0  # after those, each ack is lost with this probability
    delay: float = 0.0  # seconds between reading a command and writing its ack
    reply: bytes | None = None  # the ack's bytes after the seq; None: the command's body

    def __post_init__(self) -> None:
        if isinstance(self.drop_first, bool) or not isinstance(self.drop_first, int) or self.drop_first < 0:
            raise ValueError(f"drop_first must be an int >= 0, got {self.drop_first!r}")
        if not 0.0 <= self.drop <= 1.0:
            raise ValueError(f"drop must be a probability from 0 to 1, got {self.drop!r}")
        if not (math.isfinite(self.delay) and 0.0 <= self.delay <= MAX_ACK_DELAY):
            raise ValueError(f"delay must be 0 to {MAX_ACK_DELAY:g} seconds, got {self.delay!r}")


class Answerer:
    """Per downlink frame: the ack payload to write, or None (not a command, or dropped)."""

    def __init__(
        self, policy: AckPolicy, seed: object = 0, *, max_payload: int | None = None, keep: bool = True
    ) -> None:
        self.policy = policy
        #: the longest reply an ack can carry (the board's max_payload less the seq): longer ones are cut
        self.max_reply = None if max_payload is None else max(0, max_payload - ACK_SEQ.size)
        self._rng = random.Random(f"{seed}:acks")
        #: every frame the host sent, in order (commands and anything else); kept only with
        #: ``keep`` (a test's board), not by a fleet board that may run for weeks
        self.received: list[Frame] = []
        self._keep = keep
        #: commands seen, acks written (or due), acks dropped
        self.commands = 0
        self.acked = 0
        self.dropped = 0

    def answer(self, frame: Frame) -> bytes | None:
        if self._keep:
            self.received.append(frame)
        if frame.type != TYPE_COMMAND:
            return None
        self.commands += 1
        policy = self.policy
        if self.commands <= policy.drop_first or (policy.drop and self._rng.random() < policy.drop):
            self.dropped += 1
            return None
        self.acked += 1
        reply = policy.reply if policy.reply is not None else (frame.payload or b"")
        if self.max_reply is not None:
            reply = reply[: self.max_reply]
        return ACK_SEQ.pack(frame.seq) + reply
