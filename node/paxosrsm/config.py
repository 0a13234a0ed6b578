"""Cluster and node configuration, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Flag, auto

from .types import MAX_NODE_ID, ProtocolError


class Role(Flag):
    PROPOSER = auto()
    ACCEPTOR = auto()
    LEARNER = auto()
    ALL = PROPOSER | ACCEPTOR | LEARNER


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What every node of one cluster must agree on.

    Acceptors are nodes ``0..n_acceptors-1`` (the StatefulSet ordinals); their
    number is fixed for the life of the cluster. Other nodes (ids >= n_acceptors)
    may be proposers and/or learners. A proposer node is always a learner too,
    because the distinguished learner of a ballot is the proposer's own node.
    """

    n_acceptors: int = 3
    #: Extra roles per node id. Acceptor nodes default to PROPOSER|ACCEPTOR|LEARNER.
    roles: dict[int, Role] = field(default_factory=dict)
    #: Answer losing prepares/accepts with an explicit Nack (the seed's "denial").
    nack: bool = True
    #: Phase-2 pipeline: at most this many undecided slots in flight.
    window: int = 32
    #: At most this many client commands per slot.
    max_batch: int = 64
    #: ... and at most this many bytes of command payloads per slot (one
    #: command always goes, however large): an Accept must fit in a frame
    #: (issue 12: 70 writes of 1 MiB made a 73 MB Accept that every acceptor
    #: refused, proposed again forever).
    max_batch_bytes: int = 8 << 20
    #: Pending client writes a leader queues before answering BUSY.
    max_queue: int = 10_000
    #: Take a snapshot and trim the log every this many applied slots.
    snapshot_interval: int = 1_000
    #: Decided slots kept below the snapshot, to serve lagging peers without a snapshot.
    log_retain: int = 200
    #: Ticks between leader heartbeats.
    heartbeat_ticks: int = 2
    #: Base election timeout in ticks; the real one is randomised in [T, 2T) and
    #: multiplied by an exponential backoff after a failed candidacy.
    election_ticks: int = 10
    max_backoff: int = 8
    #: Ticks before an unacknowledged Accept or Prepare is sent again.
    retransmit_ticks: int = 4
    #: Ticks before an unacknowledged Accept is sent again; 0 means
    #: retransmit_ticks. A runtime whose Accepts ride a reliable session (TCP)
    #: sets it high: there a resend only duplicates work.
    accept_retransmit_ticks: int = 0
    #: Propose after every input (True), or only when the runtime calls
    #: Node.propose() - a runtime that fsyncs in batches calls it right before
    #: taking each Ready, so that everything that arrived during the last fsync
    #: goes into as few slots as possible (batching by group commit).
    eager_propose: bool = True
    #: At most this many new slots per Node.propose() call (0: no limit, up to
    #: the window). Smaller waves let the leader, the acceptors and the disk
    #: work on different batches at the same time (a pipeline) instead of
    #: passing one huge batch from stage to stage.
    propose_slots_per_call: int = 0
    #: Ask a pre-vote before every election and recovery round (PreVote): a
    #: node that cannot win raises nobody's promise. Off only to show what
    #: it prevents.
    prevote: bool = True
    #: Most decided entries in one catch-up reply.
    catchup_batch: int = 512
    #: Most command bytes in one catch-up reply (at least one entry goes):
    #: keeps a reply well inside the runtime's frame limit (64 MiB).
    catchup_bytes: int = 16 << 20
    #: Most vote bytes in one Promise (at least one vote goes): a longer
    #: report is paged (Promise.upto), within the runtime's frame limit.
    promise_bytes: int = 16 << 20
    #: A new leader this far behind the highest reported vote catches up first.
    max_reproposals: int = 1 << 16
    # Derived once in __post_init__ (read on every message).
    _node_ids: tuple[int, ...] = field(init=False, repr=False, compare=False, default=())
    _node_set: frozenset[int] = field(init=False, repr=False, compare=False, default=frozenset())
    _learner_ids: tuple[int, ...] = field(init=False, repr=False, compare=False, default=())
    _proposer_ids: tuple[int, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        n = self.n_acceptors
        if not isinstance(n, int) or n < 1 or n > MAX_NODE_ID + 1:
            raise ProtocolError(f"n_acceptors must be in 1..{MAX_NODE_ID + 1}, got {n!r}")
        if n % 2 == 0:
            # 2f+1 acceptors tolerate f failures; an even count buys nothing and
            # invites the mistake of thinking half is a quorum.
            raise ProtocolError(f"n_acceptors must be odd (2f+1), got {n}")
        for nid, role in self.roles.items():
            if not isinstance(nid, int) or not 0 <= nid <= MAX_NODE_ID:
                raise ProtocolError(f"node id {nid!r} out of range")
            if Role.ACCEPTOR in role and nid >= n:
                raise ProtocolError(f"node {nid} cannot be an acceptor: acceptors are 0..{n - 1}")
            if nid < n and Role.ACCEPTOR not in role:
                raise ProtocolError(f"node {nid} < n_acceptors must have the ACCEPTOR role")
            if Role.PROPOSER in role and Role.LEARNER not in role:
                raise ProtocolError(f"node {nid}: a proposer must also be a learner")
        for name in (
            "window",
            "max_batch",
            "max_batch_bytes",
            "max_queue",
            "snapshot_interval",
            "heartbeat_ticks",
            "election_ticks",
            "max_backoff",
            "retransmit_ticks",
            "catchup_batch",
            "catchup_bytes",
            "promise_bytes",
            "max_reproposals",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ProtocolError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.propose_slots_per_call, int) or self.propose_slots_per_call < 0:
            raise ProtocolError("propose_slots_per_call must be an int >= 0")
        if not isinstance(self.accept_retransmit_ticks, int) or self.accept_retransmit_ticks < 0:
            raise ProtocolError("accept_retransmit_ticks must be an int >= 0")
        if self.log_retain < 0:
            raise ProtocolError("log_retain must be >= 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ProtocolError("election_ticks must exceed heartbeat_ticks")
        if self.snapshot_interval + self.window > 50_000:
            # An acceptor's votes above its floor (at most about one snapshot
            # interval plus the window) must fit in one Promise (MAX_ENTRIES).
            raise ProtocolError("snapshot_interval + window must be <= 50000")
        ids = set(range(n)) | set(self.roles)
        node_ids = tuple(sorted(i for i in ids if self.role_of(i)))
        object.__setattr__(self, "_node_ids", node_ids)
        object.__setattr__(self, "_node_set", frozenset(node_ids))
        object.__setattr__(
            self, "_learner_ids", tuple(i for i in node_ids if Role.LEARNER in self.role_of(i))
        )
        object.__setattr__(
            self, "_proposer_ids", tuple(i for i in node_ids if Role.PROPOSER in self.role_of(i))
        )

    @property
    def quorum(self) -> int:
        return self.n_acceptors // 2 + 1

    def role_of(self, node_id: int) -> Role:
        if node_id in self.roles:
            return self.roles[node_id]
        if node_id < self.n_acceptors:
            return Role.ALL
        return Role(0)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return self._node_ids

    def is_node(self, node_id: int) -> bool:
        return node_id in self._node_set

    @property
    def acceptor_ids(self) -> range:
        return range(self.n_acceptors)

    @property
    def learner_ids(self) -> tuple[int, ...]:
        return self._learner_ids

    @property
    def proposer_ids(self) -> tuple[int, ...]:
        return self._proposer_ids
