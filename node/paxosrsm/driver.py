"""The one loop around the core, shared by the runtime and the simulator.

``net/runtime.py`` (real sockets, fsync in a thread) and ``sim/engine.py``
(seeded network, clock and disk) both drive a ``Node`` through this class, so
the simulator runs the runtime's order and not an idealised one:

* inputs (``step``, ``client``, ``tick``) only change the core and mark it
  dirty; any number of them may run between two flusher cycles;
* one flusher cycle at a time: ``cycle()`` proposes what was queued since the
  last one (so everything that arrived during an fsync goes into as few slots
  as possible), takes the Ready and says what to write; the caller makes those
  records durable (one fsync), then sends, then calls ``cycle()`` again while
  the core is dirty;
* learner records (decisions, snapshots) need no fsync before any message:
  what they say is already chosen and durable at a majority of acceptors
  (docs/design.md sections 8 and 13). They wait for the next batch's fsync,
  in order, or go on their own when nothing else comes within a tick
  (``arm_deferred`` asks the caller for that timer, ``flush_deferred`` is it).
  So a runtime may send messages before the learner records produced with
  them are on disk - the simulator does exactly the same;
* a leader re-invites, every ``retransmit_ticks``, the acceptors that hold no
  promise session with it (``Node.reinvite``): the decision is the core's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .messages import (
    Accept,
    Accepted,
    ClientReply,
    ClientRequest,
    DecidedEntry,
    Envelope,
    Fenced,
    Heartbeat,
    HeartbeatAck,
    Nack,
    PeerMessage,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    RecoverPrepare,
)
from .node import Node
from .records import DecideRec, Record, SnapshotRec
from .types import Ballot

#: Records no outgoing message depends on (see the module docstring).
LAZY_RECORDS = (DecideRec, SnapshotRec)

#: The seed's transport, shared by the runtime and the simulator's model of it:
#: prepares and heartbeats by datagram; a Promise opens the acceptor's TCP
#: promise session to the proposer for that ballot, which then carries its
#: votes (TO_PROPOSER) and the proposer's Accepts (TO_ACCEPTOR); a higher
#: promise closes it, and a broken session means "back to preparing"
#: (Node.session_lost). Catch-up rides a plain peer link.
UDP = "udp"
TO_PROPOSER = "session-to-proposer"
TO_ACCEPTOR = "session-to-acceptor"
LINK = "link"
UDP_TYPES = (Prepare, RecoverPrepare, Nack, Heartbeat, HeartbeatAck, PreVote, PreVoteReply)
SESSION_TO_PROPOSER = (Promise, Accepted, Fenced)
SESSION_TO_ACCEPTOR = (Accept,)


def channel(msg: PeerMessage) -> str:
    if isinstance(msg, UDP_TYPES):
        return UDP
    if isinstance(msg, SESSION_TO_PROPOSER):
        return TO_PROPOSER
    if isinstance(msg, SESSION_TO_ACCEPTOR):
        return TO_ACCEPTOR
    return LINK


@dataclass(slots=True)
class Flush:
    """What one flusher cycle must do, in this order: make ``records`` durable
    (one fsync), then send ``messages`` and ``replies``."""

    records: list[Record] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    replies: list[ClientReply] = field(default_factory=list)
    committed: list[DecidedEntry] = field(default_factory=list)
    #: Commands still wait: the caller runs another cycle after this one.
    more: bool = False
    #: Learner records wait in the driver: call ``flush_deferred`` within a tick.
    arm_deferred: bool = False
    #: True when this cycle made the node leader, False when it lost the lead.
    leadership: bool | None = None

    def empty(self) -> bool:
        return not (self.records or self.messages or self.replies or self.committed)


class Driver:
    __slots__ = ("deferred", "force", "node", "ticks", "timer_armed", "was_leader")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.deferred: list[Record] = []
        self.force = False
        self.timer_armed = False
        self.was_leader = node.is_leader
        self.ticks = 0

    # ------------------------------------------------------------ inputs

    def step(self, src: int, msg: PeerMessage, *, revalidate: bool = True) -> None:
        self.node.step(src, msg, revalidate=revalidate)

    def client(self, req: ClientRequest, *, revalidate: bool = True) -> None:
        self.node.client_request(req, revalidate=revalidate)

    def session_lost(self, acceptor: int, ballot: Ballot) -> None:
        self.node.session_lost(acceptor, ballot)

    def compact(self) -> bool:
        return self.node.compact()

    def tick(self, has_session: Callable[[int, Ballot], bool] | None = None) -> int:
        """One tick of logical time. With ``has_session`` (a runtime whose
        Accepts ride promise sessions), a leader re-invites the acceptors
        without one every ``retransmit_ticks``. Returns the invites sent."""
        self.ticks += 1
        invites = 0
        if has_session is not None and self.ticks % self.node.cfg.retransmit_ticks == 0:
            invites = self.node.reinvite(has_session)
        self.node.tick()
        return invites

    # ------------------------------------------------------------ the Ready loop

    def cycle(self) -> Flush:
        node = self.node
        more = node.propose()  # commands queued since the last fsync, batched
        rd = node.ready()
        records = rd.records
        out = Flush(messages=rd.messages, replies=rd.replies, committed=rd.committed, more=more)
        force, self.force = self.force, False
        if force and not records:
            records, self.deferred = self.deferred, []
        elif records and all(type(r) in LAZY_RECORDS for r in records):
            self.deferred.extend(records)
            records = []
            if not self.timer_armed:
                self.timer_armed = True
                out.arm_deferred = True
        elif records and self.deferred:  # never delay a Ready that needs no fsync
            records = self.deferred + records
            self.deferred = []
        out.records = records
        if node.is_leader != self.was_leader:
            self.was_leader = node.is_leader
            out.leadership = self.was_leader
        return out

    def fsynced(self, records: list[Record]) -> None:
        """The caller's fsync of ``records`` (a cycle's) returned."""
        self.node.persisted(records)

    def flush_deferred(self) -> bool:
        """The deferred-records timer fired. Returns whether a cycle is needed."""
        self.timer_armed = False
        if self.deferred:
            self.force = True
            return True
        return False


__all__ = ["LAZY_RECORDS", "Driver", "Flush", "channel"]
