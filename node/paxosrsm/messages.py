"""Protocol messages.

Every message is a frozen, slotted dataclass that validates itself on
construction. Checks that need the cluster's configuration (is this acceptor
id inside 0..N-1? is this batch within max_batch?) are done by the node when
the message arrives; see ``Node.step``.

Message flow (Paxos Made Simple, section 2.2 and 3; docs/design.md):

    client --ClientRequest--> proposer
    proposer --Prepare(b, k)--> acceptors        phase 1a, once per ballot, slots >= k
    acceptor --Promise(b, accepted >= k)--> proposer   (or Nack when enabled)
    proposer --Accept(b, s, v, commit)--> acceptors    phase 2a, pipelined
    acceptor --Accepted(b, s)--> distinguished learner (= node b.node)
    learner: records the decision, applies it, replies to the client, and
             passes `commit` on to the other learners on Accept/Heartbeat
    leader --Heartbeat(b, commit, probe)--> all; acceptors --HeartbeatAck-->
             (liveness for election, and the quorum check for read-index reads)
    learner --CatchupRequest--> peer --CatchupReply(entries | snapshot)-->
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .types import MAX_PAYLOAD_BYTES, Ballot, Kind, ProtocolError, Value, _check_int, check_value

#: Hard cap on what one message may carry, whatever the configuration says.
MAX_ENTRIES = 100_000
MAX_BATCH_HARD = 10_000
MAX_SLOT = (1 << 63) - 1


def _check_ballot(name: str, b: object) -> None:
    if not isinstance(b, Ballot):
        raise ProtocolError(f"{name} must be a Ballot, got {type(b).__name__}")


def _check_slot(name: str, s: object) -> None:
    _check_int(name, s, 0, MAX_SLOT)


def _check_acceptor(a: object) -> None:
    _check_int("acceptor", a, 0, 1023)


@dataclass(frozen=True, slots=True)
class AcceptedEntry:
    """What an acceptor reports per slot in a Promise: its highest accepted vote."""

    slot: int
    ballot: Ballot
    value: Value

    def __post_init__(self) -> None:
        _check_slot("slot", self.slot)
        _check_ballot("ballot", self.ballot)
        check_value(self.value, MAX_BATCH_HARD)


@dataclass(frozen=True, slots=True)
class DecidedEntry:
    slot: int
    value: Value

    def __post_init__(self) -> None:
        _check_slot("slot", self.slot)
        check_value(self.value, MAX_BATCH_HARD)


@dataclass(frozen=True, slots=True)
class Session:
    """A client's exactly-once record: its last applied seq and that answer."""

    client_id: int
    seq: int
    result: bytes

    def __post_init__(self) -> None:
        _check_int("session.client_id", self.client_id, 0, (1 << 63) - 1)
        _check_int("session.seq", self.seq, 1, (1 << 63) - 1)
        if not isinstance(self.result, bytes):
            raise ProtocolError("session.result must be bytes")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A replica's state after applying every slot <= ``slot``."""

    slot: int
    state: bytes
    sessions: tuple[Session, ...]

    def __post_init__(self) -> None:
        _check_slot("snapshot.slot", self.slot)
        if not isinstance(self.state, bytes):
            raise ProtocolError("snapshot.state must be bytes")
        if not isinstance(self.sessions, tuple) or not all(
            isinstance(s, Session) for s in self.sessions
        ):
            raise ProtocolError("snapshot.sessions must be a tuple of Session")


# ---------------------------------------------------------------- peer messages


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1a for every slot >= from_slot (Multi-Paxos: once per ballot).

    ``nonce`` names the election that asks (one per candidacy, echoed by the
    Promise): the pages of a long report (``Promise.upto``) are asked for by
    Prepares of the same ballot and nonce from later slots, and only answers
    that carry this election's nonce may be such pages (issue 12)."""

    ballot: Ballot
    from_slot: int
    nonce: int = 0

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_slot("from_slot", self.from_slot)
        _check_int("nonce", self.nonce, 0, (1 << 63) - 1)


