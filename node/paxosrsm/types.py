"""Value types shared by every layer: ballots, commands, slot values.

All are frozen, slotted dataclasses validated on construction, so a value that
exists is a valid value. Anything that crosses a trust boundary (the wire
codec, the simulator's fault injector) is rebuilt through these constructors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

MAX_NODE_ID = 1023
MAX_PAYLOAD_BYTES = 1 << 20


class ProtocolError(ValueError):
    """Input the core refuses. The core's state is unchanged when it is raised."""


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> None:
    # `type(...) is int` also refuses bool (an int subclass): a True slot
    # number is a bug somewhere upstream. One check: this runs per field.
    if type(value) is not int:
        raise ProtocolError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ProtocolError(f"{name}={value} out of range {bound}")


@dataclass(frozen=True, slots=True, order=True)
class Ballot:
    """A ballot number, totally ordered as ``(round, node)``.

    Paxos Made Simple, section 2.2: proposal numbers must be unique and totally
    ordered; pairing a round with the proposer's node id makes two proposers'
    ballots distinct even when they pick the same round.
    """

    round: int
    node: int

    def __post_init__(self) -> None:
        _check_int("ballot.round", self.round, 0, (1 << 63) - 1)
        _check_int("ballot.node", self.node, 0, MAX_NODE_ID)

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


#: The ballot no proposer ever uses; acceptors start promised to it.
ZERO_BALLOT = Ballot(0, 0)


class Kind(IntEnum):
    """What a client asks for."""

    WRITE = 1  # goes through the log; exactly-once via the session table
    READ = 2  # linearizable read: read-index confirmed by a quorum, no log write
    STALE_READ = 3  # answered from the local replica at once; may be stale


@dataclass(frozen=True, slots=True)
class Command:
    """One client write, as it sits inside a slot's batch."""

    client_id: int
    seq: int
    payload: bytes

    def __post_init__(self) -> None:
        _check_int("command.client_id", self.client_id, 0, (1 << 63) - 1)
        _check_int("command.seq", self.seq, 1, (1 << 63) - 1)
        if not isinstance(self.payload, bytes):
            raise ProtocolError("command.payload must be bytes")
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"command payload of {len(self.payload)} bytes is too large")


#: A slot's value: a batch of commands. The empty batch is the no-op that a new
#: leader proposes for a slot nobody filled (Paxos Made Simple, section 3).
Value = tuple[Command, ...]
NOOP: Value = ()


def check_value(value: object, max_batch: int | None = None) -> None:
    if not isinstance(value, tuple):
        raise ProtocolError(f"slot value must be a tuple of commands, got {type(value).__name__}")
    if max_batch is not None and len(value) > max_batch:
        raise ProtocolError(f"batch of {len(value)} commands exceeds max_batch={max_batch}")
    for c in value:
        if not isinstance(c, Command):
            raise ProtocolError(f"slot value holds a {type(c).__name__}, not a Command")
