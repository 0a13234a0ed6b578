"""The acceptor role (Paxos Made Simple, section 2.2, phases 1b and 2b)."""

from __future__ import annotations

from .config import ClusterConfig
from .messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    Heartbeat,
    HeartbeatAck,
    Nack,
    Prepare,
    Promise,
)
from .outbox import Outbox, SafetyViolation
from .records import AcceptRec, DurableState, PromiseRec, TrimRec
from .types import Ballot, Value


class Acceptor:
    def __init__(self, node_id: int, cfg: ClusterConfig, state: DurableState, out: Outbox) -> None:
        self.id = node_id
        self.cfg = cfg
        self.out = out
        self.promised: Ballot = state.promised
        self.accepted: dict[int, tuple[Ballot, Value]] = dict(state.accepted)
        #: Votes below ``floor`` were trimmed; those slots are decided.
        self.floor: int = state.floor

    def on_prepare(self, m: Prepare) -> None:
        # P1b: promise only ballots >= every earlier promise. Equal is allowed so
        # a retransmitted Prepare (its Promise lost) is answered the same way.
        if m.ballot >= self.promised:
            if m.ballot > self.promised:
                self.promised = m.ballot
                # The promise must be durable before the Promise leaves (Ready contract).
                self.out.persist(PromiseRec(m.ballot))
            entries = tuple(
                AcceptedEntry(s, b, v)
                for s, (b, v) in sorted(self.accepted.items())
                if s >= m.from_slot
            )
            self.out.send(m.ballot.node, Promise(m.ballot, self.id, self.floor, entries))
        elif self.cfg.nack:
            self.out.send(m.ballot.node, Nack(m.ballot, self.promised, self.id))

    def on_accept(self, m: Accept) -> None:
        if m.slot < self.floor:
            # Decided and trimmed long ago; the proposer learns it by catch-up.
            return
        if m.ballot < self.promised:
            if self.cfg.nack:
                self.out.send(m.ballot.node, Nack(m.ballot, self.promised, self.id))
            return
        cur = self.accepted.get(m.slot)
        if cur is not None and cur[0] == m.ballot and cur[1] != m.value:
            # A proposer sends one value per (ballot, slot); two would let two
            # values be chosen at one ballot (section 2.2, "a proposer issues a
            # proposal with number n ... for only one value").
            raise SafetyViolation(
                f"acceptor {self.id}: two values for slot {m.slot} at ballot {m.ballot}"
            )
        self.promised = m.ballot
        if cur != (m.ballot, m.value):
            self.accepted[m.slot] = (m.ballot, m.value)
            self.out.persist(AcceptRec(m.slot, m.ballot, m.value))
        # Only the distinguished learner hears the vote; it is the ballot's node.
        self.out.send(m.ballot.node, Accepted(m.ballot, m.slot, self.id))

    def on_heartbeat(self, m: Heartbeat) -> None:
        self.out.send(m.ballot.node, HeartbeatAck(m.ballot, m.probe, self.id, self.promised))

    def trim(self, floor: int) -> None:
        """Forget votes below ``floor``; the caller guarantees those slots are decided."""
        if floor <= self.floor:
            return
        self.floor = floor
        for s in [s for s in self.accepted if s < floor]:
            del self.accepted[s]
        self.out.persist(TrimRec(floor))

    def debug_state(self) -> tuple[object, ...]:
        return (self.promised, tuple(sorted(self.accepted.items())), self.floor)