def _check_inc(name: str, inc: object) -> None:
    _check_int(name, inc, 1, (1 << 63) - 1)


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b. ``floor``: the acceptor forgot (trimmed) votes below this slot,
    because those slots were decided and snapshotted. ``inc``: the incarnation
    of the acceptor's disk that made this promise (see RecoverPrepare)."""

    ballot: Ballot
    acceptor: int
    floor: int
    entries: tuple[AcceptedEntry, ...]
    inc: int
    #: The acceptor's known incarnations of its peers (answers to RecoverPrepare
    #: carry them, so that a recovered acceptor inherits every fence).
    peer_incs: tuple[tuple[int, int], ...] = ()
    #: The request this Promise answers (issue 11, S2/S3): a
    #: ``Prepare(ballot, from_slot)`` gives ``from_slot`` and ``recover_inc``
    #: 0; a ``RecoverPrepare(ballot, acceptor, inc)`` gives ``recover_inc``
    #: = inc (and from_slot 0: it covers every slot). A ballot alone does not
    #: name the request: after a lost disk, the same ballot can be prepared
    #: again, and a late answer to the lost disk's request must not count.
    from_slot: int = 0
    recover_inc: int = 0
    #: The Prepare's nonce (0 for a recovery's answer).
    nonce: int = 0
    #: -1: every vote >= from_slot is here. Otherwise this page holds every
    #: vote in [from_slot, upto] and there may be more above: the candidate
    #: asks again from upto + 1 (issue 12: a report larger than a frame was
    #: dropped, and that acceptor's promise lost).
    upto: int = -1

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_acceptor(self.acceptor)
        _check_slot("floor", self.floor)
        _check_inc("inc", self.inc)
        _check_slot("from_slot", self.from_slot)
        _check_int("recover_inc", self.recover_inc, 0, (1 << 63) - 1)
        _check_int("nonce", self.nonce, 0, (1 << 63) - 1)
        _check_int("upto", self.upto, -1, (1 << 63) - 1)
        if self.upto != -1 and self.upto < self.from_slot:
            raise ProtocolError("a promise page ends before it starts")
        if not isinstance(self.peer_incs, tuple) or len(self.peer_incs) > 1024:
            raise ProtocolError("peer_incs must be a tuple of (acceptor, incarnation)")
        for pair in self.peer_incs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ProtocolError("peer_incs must hold (acceptor, incarnation) pairs")
            _check_acceptor(pair[0])
            _check_inc("incarnation", pair[1])
        if not isinstance(self.entries, tuple) or len(self.entries) > MAX_ENTRIES:
            raise ProtocolError("promise entries must be a tuple within MAX_ENTRIES")
        for e in self.entries:
            if not isinstance(e, AcceptedEntry):
                raise ProtocolError("promise entries must be AcceptedEntry")


