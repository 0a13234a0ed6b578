"""The proposer role: leader election (Omega), phase 1 once per ballot, pipelined
phase 2 with batching, read-index reads, and the distinguished learner's vote
counting (the leader's node is the ballot's distinguished learner).
"""

from __future__ import annotations

import random
from collections import deque
from enum import Enum

from .config import ClusterConfig, Role
from .messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    CatchupRequest,
    ClientReply,
    ClientRequest,
    Fenced,
    Heartbeat,
    HeartbeatAck,
    Nack,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Status,
)
from .outbox import Outbox
from .records import BallotRec
from .replica import Replica
from .types import NOOP, Ballot, Command, Kind, Value


class PState(Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Proposer:
    #: Carry the phase-1 quorum's incarnations in every Accept. Only a test
    #: double turns this off, to show what the fence prevents.
    fence_incarnations = True

    def __init__(
        self,
        node_id: int,
        cfg: ClusterConfig,
        replica: Replica,
        out: Outbox,
        rng: random.Random,
        max_seen: Ballot,
    ) -> None:
        self.id = node_id
        self.cfg = cfg
        self.replica = replica
        self.out = out
        self.rng = rng
        self.state = PState.FOLLOWER
        #: Highest ballot heard of anywhere; a new ballot goes above it.
        self.max_seen: Ballot = max_seen
        self.ballot: Ballot | None = None
        self.leader_hint: int | None = None
        self.backoff = 1
        self.elapsed = 0
        self.timeout = self._new_timeout()
        # candidate
        self.promises: dict[int, Promise] = {}
        #: Acceptors whose report is coming in pages (Promise.upto): the
        #: votes so far, the next page's first slot, the highest floor.
        self.pages: dict[int, tuple[list[AcceptedEntry], int, int]] = {}
        #: This candidacy's name, echoed by its Promises (Prepare.nonce).
        self.nonce = 0
        self.prepare_from = 0
        self.since_send = 0
        # leader
        self.next_slot = 0
        self.p2_start = 0
        self.proposals: dict[int, Value] = {}
        #: (acceptor, incarnation) of the promises our phase 1 counted.
        self.incs: tuple[tuple[int, int], ...] = ()
        self.votes: dict[int, set[int]] = {}
        self.sent_at: dict[int, int] = {}
        self.queue: deque[Command] = deque()
        self.waiting: set[tuple[int, int]] = set()
        self.reads: list[tuple[ClientRequest, int, int]] = []  # (req, read_index, min_probe)
        self.probe = 0
        self.ack_probe: dict[int, int] = {}
        self.last_ack: dict[int, int] = {}
        self.hb_elapsed = 0
        #: The highest commit point a Heartbeat (to every node) carried, and
        #: whether this flush sent an Accept (carrying the commit point to
        #: the acceptors): see the end of ``flush``.
        self.commit_told = -1
        self.accept_sent = False
        self.now = 0
        self.decided_own = False
        #: A promise session of our ballot broke while we led (see on_session_lost).
        self.session_broken = False
        self.last_reprepare = -(1 << 62)
        #: The ballot a pre-vote asks about, and the acceptors that granted it.
        self.prevote: Ballot | None = None
        #: Pre-vote before the first election even if cfg.prevote is off
        #: (set for a node that restarted with an empty disk).
        self.must_prevote = False
        self.grants: set[int] = set()

    # ------------------------------------------------------------ timers

    def _new_timeout(self) -> int:
        t = self.cfg.election_ticks
        return t + self.rng.randrange(t * self.backoff)

    def _reset_timer(self) -> None:
        self.elapsed = 0
        self.timeout = self._new_timeout()

    def observe(self, b: Ballot) -> None:
        """Some message carried ballot ``b``: a higher one deposes us."""
        if b > self.max_seen:
            self.max_seen = b
        if self.ballot is not None and b > self.ballot and self.state != PState.FOLLOWER:
            self.step_down(b.node)

    def step_down(self, hint: int | None) -> None:
        was_leader = self.state == PState.LEADER
        self.state = PState.FOLLOWER
        self.ballot = None
        self.leader_hint = hint
        self.session_broken = False
        self.cancel_prevote()
        self.promises.clear()
        self.pages.clear()
        self.proposals.clear()
        self.votes.clear()
        self.sent_at.clear()
        if was_leader:
            # Undecided commands may still be chosen later; the client retries
            # with the same seq and the session table keeps it exactly-once.
            for cmd in self.queue:
                self._reply(cmd.client_id, cmd.seq, Status.NOT_LEADER, b"")
            for cid, seq in sorted(self.waiting - {(c.client_id, c.seq) for c in self.queue}):
                self._reply(cid, seq, Status.NOT_LEADER, b"")
            for req, _, _ in self.reads:
                self._reply(req.client_id, req.seq, Status.NOT_LEADER, b"")
        self.queue.clear()
        self.waiting.clear()
        self.reads.clear()
        # Backoff: a deposed or failed candidate waits longer, at random, so
        # that duelling proposers separate (Omega needs one to win eventually).
        self.backoff = min(self.backoff * 2, self.cfg.max_backoff)
        self._reset_timer()

    def _reply(self, cid: int, seq: int, st: Status, result: bytes) -> None:
        hint = self.leader_hint if self.leader_hint != self.id else None
        if st == Status.OK:
            hint = self.id
        self.out.reply(ClientReply(cid, seq, st, result, hint))

    def tick(self) -> None:
        self.now += 1
        if self.state == PState.LEADER and self.session_broken:
            self._after_session_broken()
        if self.state == PState.LEADER:
            assert self.ballot is not None
            self.hb_elapsed += 1
            if self.hb_elapsed >= self.cfg.heartbeat_ticks:
                self.send_heartbeat()
            self._retransmit_accepts()
            # Check quorum: a leader that has heard from no majority for two
            # election timeouts steps down, so clients stop waiting on it.
            horizon = max(0, self.now - 3 * self.cfg.election_ticks)
            alive = sum(1 for a in self.cfg.acceptor_ids if self.last_ack.get(a, -1) >= horizon)
            if alive < self.cfg.quorum:
                self.step_down(None)
            return
        self.elapsed += 1
        if self.state == PState.CANDIDATE or self.prevote is not None:
            self.since_send += 1
            if self.since_send >= self.cfg.retransmit_ticks:
                if self.prevote is not None:
                    self._send_prevote()
                else:
                    self._send_prepare(only_missing=True)
        if self.elapsed >= self.timeout:
            if self.cfg.prevote or self.must_prevote:
                self.start_prevote()
            else:
                self.start_election()

    # ------------------------------------------------------------ pre-vote

    def start_prevote(self) -> None:
        """Ask the acceptors whether they would promise our next ballot before
        raising anyone's promise (PreVote): an acceptor that hears a live
        leader says no, so a node that cannot win leaves a working leader
        alone - after a heal, or across a bridge or ring partition."""
        if self.state == PState.CANDIDATE:
            # A failed candidacy: back off as before, and ask again first.
            self.backoff = min(self.backoff * 2, self.cfg.max_backoff)
            self.state = PState.FOLLOWER
            self.ballot = None
            self.promises.clear()
            self.pages.clear()
        elif self.prevote is not None:
            self.backoff = min(self.backoff * 2, self.cfg.max_backoff)
        self.prevote = Ballot(self.max_seen.round + 1, self.id)
        self.grants = set()
        self._reset_timer()
        self._send_prevote()

    def _send_prevote(self) -> None:
        assert self.prevote is not None
        self.since_send = 0
        msg = PreVote(self.prevote)
        for a in self.cfg.acceptor_ids:
            if a not in self.grants:
                self.out.send(a, msg)

    def on_prevote_reply(self, m: PreVoteReply) -> None:
        self.observe(m.promised)
        if self.prevote is None or m.ballot != self.prevote or self.state != PState.FOLLOWER:
            return
        if m.granted:
            self.grants.add(m.acceptor)
            if len(self.grants) >= self.cfg.quorum:
                self.cancel_prevote()
                self.start_election()

    def cancel_prevote(self) -> None:
        self.prevote = None
        self.grants = set()

    def deposed_by_recovery(self, b: Ballot) -> None:
        """A RecoverPrepare at ``b``: an acceptor that lost its disk raises
        its peers' promises. It cannot lead (its own acceptor cannot vote),
        so a leader it deposes names no successor, and prepares again soon -
        after the recovery's round trip, not after an election timeout - so
        that clients are not left waiting (issue 11: the 3-5 s wipe stall)."""
        if b > self.max_seen:
            self.max_seen = b
        if self.ballot is None or b <= self.ballot or self.state == PState.FOLLOWER:
            return
        was_leader = self.state == PState.LEADER
        self.step_down(None)
        if was_leader:
            self.backoff = 1
            self.elapsed = 0
            self.timeout = 2 * self.cfg.retransmit_ticks + self.rng.randrange(
                self.cfg.retransmit_ticks
            )

    # ------------------------------------------------------------ phase 1

    def start_election(self) -> None:
        if self.state == PState.CANDIDATE:
            self.backoff = min(self.backoff * 2, self.cfg.max_backoff)
        self.cancel_prevote()
        self.must_prevote = False
        self.state = PState.CANDIDATE
        self.ballot = Ballot(self.max_seen.round + 1, self.id)
        self.max_seen = self.ballot
        # Durable before the Prepares leave (same Ready): never reuse a ballot.
        self.out.persist(BallotRec(self.ballot))
        self.promises = {}
        self.pages = {}
        self.nonce = self.rng.getrandbits(62) + 1
        # Phase 1 covers every slot from the first one we have not applied.
        self.prepare_from = self.replica.applied + 1
        self._reset_timer()
        self._send_prepare(only_missing=False)

    def _send_prepare(self, only_missing: bool) -> None:
        assert self.ballot is not None
        self.since_send = 0
        first = Prepare(self.ballot, self.prepare_from, self.nonce)
        for a in self.cfg.acceptor_ids:
            if only_missing and a in self.promises:
                continue
            page = self.pages.get(a)
            self.out.send(a, first if page is None else Prepare(self.ballot, page[1], self.nonce))

    def on_promise(self, m: Promise) -> None:
        if self.state != PState.CANDIDATE or m.ballot != self.ballot:
            return
        if m.recover_inc != 0:
            return  # a recovery's answer at this ballot (issue 11, S3)
        a = m.acceptor
        if a in self.promises:
            return  # its report is complete: a duplicated Promise counts once
        if m.nonce != self.nonce:
            # Not an answer to this candidacy's Prepares: one to the Prepare
            # the lost disk sent at the same ballot (issue 11, S3). Only a
            # whole report from a slot at or below ours may count: one from a
            # later slot lacks the votes below it that this election must
            # see, and a page cannot be told from that one's pages.
            if m.upto != -1 or m.from_slot > self.prepare_from:
                return
            self.pages.pop(a, None)
            self._promised(m)
            return
        page = self.pages.get(a)
        votes, start, floor = page if page is not None else ([], self.prepare_from, 0)
        if m.from_slot != start:
            return  # a late duplicate of an earlier page
        votes.extend(m.entries)
        floor = max(floor, m.floor)
        if len(votes) > self.cfg.max_reproposals:
            # Far behind (as _become_leader's own check): catch up first.
            self.step_down(None)
            self.request_catchup(a)
            return
        if m.upto == -1:
            self.pages.pop(a, None)
            self._promised(
                Promise(m.ballot, a, floor, tuple(votes), m.inc, m.peer_incs,
                        from_slot=self.prepare_from, nonce=m.nonce)
            )  # fmt: skip
            return
        # Issue 12: a report larger than a frame comes in pages; ask for the
        # next. A page is progress: the candidacy does not time out while its
        # report comes in (it would start over, and a long report would never
        # finish), and it ends when a page stops coming for a timeout.
        self.pages[a] = (votes, m.upto + 1, floor)
        self.elapsed = 0
        self.since_send = 0
        self.out.send(a, Prepare(self.ballot, m.upto + 1, self.nonce))

    def _promised(self, m: Promise) -> None:
        self.promises[m.acceptor] = m
        if len(self.promises) >= self.cfg.quorum:
            self._become_leader()

    def on_nack(self, m: Nack) -> None:
        self.observe(m.promised)

    def on_session_lost(self, acceptor: int, ballot: Ballot) -> None:
        """The TCP promise session with ``acceptor`` for ``ballot`` broke.

        The seed's rule: a broken session means "go back to preparing", whatever
        broke it (a higher prepare, a crash, the network). A candidate forgets
        that promise and asks again on its retransmit timer. A leader prepares a
        new ballot on its next tick, unless by then it has heard of a higher
        ballot (then it steps down as usual). Safety does not depend on any of
        this: a new ballot's phase 1 is always safe (Paxos Made Simple, 2.2).
        """
        if ballot != self.ballot:
            return
        if self.state == PState.CANDIDATE:
            self.promises.pop(acceptor, None)
            self.pages.pop(acceptor, None)
        elif self.state == PState.LEADER:
            self.session_broken = True

    def _after_session_broken(self) -> None:
        self.session_broken = False
        if self.now - self.last_reprepare < self.cfg.election_ticks:
            # Breaks keep coming (a duel, or a flapping link): back off as a
            # deposed leader does, so that some proposer wins (Omega).
            self.step_down(None)
            return
        self.last_reprepare = self.now
        self.step_down(self.id)
        self.backoff = 1
        self.start_election()

    def on_fenced(self, m: Fenced) -> None:
        """Our phase-1 quorum counted a promise from a lost disk: prepare again."""
        if self.state == PState.LEADER and m.ballot == self.ballot:
            self.step_down(None)
            self.start_election()

    def _become_leader(self) -> None:
        assert self.ballot is not None
        self.state = PState.LEADER
        self.leader_hint = self.id
        self.backoff = 1
        self.decided_own = False
        k = self.prepare_from
        # Paxos Made Simple, section 2.2 (P2c): in each slot, propose the value
        # of the highest-numbered proposal reported by the promise quorum.
        merged: dict[int, tuple[Ballot, Value]] = {}
        floor = k
        floor_from: int | None = None
        for p in self.promises.values():
            if p.floor > floor:
                floor, floor_from = p.floor, p.acceptor
            for e in p.entries:
                if e.slot < k:
                    continue
                cur = merged.get(e.slot)
                if cur is None or e.ballot > cur[0]:
                    merged[e.slot] = (e.ballot, e.value)
        # Slots below `floor` were decided and trimmed by some acceptor of the
        # quorum: never propose there (a no-op could contradict the decision);
        # learn them by catch-up instead. Slots our learner applied while we
        # were a candidate are decided too.
        start = max(floor, self.replica.applied + 1)
        top = max(merged, default=start - 1)
        if top - start > self.cfg.max_reproposals:
            # Far behind (or a peer reported nonsense): catch up before leading,
            # rather than re-proposing a huge range.
            self.promises = {}
            self.pages = {}
            self.step_down(None)
            if floor_from is not None:
                self.request_catchup(floor_from)
            return
        self.p2_start = start
        self.next_slot = max(top + 1, start)
        self.proposals.clear()
        self.votes.clear()
        self.sent_at.clear()
        self.ack_probe.clear()
        self.last_ack = {a: self.now for a in self.promises}
        if self.fence_incarnations:
            self.incs = tuple(sorted((a, p.inc) for a, p in self.promises.items()))
        else:
            self.incs = ()
        for s in range(start, self.next_slot):
            known = self.replica.log.get(s)
            if known is not None:
                # Decided already (our learner holds it beyond a gap): never in
                # flight, or applying it later would leave a proposal at or
                # below the applied prefix that nothing retires (found by
                # Node.check_invariants, simulator seed 294). Its Accept only
                # lets the followers learn it from their votes.
                msg = Accept(self.ballot, s, known, self.commit_point(), self.incs)
                for a in self.cfg.acceptor_ids:
                    self.out.send(a, msg)
                continue
            # Nobody filled a slot without a vote: section 3, "no-op" commands.
            self._propose(s, merged[s][1] if s in merged else NOOP)
        if self.next_slot == start:
            # Nothing to re-propose: commit a no-op at our ballot anyway. Reads
            # wait for one decision at this ballot (as Raft's leader no-op), so a
            # phase 1 that counted a lost disk's promise is fenced before any
            # read is served from it.
            self._propose(self.next_slot, NOOP)
            self.next_slot += 1
        self.promises = {}
        self.pages = {}
        if floor_from is not None and floor > self.replica.applied + 1:
            self.request_catchup(floor_from)
            if floor - 1 > self.replica.known_commit:
                self.replica.known_commit = floor - 1  # keep asking until we have them
        self.send_heartbeat()

    # ------------------------------------------------------------ phase 2

    def _propose(self, slot: int, value: Value) -> None:
        assert self.ballot is not None and slot not in self.proposals
        self.proposals[slot] = value
        self.votes[slot] = set()
        self.sent_at[slot] = self.now
        msg = Accept(self.ballot, slot, value, self.commit_point(), self.incs)
        for a in self.cfg.acceptor_ids:
            self.out.send(a, msg)
        self.accept_sent = True

    def _retransmit_accepts(self) -> None:
        assert self.ballot is not None
        every = self.cfg.accept_retransmit_ticks or self.cfg.retransmit_ticks
        for slot, t in list(self.sent_at.items()):
            if self.now - t < every:
                continue
            self.sent_at[slot] = self.now
            msg = Accept(self.ballot, slot, self.proposals[slot], self.commit_point(), self.incs)
            for a in self.cfg.acceptor_ids:
                if a not in self.votes[slot]:
                    self.out.send(a, msg)

    def on_accepted(self, m: Accepted) -> None:
        if self.state != PState.LEADER or m.ballot != self.ballot:
            return
        self.last_ack[m.acceptor] = self.now
        votes = self.votes.get(m.slot)
        if votes is None:
            return
        votes.add(m.acceptor)  # a set: a duplicated Accepted is counted once
        if len(votes) >= self.cfg.quorum:
            value = self.proposals.pop(m.slot)
            del self.votes[m.slot]
            del self.sent_at[m.slot]
            self.decided_own = True
            self.replica.decide(m.slot, value)

    def on_learned(self, slot: int, value: Value) -> None:
        """The replica learned ``slot`` some other way (catch-up)."""
        mine = self.proposals.get(slot)
        if mine is None:
            if self.state == PState.LEADER and slot >= self.next_slot:
                # Someone decided a slot we have not even proposed: a higher
                # ballot has been at work. Stop before we propose there and
                # advertise a commit covering it at our ballot.
                self.step_down(None)
            return
        if mine != value:
            # Another ballot chose a different value where we proposed: we were
            # deposed. Stop now, before our commit watermark could let a
            # follower resolve this slot from its vote at our ballot.
            self.step_down(None)
            return
        del self.proposals[slot]
        del self.votes[slot]
        del self.sent_at[slot]

    def on_snapshot_installed(self, slot: int) -> None:
        """Our learner installed a peer's snapshot up to ``slot`` (issue 11, S1).

        If that jumps over a slot we still have in flight, we cannot tell
        whether it was decided with our value, and the commit we advertise
        (Heartbeat, Accept) would make followers decide their own votes at our
        ballot for it (Node._learn_commit). Step down now, in the step that
        installs the snapshot: a tick() may run before the next flush()."""
        if self.state == PState.LEADER and self.proposals and min(self.proposals) <= slot:
            self.step_down(None)

    def commit_point(self) -> int:
        """The decided prefix this leader advertises: never at or past a slot
        it still has in flight (defence in depth for S1)."""
        applied = self.replica.applied
        if self.proposals:
            return min(applied, min(self.proposals) - 1)
        return applied

    def flush(self) -> None:
        """Start new slots while the window has room (batching commands)."""
        if self.state != PState.LEADER:
            return
        if self.proposals and min(self.proposals) <= self.replica.applied:
            # Our learner jumped past slots we still had in flight by installing
            # a snapshot: we cannot tell whether they were decided with our
            # values, and the piggyback rule (Node._learn_commit) needs that.
            # Stepping down is the safe answer; it costs one election.
            self.step_down(None)
            return
        budget = self.cfg.propose_slots_per_call or self.cfg.window
        while self.queue and len(self.proposals) < self.cfg.window and budget > 0:
            budget -= 1
            if self.next_slot <= self.replica.applied or self.next_slot in self.replica.log:
                self.step_down(None)  # decided without us: see on_learned
                return
            cmds: list[Command] = []
            size = 0
            while self.queue and len(cmds) < self.cfg.max_batch:
                n = len(self.queue[0].payload)
                if cmds and size + n > self.cfg.max_batch_bytes:
                    break  # the rest in the next slot
                cmds.append(self.queue.popleft())
                size += n
            self._propose(self.next_slot, tuple(cmds))
            self.next_slot += 1
        if self.reads:
            if not self.decided_own and not self.proposals:
                # Our own slots were all learned by catch-up (decided, but not
                # provably at our ballot): reads still need one decision at our
                # ballot, so make one.
                if self.next_slot <= self.replica.applied or self.next_slot in self.replica.log:
                    self.step_down(None)
                    return
                self._propose(self.next_slot, NOOP)
                self.next_slot += 1
            self._serve_reads()
        # Tell every node of a new decision now, as raft's leader does, when
        # no Accept just carried it: otherwise followers (and their watches)
        # would learn it from the next Accept or periodic Heartbeat, up to
        # heartbeat_ticks later. Only ever what commit_point() advertises.
        told = self.commit_told
        if not self.accept_sent and self.state == PState.LEADER and self.commit_point() > told:
            self.send_heartbeat()
        self.accept_sent = False

    # ------------------------------------------------------------ clients

    def on_client(self, req: ClientRequest) -> None:
        if self.state != PState.LEADER:
            self._reply(req.client_id, req.seq, Status.NOT_LEADER, b"")
            return
        if req.kind == Kind.READ:
            # Read index (no log write): everything acknowledged before this
            # read sits in a slot < next_slot. Serve once a quorum confirms,
            # after the read arrived, that we still lead (probe > current).
            self.reads.append((req, self.next_slot - 1, self.probe + 1))
            return
        key = (req.client_id, req.seq)
        sess = self.replica.sessions.get(req.client_id)
        if sess is not None and req.seq <= sess.seq:
            if req.seq == sess.seq:
                self._reply(req.client_id, req.seq, Status.OK, sess.result)
            else:
                self._reply(req.client_id, req.seq, Status.STALE_SESSION, b"")
            return
        if key in self.waiting:
            return  # already queued or in flight; its answer comes when applied
        refusal = self.replica.precheck(req.payload)
        if refusal is not None and not self._in_flight(req.client_id, req.seq):
            # Refused before the log (a NOSPACE alarm): a refused write must
            # not take log space either. Not for a command that may already
            # be in a slot (a retry of one an earlier leader proposed): that
            # one gets the answer of its slot.
            self._reply(req.client_id, req.seq, Status.OK, refusal)
            return
        if len(self.queue) >= self.cfg.max_queue:
            self._reply(req.client_id, req.seq, Status.BUSY, b"")
            return
        self.waiting.add(key)
        self.queue.append(Command(req.client_id, req.seq, req.payload))

    def _in_flight(self, client_id: int, seq: int) -> bool:
        return any(
            c.client_id == client_id and c.seq == seq for v in self.proposals.values() for c in v
        )

    def on_applied(self, cmd: Command, result: bytes | None) -> None:
        key = (cmd.client_id, cmd.seq)
        if key in self.waiting:
            self.waiting.discard(key)
            if result is None:
                self._reply(cmd.client_id, cmd.seq, Status.STALE_SESSION, b"")
            else:
                self._reply(cmd.client_id, cmd.seq, Status.OK, result)

    # ------------------------------------------------------------ heartbeats & reads

    def send_heartbeat(self) -> None:
        assert self.ballot is not None
        self.hb_elapsed = 0
        self.probe += 1
        commit = self.commit_point()
        self.commit_told = max(self.commit_told, commit)
        durable = min(self.replica.durable_snapshot, commit)
        msg = Heartbeat(self.ballot, commit, self.probe, durable)
        for n in self.cfg.node_ids:
            if n != self.id or n in self.cfg.acceptor_ids:
                self.out.send(n, msg)

    def on_heartbeat_ack(self, m: HeartbeatAck) -> None:
        self.observe(m.promised)
        if self.state != PState.LEADER or m.ballot != self.ballot or m.promised != self.ballot:
            return
        self.last_ack[m.acceptor] = self.now
        if m.probe > self.ack_probe.get(m.acceptor, 0):
            self.ack_probe[m.acceptor] = m.probe

    def confirmed_probe(self) -> int:
        acks = sorted(self.ack_probe.values(), reverse=True)
        if len(acks) < self.cfg.quorum:
            return 0
        return acks[self.cfg.quorum - 1]

    def _serve_reads(self) -> None:
        if any(p > self.probe for _, _, p in self.reads):
            self.send_heartbeat()  # a probe sent after these reads arrived
        if not self.decided_own:
            return  # not until one slot was decided at our ballot (see _become_leader)
        confirmed = self.confirmed_probe()
        keep: list[tuple[ClientRequest, int, int]] = []
        for req, idx, p in self.reads:
            if p <= confirmed and self.replica.applied >= idx:
                # An empty read is a barrier: its answer is the read index
                # itself (a backup on any member waits until it applied that).
                answer = self.replica.sm.query(req.payload) if req.payload else str(idx).encode()
                self._reply(req.client_id, req.seq, Status.OK, answer)
            else:
                keep.append((req, idx, p))
        self.reads = keep

    def request_catchup(self, target: int) -> None:
        if Role.LEARNER not in self.cfg.role_of(target):
            learners = [n for n in self.cfg.learner_ids if n != self.id]
            if not learners:
                return
            target = self.rng.choice(learners)
        self.out.send(target, CatchupRequest(self.replica.applied + 1))

    def debug_state(self) -> tuple[object, ...]:
        return (
            self.state,
            self.ballot,
            self.max_seen,
            self.next_slot,
            tuple(sorted(self.proposals.items())),
            tuple(sorted((s, tuple(sorted(v))) for s, v in self.votes.items())),
            tuple(self.queue),
            tuple(sorted(self.waiting)),
        )
