"""A node: any combination of proposer, acceptor and learner, as one sans-I/O object.

Drive it with ``step`` (a peer message), ``client_request`` and ``tick`` (one
unit of logical time); collect its output with ``ready()``. It does no I/O, owns
no clock and draws randomness only from the seed it is given, so the simulator
and the real runtime run exactly the same code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never, cast

from .acceptor import Acceptor
from .config import ClusterConfig, Role
from .messages import (
    PEER_MESSAGE_TYPES,
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    ClientReply,
    ClientRequest,
    DecidedEntry,
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
    Snapshot,
    Status,
)
from .outbox import Outbox, Ready, SafetyViolation
from .proposer import Proposer, PState
from .records import DurableState, IncarnationRec, Record, RecoveryRec, SnapshotRec
from .recovery import Recovery
from .replica import Replica
from .statemachine import KVStore, StateMachine
from .types import Ballot, Command, Kind, ProtocolError, Value, check_value


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A snapshot of what a node may tell the world about itself. Runtimes,
    the simulator and status pages read this, never the roles' internals."""

    id: int
    roles: tuple[str, ...]
    #: "leader", "candidate" or "follower"; None on a node with no proposer.
    proposer_state: str | None
    #: The proposer's ballot while it is a candidate or leads.
    ballot: Ballot | None
    leader_hint: int | None
    #: The acceptor's promise (None on a node with no acceptor).
    promised: Ballot | None
    applied: int
    #: Highest slot known decided (the learner's, or the leaders' advertised
    #: commit on a node with no learner).
    decided: int
    snapshot_slot: int | None
    recovering: bool
    incarnation: int
    #: Client commands waiting to be proposed.
    queued: int
    #: Slots proposed and not yet decided.
    in_flight: int

    @property
    def is_leader(self) -> bool:
        return self.proposer_state == "leader"


_NEEDS_ACCEPTOR = (Prepare, Accept, RecoverPrepare, PreVote)
# Promise and Nack also reach a recovering acceptor (answers to RecoverPrepare).
_NEEDS_PROPOSER = (Accepted, HeartbeatAck, Fenced)
_NEEDS_LEARNER = (CatchupRequest, CatchupReply)