@dataclass(frozen=True, slots=True)
class Nack:
    """An explicit refusal of ``ballot`` because the acceptor promised ``promised``."""

    ballot: Ballot
    promised: Ballot
    acceptor: int

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_ballot("promised", self.promised)
        _check_acceptor(self.acceptor)
        if not self.promised > self.ballot:
            raise ProtocolError("a nack must name a higher promised ballot")


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a. ``commit`` piggybacks the leader's decided prefix to learners.
    ``incs`` names the (acceptor, incarnation) pairs whose promises made up the
    phase-1 quorum: an acceptor that knows one of them is stale refuses."""

    ballot: Ballot
    slot: int
    value: Value
    commit: int
    incs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_slot("slot", self.slot)
        check_value(self.value, MAX_BATCH_HARD)
        _check_int("commit", self.commit, -1, MAX_SLOT)
        if not isinstance(self.incs, tuple) or len(self.incs) > 1024:
            raise ProtocolError("incs must be a tuple of (acceptor, incarnation)")
        for pair in self.incs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ProtocolError("incs must hold (acceptor, incarnation) pairs")
            _check_acceptor(pair[0])
            _check_inc("incarnation", pair[1])


@dataclass(frozen=True, slots=True)
class RecoverPrepare:
    """An acceptor that lost its disk fences older ballots before it votes again.

    It is a phase 1a for every slot at a fresh ballot ``ballot`` (whose node is
    the recovering acceptor), and it announces the acceptor's new incarnation
    ``inc`` so that promises made by the lost disk can no longer be used.
    """

    ballot: Ballot
    acceptor: int
    inc: int
    #: 0: the recovery's phase 1. Above 0: the next page of a report already
    #: promised to this recovery (Promise.upto; issue 12), asked from here.
    from_slot: int = 0

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_acceptor(self.acceptor)
        _check_inc("inc", self.inc)
        _check_slot("from_slot", self.from_slot)
        if self.ballot.node != self.acceptor:
            raise ProtocolError("a recovery ballot belongs to the recovering acceptor")
        if self.inc != self.ballot.round + 1:
            raise ProtocolError("a recovery's incarnation is its ballot's round + 1")


@dataclass(frozen=True, slots=True)
class PreVote:
    """Would you promise ``ballot``? Asked before a real phase 1 (Raft's
    pre-vote, Ongaro's thesis section 9.6); it changes nobody's state. An
    acceptor grants it only if it has not heard a live leader for an election
    timeout, so a node that cannot win - cut off, or on the far side of a
    bridge or ring partition - disturbs nobody. ``recovery``: asked by an
    acceptor that lost its disk, to learn whether a quorum of its peers is
    reachable (and their promises) before its RecoverPrepare raises them."""

    ballot: Ballot
    recovery: bool = False

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        if not isinstance(self.recovery, bool):
            raise ProtocolError("recovery must be a bool")


@dataclass(frozen=True, slots=True)
class PreVoteReply:
    """The answer to ``PreVote(ballot)``: ``granted``, and the acceptor's promise."""

    ballot: Ballot
    acceptor: int
    granted: bool
    promised: Ballot

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_acceptor(self.acceptor)
        _check_ballot("promised", self.promised)
        if not isinstance(self.granted, bool):
            raise ProtocolError("granted must be a bool")


@dataclass(frozen=True, slots=True)
class Fenced:
    """An Accept refused because its phase-1 quorum used a stale incarnation."""

    ballot: Ballot
    acceptor: int
    stale: int

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_acceptor(self.acceptor)
        _check_acceptor(self.stale)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Phase 2b, sent only to the distinguished learner (the node ``ballot.node``)."""

    ballot: Ballot
    slot: int
    acceptor: int

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_slot("slot", self.slot)
        _check_acceptor(self.acceptor)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness, the decided prefix, and a read-index probe number.

    ``durable``: the slot through which the leader's snapshot is on its disk
    (-1: none). Acceptor-only nodes trim their votes on it, never on
    ``commit``: a decided slot must stay somewhere durable (issue 11)."""

    ballot: Ballot
    commit: int
    probe: int
    durable: int = -1

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_int("commit", self.commit, -1, MAX_SLOT)
        _check_int("probe", self.probe, 0)
        _check_int("durable", self.durable, -1, MAX_SLOT)
        if self.durable > self.commit:
            raise ProtocolError("a durable snapshot past the decided prefix")


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """An acceptor's answer: ``promised == ballot`` confirms the leader still leads."""

    ballot: Ballot
    probe: int
    acceptor: int
    promised: Ballot

    def __post_init__(self) -> None:
        _check_ballot("ballot", self.ballot)
        _check_int("probe", self.probe, 0)
        _check_acceptor(self.acceptor)
        _check_ballot("promised", self.promised)


@dataclass(frozen=True, slots=True)
class CatchupRequest:
    """A learner asks for decided slots from ``from_slot`` on."""

    from_slot: int

    def __post_init__(self) -> None:
        _check_slot("from_slot", self.from_slot)


@dataclass(frozen=True, slots=True)
class CatchupReply:
    """Decided slots, preceded by a snapshot when the asked-for slots were trimmed."""

    snapshot: Snapshot | None
    entries: tuple[DecidedEntry, ...]
    commit: int

    def __post_init__(self) -> None:
        if self.snapshot is not None and not isinstance(self.snapshot, Snapshot):
            raise ProtocolError("catch-up snapshot must be a Snapshot")
        if not isinstance(self.entries, tuple) or len(self.entries) > MAX_ENTRIES:
            raise ProtocolError("catch-up entries must be a tuple within MAX_ENTRIES")
        for e in self.entries:
            if not isinstance(e, DecidedEntry):
                raise ProtocolError("catch-up entries must be DecidedEntry")
        _check_int("commit", self.commit, -1, MAX_SLOT)


# -------------------------------------------------------------- client messages


class Status(IntEnum):
    OK = 0
    NOT_LEADER = 1  # try leader_hint (or another node); the request was not applied here
    STALE_SESSION = 2  # seq older than the client's last applied request: a bug in the client
    BUSY = 3  # queue full; back off and retry with the same seq
    #: Set by a networked runtime, not the core: the answer does not fit in a
    #: datagram; ask again (same seq: a write is not applied twice) over TCP.
    TOO_LARGE = 4


@dataclass(frozen=True, slots=True)
class ClientRequest:
    client_id: int
    seq: int
    kind: Kind
    payload: bytes

    def __post_init__(self) -> None:
        _check_int("client_id", self.client_id, 0, (1 << 63) - 1)
        _check_int("seq", self.seq, 1, (1 << 63) - 1)
        if not isinstance(self.kind, Kind):
            raise ProtocolError(f"unknown request kind {self.kind!r}")
        if not isinstance(self.payload, bytes) or len(self.payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError("payload must be bytes within MAX_PAYLOAD_BYTES")


@dataclass(frozen=True, slots=True)
class ClientReply:
    client_id: int
    seq: int
    status: Status
    result: bytes
    leader_hint: int | None

    def __post_init__(self) -> None:
        _check_int("client_id", self.client_id, 0, (1 << 63) - 1)
        _check_int("seq", self.seq, 1, (1 << 63) - 1)
        if not isinstance(self.status, Status):
            raise ProtocolError(f"unknown status {self.status!r}")
        if not isinstance(self.result, bytes):
            raise ProtocolError("result must be bytes")
        if self.leader_hint is not None:
            _check_int("leader_hint", self.leader_hint, 0, 1023)


PeerMessage = (
    Prepare
    | RecoverPrepare
    | Fenced
    | Promise
    | Nack
    | Accept
    | Accepted
    | Heartbeat
    | HeartbeatAck
    | CatchupRequest
    | CatchupReply
    | PreVote
    | PreVoteReply
)
PEER_MESSAGE_TYPES: tuple[type, ...] = (
    Prepare,
    RecoverPrepare,
    Fenced,
    Promise,
    Nack,
    Accept,
    Accepted,
    Heartbeat,
    HeartbeatAck,
    CatchupRequest,
    CatchupReply,
    PreVote,
    PreVoteReply,
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A peer message addressed to a node (``dst`` may be the sender itself)."""

    src: int
    dst: int
    msg: PeerMessage
