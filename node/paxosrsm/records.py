"""Records the core asks the runtime to persist, and the state folded from them.

The core never touches a disk. Each ``Ready`` carries the records that must be
durable (written *and* fsynced) before any message of that same ``Ready`` is
sent: a Promise or Accepted that reached a proposer and was then forgotten in a
crash would break Paxos (Paxos Made Simple, section 2.3: "an acceptor must
remember ... even if it fails and then restarts").

Storage folds records in order into a ``DurableState``; a restarted node is
built from that state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import Snapshot
from .types import ZERO_BALLOT, Ballot, Value


@dataclass(frozen=True, slots=True)
class PromiseRec:
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class AcceptRec:
    slot: int
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class TrimRec:
    """The acceptor forgets its votes below ``floor`` (those slots are decided)."""

    floor: int


@dataclass(frozen=True, slots=True)
class DecideRec:
    slot: int
    value: Value


@dataclass(frozen=True, slots=True)
class SnapshotRec:
    """The replica's snapshot; decided entries <= slot - log_retain may be dropped."""

    snapshot: Snapshot
    log_retain: int


@dataclass(frozen=True, slots=True)
class BallotRec:
    """A proposer is about to use ``ballot``: never use it (or a lower one) again.

    Paxos Made Simple, section 2.5: a proposer must remember the highest number
    it has tried, across failures; otherwise after a restart it could issue a
    second, different proposal under a ballot it already used.
    """

    ballot: Ballot


@dataclass(frozen=True, slots=True)
class IncarnationRec:
    """The identity of this disk, drawn when the data directory is created."""

    inc: int


@dataclass(frozen=True, slots=True)
class PeerIncRec:
    """Acceptor ``acceptor`` now runs incarnation ``inc``; promises of older ones are void."""

    acceptor: int
    inc: int


@dataclass(frozen=True, slots=True)
class RecoveryRec:
    """``active``: this acceptor lost its disk and must not vote until recovered."""

    active: bool


Record = (
    PromiseRec
    | BallotRec
    | AcceptRec
    | TrimRec
    | DecideRec
    | SnapshotRec
    | IncarnationRec
    | PeerIncRec
    | RecoveryRec
)


@dataclass(slots=True)
class DurableState:
    promised: Ballot = ZERO_BALLOT
    accepted: dict[int, tuple[Ballot, Value]] = field(default_factory=dict)
    floor: int = 0
    decided: dict[int, Value] = field(default_factory=dict)
    snapshot: Snapshot | None = None
    inc: int = 0
    peer_inc: dict[int, int] = field(default_factory=dict)
    recovering: bool = False
    #: Highest ballot this node's proposer has tried.
    proposer_ballot: Ballot = ZERO_BALLOT

    def apply(self, rec: Record) -> None:
        if isinstance(rec, PromiseRec):
            if rec.ballot > self.promised:
                self.promised = rec.ballot
        elif isinstance(rec, AcceptRec):
            if rec.slot >= self.floor:
                self.accepted[rec.slot] = (rec.ballot, rec.value)
                if rec.ballot > self.promised:
                    self.promised = rec.ballot
        elif isinstance(rec, TrimRec):
            if rec.floor > self.floor:
                self.floor = rec.floor
                for s in [s for s in self.accepted if s < rec.floor]:
                    del self.accepted[s]
        elif isinstance(rec, DecideRec):
            self.decided[rec.slot] = rec.value
        elif isinstance(rec, SnapshotRec):
            if self.snapshot is None or rec.snapshot.slot > self.snapshot.slot:
                self.snapshot = rec.snapshot
                cut = rec.snapshot.slot - rec.log_retain
                for s in [s for s in self.decided if s <= cut]:
                    del self.decided[s]
        elif isinstance(rec, BallotRec):
            if rec.ballot > self.proposer_ballot:
                self.proposer_ballot = rec.ballot
        elif isinstance(rec, IncarnationRec):
            self.inc = rec.inc
        elif isinstance(rec, PeerIncRec):
            self.peer_inc[rec.acceptor] = rec.inc
        elif isinstance(rec, RecoveryRec):
            self.recovering = rec.active
        else:  # pragma: no cover - exhaustive
            raise TypeError(f"unknown record {rec!r}")

    @classmethod
    def fold(cls, records: list[Record]) -> DurableState:
        st = cls()
        for r in records:
            st.apply(r)
        return st

    def compact(self) -> list[Record]:
        """Records equivalent to this state (used by storage compaction)."""
        out: list[Record] = []
        if self.inc:
            out.append(IncarnationRec(self.inc))
        if self.recovering:
            out.append(RecoveryRec(True))
        out.extend(PeerIncRec(a, i) for a, i in sorted(self.peer_inc.items()))
        if self.snapshot is not None:
            out.append(SnapshotRec(self.snapshot, 0))
        out.append(PromiseRec(self.promised))
        if self.proposer_ballot != ZERO_BALLOT:
            out.append(BallotRec(self.proposer_ballot))
        if self.floor:
            out.append(TrimRec(self.floor))
        out.extend(AcceptRec(s, b, v) for s, (b, v) in sorted(self.accepted.items()))
        out.extend(DecideRec(s, v) for s, v in sorted(self.decided.items()))
        return out
