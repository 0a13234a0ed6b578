"""What one step of the core produces: the ``Ready`` batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import ClientReply, DecidedEntry, Envelope, PeerMessage
from .records import Record


class SafetyViolation(AssertionError):
    """A Paxos invariant failed at runtime. Never caught by the core."""


@dataclass(slots=True)
class Ready:
    """Output of the core since the last ``Node.ready()``.

    Contract with the runtime (etcd-io/raft's Ready, in one call):
      1. write every record in ``records`` and fsync them (one fsync for all:
         group commit);
      2. only then send ``messages`` and ``replies`` - each may depend on a
         record of this batch or of an earlier one;
      3. ``committed`` lists the slots applied to the state machine in this
         batch, in order (for observers: metrics, checkers, change feeds).
    Batches must be made durable in the order they were produced.
    """

    records: list[Record] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    replies: list[ClientReply] = field(default_factory=list)
    committed: list[DecidedEntry] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.records or self.messages or self.replies or self.committed)


class Outbox:
    """The per-node buffer that the roles write into during a step."""

    __slots__ = ("node_id", "ready")

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.ready = Ready()

    def send(self, dst: int, msg: PeerMessage) -> None:
        self.ready.messages.append(Envelope(self.node_id, dst, msg))

    def persist(self, rec: Record) -> None:
        self.ready.records.append(rec)

    def reply(self, r: ClientReply) -> None:
        self.ready.replies.append(r)

    def take(self) -> Ready:
        out, self.ready = self.ready, Ready()
        return out