class Node:
    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: int,
        durable: DurableState | None = None,
        *,
        seed: int = 0,
        sm_factory: Callable[[], StateMachine] = KVStore,
        initial_state: str = "new",
    ) -> None:
        """``initial_state`` matters only for an empty disk: "new" bootstraps a new
        cluster; "existing" joins one that already runs, so an acceptor must
        recover before it votes (as etcd's --initial-cluster-state)."""
        role = cfg.role_of(node_id)
        if not role:
            raise ProtocolError(f"node {node_id} has no role in this cluster")
        if initial_state not in ("new", "existing"):
            raise ProtocolError(f"initial_state must be 'new' or 'existing', not {initial_state!r}")
        self.cfg = cfg
        self.id = node_id
        self.role = role
        self.rng = random.Random(seed)
        self.out = Outbox(node_id)
        state = durable if durable is not None else DurableState()
        fresh_existing = state.inc == 0 and initial_state == "existing"
        if state.inc == 0:
            # An empty disk: mark it before anything else is written. A new
            # disk is incarnation 1; recovery gives it a higher one.
            state.inc = 1
            self.out.persist(IncarnationRec(state.inc))
            if initial_state == "existing" and Role.ACCEPTOR in role:
                if cfg.n_acceptors == 1:
                    raise ProtocolError(
                        "the only acceptor of a cluster lost its disk: nothing to recover from"
                    )
                state.recovering = True
                self.out.persist(RecoveryRec(True))
        self.inc = state.inc
        self.acceptor: Acceptor | None = None
        self.replica: Replica | None = None
        self.proposer: Proposer | None = None
        if Role.ACCEPTOR in role:
            self.acceptor = Acceptor(node_id, cfg, state, self.out)
        if Role.LEARNER in role:
            self.replica = Replica(
                node_id, cfg, state, sm_factory(), self.out, self._on_applied, self._on_decided
            )
        if Role.PROPOSER in role:
            assert self.replica is not None
            max_seen = max(state.promised, state.proposer_ballot)
            self.proposer = Proposer(node_id, cfg, self.replica, self.out, self.rng, max_seen)
            # An empty disk in a running cluster forgot which ballots it used:
            # its first ballot must come from a pre-vote, whose answers carry
            # a quorum's promises (so it goes above any ballot the lost disk
            # led with), even where pre-vote is off (docs/design.md 8a).
            self.proposer.must_prevote = fresh_existing
            self.replica.on_installed = self.proposer.on_snapshot_installed
        self.recovery: Recovery | None = None
        if self.acceptor is not None and self.acceptor.recovering:
            self.recovery = Recovery(node_id, cfg, self.out, state.promised)
        #: Highest decided prefix any leader has told us about.
        self.commit_seen = -1
        #: Highest slot a leader said its snapshot holds on its disk.
        self.durable_seen = -1
        #: When (in ticks) our acceptor last heard the leader it promised
        #: (an Accept or a Heartbeat at exactly its promise): pre-votes are
        #: refused for an election timeout after that.
        self.leader_tick: int | None = None
        self.leader_ballot: Ballot | None = None
        self.catchup_elapsed = 0
        self.ticks = 0
        #: Peer -> tick of the last snapshot sent for an Accept below our floor.
        self.snapshot_answered: dict[int, int] = {}
        #: The last node heard leading (Heartbeat or Accept), for nodes that
        #: have no proposer of their own to keep the hint.
        self.leader_heard: int | None = None
        #: Ticks since a leader was last heard (learner-only nodes pull after
        #: election_ticks of silence, see tick()).
        self.quiet_ticks = 0

    # ------------------------------------------------------------ inputs

    def step(self, src: int, msg: PeerMessage, *, revalidate: bool = True) -> None:
        """Handle one peer message. Raises ProtocolError (state unchanged) on bad input.

        ``revalidate=False`` skips re-running the message's construction checks
        (the checks against this cluster's configuration always run). Only for
        a runtime that passes objects the core itself built, as the simulator
        and LocalCluster do; a decoder builds messages through their
        validating constructors anyway.
        """
        self._validate(src, msg, revalidate)
        p, a, r = self.proposer, self.acceptor, self.replica
        rec = self.recovery
        if (
            rec is not None
            and isinstance(msg, Promise | Nack | PreVoteReply)
            and msg.ballot.node == self.id
        ):
            if isinstance(msg, PreVoteReply):
                rec.on_prevote_reply(msg)
            elif isinstance(msg, Nack):
                rec.on_nack(msg)
            elif msg.ballot == rec.ballot:
                quorum = rec.on_promise(msg)
                if quorum is not None:
                    self._finish_recovery(rec, quorum)
            self._after()
            return
        if isinstance(msg, Prepare):
            assert a is not None
            if p is not None:
                self._saw_ballot(msg.ballot, heard_leader=False)
            a.on_prepare(msg)
        elif isinstance(msg, RecoverPrepare):
            assert a is not None
            if p is not None:
                p.deposed_by_recovery(msg.ballot)
            a.on_recover_prepare(msg)
        elif isinstance(msg, PreVote):
            assert a is not None
            if not a.recovering:
                # A recovery's probe is always answered (it asks who is
                # reachable, and their promises); an election's is granted
                # only above our promise and with no live leader heard.
                granted = msg.recovery or (msg.ballot > a.promised and not self._leader_alive())
                self.out.send(src, PreVoteReply(msg.ballot, self.id, granted, a.promised))
        elif isinstance(msg, PreVoteReply):
            if p is not None:
                p.on_prevote_reply(msg)
        elif isinstance(msg, Accept):
            assert a is not None
            if msg.slot < a.floor and r is not None and msg.ballot.node != self.id:
                # The slot is decided and our vote trimmed: tell the proposer
                # what was decided instead of leaving it to retransmit forever.
                # Only that slot: a leader's backlog of Accepts (a partition
                # heals, a stalled connection drains) must not draw one full
                # catch-up batch each - that made 70-130 MB frames that tied
                # up both ends (Jepsen, ring partition). A snapshot goes at
                # most once per peer per retransmit period.
                self._answer_trimmed_accept(src, msg.slot)
            a.on_accept(msg)
            self._heard_leader(msg.ballot)
            self._saw_ballot(msg.ballot, heard_leader=True)
            self._learn_commit(msg.ballot, msg.commit)
        elif isinstance(msg, Heartbeat):
            if a is not None:
                a.on_heartbeat(msg)
            self._heard_leader(msg.ballot)
            self._saw_ballot(msg.ballot, heard_leader=True)
            self._learn_commit(msg.ballot, msg.commit)
            if msg.durable > self.durable_seen:
                self.durable_seen = msg.durable
        elif isinstance(msg, Promise):
            if p is not None:
                p.observe(msg.ballot)
                p.on_promise(msg)
        elif isinstance(msg, Nack):
            if p is not None:
                p.on_nack(msg)
        elif isinstance(msg, Fenced):
            assert p is not None
            p.on_fenced(msg)
        elif isinstance(msg, Accepted):
            assert p is not None
            p.on_accepted(msg)
        elif isinstance(msg, HeartbeatAck):
            assert p is not None
            p.on_heartbeat_ack(msg)
        elif isinstance(msg, CatchupRequest):
            assert r is not None
            reply = r.serve_catchup(msg.from_slot)
            if reply is not None:
                self.out.send(src, reply)
        elif isinstance(msg, CatchupReply):
            assert r is not None
            before = r.applied
            r.on_catchup_reply(msg)
            if r.known_commit > r.applied > before:
                # Still behind and this batch helped: ask for the next one now
                # (pipelined catch-up) rather than on the retransmit timer.
                self.catchup_elapsed = 0
                self.out.send(src, CatchupRequest(r.applied + 1))
        else:
            assert_never(msg)
        self._after()

    def client_request(self, req: ClientRequest, *, revalidate: bool = True) -> None:
        """A client's request. Bad input raises ProtocolError; state is unchanged.
        ``revalidate=False``: as for ``step``, only for objects built through
        the validating constructor (the wire codec does)."""
        if not isinstance(req, ClientRequest):
            raise ProtocolError(f"not a ClientRequest: {type(req).__name__}")
        if revalidate:
            req.__post_init__()
        if req.kind == Kind.STALE_READ:
            if self.replica is None:
                self._not_leader(req)
            else:
                self.out.reply(
                    ClientReply(
                        req.client_id, req.seq, Status.OK, self.replica.sm.query(req.payload), None
                    )
                )
            return
        if self.proposer is None:
            self._not_leader(req)
            return
        self.proposer.on_client(req)
        self._after()

    def session_lost(self, acceptor: int, ballot: Ballot) -> None:
        """The runtime's promise session with ``acceptor`` for ``ballot`` broke
        (the seed's TCP session: a broken one means "back to preparing")."""
        if not isinstance(ballot, Ballot) or type(acceptor) is not int:
            raise ProtocolError("session_lost needs an acceptor id and a Ballot")
        if self.proposer is not None and self.recovery is None:
            self.proposer.on_session_lost(acceptor, ballot)
            self._after()

    def tick(self) -> None:
        self.ticks += 1
        if self.recovery is not None:
            self.recovery.tick()
        elif self.proposer is not None:
            # A recovering node does not lead: its own acceptor cannot vote.
            self.proposer.tick()
        r = self.replica
        if r is not None:
            self.catchup_elapsed += 1
            if r.known_commit > r.applied and self.catchup_elapsed >= self.cfg.retransmit_ticks:
                self.catchup_elapsed = 0
                self._request_catchup()
            elif self.proposer is None:
                self.quiet_ticks += 1
                if self.quiet_ticks >= self.cfg.election_ticks:
                    # A learner-only node that hears no leader pulls: it asks a
                    # proposer (a distinguished learner, section "Learner
                    # groups" of the design) for what follows its log. A new
                    # or restarted learner thereby introduces itself, so that
                    # its peers learn where it is and the leader's heartbeats
                    # reach it (docs/design.md, "Learners come and go").
                    self.quiet_ticks = 0
                    self.leader_heard = None
                    self._pull()
        self._after()

    def propose(self) -> bool:
        """Start slots for queued commands (and serve reads) now. Needed only
        with ``eager_propose=False``; harmless otherwise. Returns whether
        commands still wait (a later call can start more slots)."""
        p = self.proposer
        if p is None:
            return False
        p.flush()
        return bool(p.queue) and p.state == PState.LEADER and len(p.proposals) < self.cfg.window

    def ready(self) -> Ready:
        return self.out.take()

    def persisted(self, records: list[Record]) -> None:
        """The runtime made ``records`` durable (their fsync returned). The
        core learns which of its snapshots are on disk: a leader advertises
        that, and acceptor-only nodes trim their votes on it, never on a
        decision that may still sit only in some learner's memory."""
        r = self.replica
        if r is None:
            return
        for rec in records:
            if isinstance(rec, SnapshotRec) and rec.snapshot.slot > r.durable_snapshot:
                r.durable_snapshot = rec.snapshot.slot

    # ------------------------------------------------------------ queries

    @property
    def is_leader(self) -> bool:
        return self.proposer is not None and self.proposer.state == PState.LEADER

    @property
    def leader_hint(self) -> int | None:
        if self.proposer is not None:
            return self.proposer.leader_hint
        return self.leader_heard

    @property
    def applied(self) -> int:
        return self.replica.applied if self.replica is not None else -1

    @property
    def queued(self) -> int:
        """Client commands waiting to be proposed (cheap: for load shedding)."""
        return len(self.proposer.queue) if self.proposer is not None else 0

    def status(self) -> NodeStatus:
        p, a, r = self.proposer, self.acceptor, self.replica
        roles = tuple(n for n, f in (("proposer", p), ("acceptor", a), ("learner", r)) if f)
        pstate = None
        if p is not None:
            pstate = "follower" if self.recovery is not None else p.state.name.lower()
        return NodeStatus(
            id=self.id,
            roles=roles,
            proposer_state=pstate,
            ballot=p.ballot if p is not None else None,
            leader_hint=self.leader_hint,
            promised=a.promised if a is not None else None,
            applied=self.applied,
            decided=r.known_commit if r is not None else self.commit_seen,
            snapshot_slot=r.snapshot.slot if r is not None and r.snapshot else None,
            recovering=self.recovering,
            incarnation=self.inc,
            queued=self.queued,
            in_flight=len(p.proposals) if p is not None else 0,
        )

    def read_local(self, query: bytes) -> bytes | None:
        """Answer a read from this replica's state machine as it stands (a
        stale read: no round with the leader). None on a node with no learner."""
        if self.replica is None:
            return None
        return self.replica.sm.query(query)

    def state_digest(self) -> tuple[int, bytes] | None:
        """(applied slot, state machine snapshot): for convergence checks."""
        if self.replica is None:
            return None
        return self.replica.applied, self.replica.sm.snapshot()

    def export_snapshot(self) -> Snapshot | None:
        """The applied state as a snapshot, for a backup: every slot <= its
        ``slot`` applied, nothing after. Taken without persisting or trimming
        anything (the node's own snapshots and log are untouched). None on a
        node with no learner or before the first applied slot. The caller
        decides how recent it must be (``applied`` against a read index)."""
        r = self.replica
        if r is None or r.applied < 0:
            return None
        return Snapshot(
            r.applied, r.sm.snapshot(), tuple(r.sessions[c] for c in sorted(r.sessions))
        )

    # ------------------------------------------------------------ intents

    def compact(self) -> bool:
        """Take a snapshot of the applied state now rather than at the next
        ``snapshot_interval``, and trim the log and the votes below it (the
        runtime asks when its storage is over quota: deletes free space only
        once a snapshot no longer holds them). The same step as the periodic
        snapshot, taken early, keeping no decided slots below it (a peer
        that far behind gets the snapshot). False when there is nothing new
        to snapshot."""
        r = self.replica
        if r is None or r.applied < 0:
            return False
        if r.snapshot is not None and r.snapshot.slot >= r.applied:
            return False
        r.take_snapshot(retain=0)
        self._after()
        return True

    def reinvite(self, has_session: Callable[[int, Ballot], bool]) -> int:
        """A leader sends its Prepare again (same ballot) to every acceptor
        that holds no promise session with it (``has_session(acceptor,
        ballot)`` says which do) - one that restarted, or missed the first
        Prepare - so that it promises, opens a session and votes again
        without waiting for the next election. This is the leader's own phase
        1a again, which an acceptor may always receive twice; the leader
        ignores the Promise it brings back (Proposer.on_promise). Returns how
        many Prepares went into the outbox."""
        p = self.proposer
        if p is None or self.recovery is not None or p.state != PState.LEADER:
            return 0
        b = p.ballot
        assert b is not None
        msg = Prepare(b, p.prepare_from)
        n = 0
        for a in self.cfg.acceptor_ids:
            if a != self.id and not has_session(a, b):
                self.out.send(a, msg)
                n += 1
        return n

    def check_invariants(self, *, full: bool = False) -> None:
        """State invariants that must hold between any two inputs; raises
        SafetyViolation. The simulator asserts them after every step (issue 11).

        - acceptor (``full``, it costs a pass over the votes): every vote is at
          or below its promise, and at or above its floor;
        - replica: every slot up to ``applied`` is applied, so the next slot is
          never sitting decided in the log;
        - proposer: a leader has a ballot, and no slot in flight at or below
          its learner's applied prefix (S1: it would advertise a commit over a
          slot it never decided at its own ballot); its commit point is below
          every slot in flight.
        """
        a = self.acceptor
        if a is not None and full:
            for slot, (b, _) in a.accepted.items():
                if b > a.promised:
                    raise SafetyViolation(f"node {self.id}: vote at {b} above promise {a.promised}")
                if slot < a.floor:
                    raise SafetyViolation(f"node {self.id}: vote for slot {slot} below floor")
        r = self.replica
        if r is not None and r.applied + 1 in r.log:
            raise SafetyViolation(f"node {self.id}: slot {r.applied + 1} decided but not applied")
        p = self.proposer
        if p is not None and p.state == PState.LEADER:
            if p.ballot is None:
                raise SafetyViolation(f"node {self.id}: a leader without a ballot")
            if p.proposals and r is not None and min(p.proposals) <= r.applied:
                raise SafetyViolation(
                    f"node {self.id}: leads at {p.ballot} with slot {min(p.proposals)} in flight "
                    f"at or below its applied prefix {r.applied}"
                )
            if p.proposals and p.commit_point() >= min(p.proposals):
                raise SafetyViolation(f"node {self.id}: commit point over a slot in flight")

    def debug_state(self) -> tuple[object, ...]:
        return (
            self.acceptor.debug_state() if self.acceptor else None,
            self.replica.debug_state() if self.replica else None,
            self.proposer.debug_state() if self.proposer else None,
        )

    # ------------------------------------------------------------ internals

    def _validate(self, src: int, msg: object, revalidate: bool = True) -> None:
        # Everything is checked before anything changes: bad input is refused
        # whole and leaves the node as it was.
        if not isinstance(msg, PEER_MESSAGE_TYPES):
            raise ProtocolError(f"unknown message type {type(msg).__name__}")
        if not isinstance(src, int) or isinstance(src, bool) or not self.cfg.is_node(src):
            raise ProtocolError(f"message from unknown node {src!r}")
        if revalidate:
            cast(PeerMessage, msg).__post_init__()  # re-run checks: objects may bypass __init__
        role = self.role
        if isinstance(msg, _NEEDS_ACCEPTOR) and Role.ACCEPTOR not in role:
            raise ProtocolError(f"{type(msg).__name__} sent to node {self.id}, not an acceptor")
        if isinstance(msg, _NEEDS_PROPOSER) and Role.PROPOSER not in role:
            raise ProtocolError(f"{type(msg).__name__} sent to node {self.id}, not a proposer")
        if isinstance(msg, _NEEDS_LEARNER) and Role.LEARNER not in role:
            raise ProtocolError(f"{type(msg).__name__} sent to node {self.id}, not a learner")
        if isinstance(msg, Prepare | Accept | Heartbeat | RecoverPrepare):
            if msg.ballot.node != src:
                raise ProtocolError(f"ballot {msg.ballot} is not node {src}'s")
            if isinstance(msg, RecoverPrepare):
                if msg.acceptor != src or src >= self.cfg.n_acceptors:
                    raise ProtocolError(f"node {src} cannot recover acceptor {msg.acceptor}")
            elif Role.PROPOSER not in self.cfg.role_of(src):
                raise ProtocolError(f"node {src} is not a proposer")
        if isinstance(msg, PreVote):
            if msg.ballot.node != src:
                raise ProtocolError(f"ballot {msg.ballot} is not node {src}'s")
            if msg.recovery and src >= self.cfg.n_acceptors:
                raise ProtocolError(f"node {src} is not an acceptor: it cannot recover")
            if not msg.recovery and Role.PROPOSER not in self.cfg.role_of(src):
                raise ProtocolError(f"node {src} is not a proposer")
        if isinstance(msg, Promise | Nack | PreVoteReply):
            if msg.ballot.node != self.id:
                raise ProtocolError(f"{type(msg).__name__} for ballot {msg.ballot}, not ours")
            if Role.PROPOSER not in role and Role.ACCEPTOR not in role:
                raise ProtocolError(f"{type(msg).__name__} sent to node {self.id}, not a proposer")
        if isinstance(msg, Promise | Nack | Accepted | HeartbeatAck | Fenced | PreVoteReply):
            if msg.acceptor >= self.cfg.n_acceptors:
                raise ProtocolError(
                    f"acceptor id {msg.acceptor} out of range 0..{self.cfg.n_acceptors - 1}"
                )
            if msg.acceptor != src:
                raise ProtocolError(f"acceptor id {msg.acceptor} sent by node {src}")
        mb = self.cfg.max_batch
        if isinstance(msg, Accept):
            check_value(msg.value, mb)
            for aid, _inc in msg.incs:
                if aid >= self.cfg.n_acceptors:
                    raise ProtocolError(f"incarnation for unknown acceptor {aid}")
        elif isinstance(msg, Promise):
            for e in msg.entries:
                check_value(e.value, mb)
            for aid, _inc in msg.peer_incs:
                if aid >= self.cfg.n_acceptors:
                    raise ProtocolError(f"incarnation for unknown acceptor {aid}")
        elif isinstance(msg, CatchupReply):
            for d in msg.entries:
                check_value(d.value, mb)

    @property
    def recovering(self) -> bool:
        return self.recovery is not None

    def _finish_recovery(self, rec: Recovery, quorum: list[Promise]) -> None:
        """A quorum of the others promised the recovery ballot. The acceptor
        adopts their floor: the slots below it were decided and some peer
        trimmed them after its snapshot. If our learner does not hold them
        yet, the acceptor waits, still not voting, until it does (the adopted
        records then ride the same fsync as the learner's, behind them).
        Otherwise a second disk loss - the peer whose snapshot held them -
        would leave those slots on no disk while two acceptors claim them
        trimmed (simulator seed 347: slot 144 lost after two wipes)."""
        r = self.replica
        floor = max(p.floor for p in quorum)
        if r is not None and floor - 1 > r.applied:
            rec.waiting = (floor - 1, quorum)
            if floor - 1 > r.known_commit:
                r.known_commit = floor - 1
            self.catchup_elapsed = self.cfg.retransmit_ticks  # ask at the next tick
            return
        self._adopt(rec, quorum)

    def _adopt(self, rec: Recovery, quorum: list[Promise]) -> None:
        assert self.acceptor is not None and rec.ballot is not None
        self.acceptor.adopt(rec.ballot, quorum)
        self.inc = self.acceptor.inc
        self.recovery = None
        if self.proposer is not None:
            self.proposer.observe(rec.max_seen)
        r = self.replica
        if r is not None and self.acceptor.floor - 1 > r.known_commit:
            # Slots below the peers' floor are decided: fetch them (or a snapshot).
            r.known_commit = self.acceptor.floor - 1

    def _heard_leader(self, b: Ballot) -> None:
        a = self.acceptor
        if a is not None and b == a.promised:
            self.leader_tick = self.ticks
            self.leader_ballot = b

    def _leader_alive(self) -> bool:
        a = self.acceptor
        return (
            a is not None
            and self.leader_tick is not None
            and self.leader_ballot == a.promised
            and self.ticks - self.leader_tick < self.cfg.election_ticks
        )

    def _saw_ballot(self, b: Ballot, heard_leader: bool) -> None:
        if heard_leader:
            self.leader_heard = b.node
            self.quiet_ticks = 0
        p = self.proposer
        if p is None:
            return
        p.observe(b)
        if b >= p.max_seen and b.node != self.id:
            # A live leader (or a candidate that outranks everything we know):
            # hold our own election timer so we do not duel with it.
            p.elapsed = 0
            if heard_leader:
                p.leader_hint = b.node
                p.backoff = 1
                p.cancel_prevote()

    def _learn_commit(self, b: Ballot, commit: int) -> None:
        """Piggybacked decisions: slots <= commit are decided by the leader of ``b``.

        Where our own acceptor voted for slot s at exactly ballot ``b``, that vote
        is the leader's proposal for s, and the leader decided it (it steps
        down before advertising a slot it learned with another value, see
        Proposer.on_learned), so we learn s without the value crossing the
        network again. Other slots come by catch-up.
        """
        if commit > self.commit_seen:
            self.commit_seen = commit
        r = self.replica
        if r is None:
            return
        if commit > r.known_commit:
            r.known_commit = commit
        a = self.acceptor
        if a is None or b.node == self.id:
            return
        if a.promised != b:
            # Defence in depth (issue 11, S1): we promised a later ballot since,
            # so ``b`` may have been deposed before it decided what it
            # advertises. Learn those slots by catch-up, never from our vote.
            return
        s = r.applied + 1
        while s <= commit:
            if s not in r.log:
                vote = a.accepted.get(s)
                if vote is None or vote[0] != b:
                    break
                r.decide(s, vote[1])
            s += 1

    def _answer_trimmed_accept(self, src: int, slot: int) -> None:
        r = self.replica
        assert r is not None
        value = r.log.get(slot)
        if value is not None:
            self.out.send(src, CatchupReply(None, (DecidedEntry(slot, value),), r.applied))
            return
        last = self.snapshot_answered.get(src)
        if last is not None and self.ticks - last < self.cfg.retransmit_ticks:
            return
        reply = r.serve_catchup(slot, max_entries=1)
        if reply is not None:
            self.snapshot_answered[src] = self.ticks
            self.out.send(src, reply)

    def _request_catchup(self) -> None:
        assert self.replica is not None
        hint = self.leader_hint
        target: int | None = hint
        if hint is None or hint == self.id or Role.LEARNER not in self.cfg.role_of(hint):
            target = self._catchup_peer()
        if target is not None:
            self.out.send(target, CatchupRequest(self.replica.applied + 1))

    def _catchup_peer(self) -> int | None:
        """A random peer to fetch decisions from: half the time a proposer
        (the distinguished learner of its own ballots, so it usually holds the
        decisions), otherwise any learner (a learner-only peer may be behind
        or not running, but it may also be the only one that has them)."""
        proposers = [n for n in self.cfg.proposer_ids if n != self.id]
        learners = [n for n in self.cfg.learner_ids if n != self.id]
        # Every other try goes to any learner: the proposers may all lack
        # what we miss (found by the simulator, seed 1148: a leader that
        # lost its disk asked only the other proposer, which was as far
        # behind, while two learners held the slots).
        peers = proposers if proposers and self.rng.random() < 0.5 else learners
        return self.rng.choice(peers) if peers else None

    def _pull(self) -> None:
        assert self.replica is not None
        target = self._catchup_peer()
        if target is not None:
            self.out.send(target, CatchupRequest(self.replica.applied + 1))

    def _on_decided(self, slot: int, value: Value) -> None:
        if self.proposer is not None:
            self.proposer.on_learned(slot, value)

    def _on_applied(self, cmd: Command, result: bytes | None) -> None:
        if self.proposer is not None:
            self.proposer.on_applied(cmd, result)

    def _not_leader(self, req: ClientRequest) -> None:
        hint = self.leader_hint
        self.out.reply(ClientReply(req.client_id, req.seq, Status.NOT_LEADER, b"", hint))

    def _after(self) -> None:
        p, a, r = self.proposer, self.acceptor, self.replica
        rec = self.recovery
        if rec is not None and rec.waiting is not None and r is not None:
            upto, quorum = rec.waiting
            if r.applied >= upto:
                self._adopt(rec, quorum)
        if p is not None and self.cfg.eager_propose:
            p.flush()
        if a is not None:
            if r is not None:
                if r.snapshot is not None and r.snapshot.slot + 1 > a.floor:
                    a.trim(r.snapshot.slot + 1)
            elif self.durable_seen - self.cfg.log_retain > a.floor + self.cfg.snapshot_interval:
                # A lone acceptor trims on the leader's durable snapshot, not
                # on its decided prefix: the leader's decisions may not be on
                # any disk yet (its learner records ride the next fsync), and a
                # crash would then lose the only copy (issue 11, found by the
                # simulator: seed 541).
                a.trim(self.durable_seen - self.cfg.log_retain + 1)
