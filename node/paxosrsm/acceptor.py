"""The acceptor role (Paxos Made Simple, section 2.2, phases 1b and 2b)."""

from __future__ import annotations

from .config import ClusterConfig
from .messages import (
    MAX_ENTRIES,
    Accept,
    Accepted,
    AcceptedEntry,
    Fenced,
    Heartbeat,
    HeartbeatAck,
    Nack,
    Prepare,
    Promise,
    RecoverPrepare,
)
from .outbox import Outbox, SafetyViolation
from .records import (
    AcceptRec,
    DurableState,
    IncarnationRec,
    PeerIncRec,
    PromiseRec,
    RecoveryRec,
    TrimRec,
)
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
        #: This disk's incarnation, and the latest known incarnation of peers.
        self.inc: int = state.inc
        self.peer_inc: dict[int, int] = dict(state.peer_inc)
        #: Lost its disk and not yet recovered: no promises, votes or acks.
        self.recovering: bool = state.recovering

    def _entries(self, from_slot: int) -> tuple[AcceptedEntry, ...]:
        return tuple(
            AcceptedEntry(s, b, v) for s, (b, v) in sorted(self.accepted.items()) if s >= from_slot
        )

    def _page(self, from_slot: int) -> tuple[tuple[AcceptedEntry, ...], int]:
        """The votes >= from_slot up to ``promise_bytes`` of commands (at
        least one), and the last slot they cover (-1: all of them)."""
        out: list[AcceptedEntry] = []
        size = 0
        for s, (b, v) in sorted(self.accepted.items()):
            if s < from_slot:
                continue
            n = sum(len(c.payload) for c in v) + 64
            if out and (size + n > self.cfg.promise_bytes or len(out) >= MAX_ENTRIES):
                return tuple(out), out[-1].slot
            out.append(AcceptedEntry(s, b, v))
            size += n
        return tuple(out), -1

    def on_prepare(self, m: Prepare) -> None:
        if self.recovering:
            return  # an amnesiac acceptor's promise would mean nothing
        # P1b: promise only ballots >= every earlier promise. Equal is allowed so
        # a retransmitted Prepare (its Promise lost) is answered the same way.
        if m.ballot >= self.promised:
            if m.ballot > self.promised:
                self.promised = m.ballot
                # The promise must be durable before the Promise leaves (Ready contract).
                self.out.persist(PromiseRec(m.ballot))
            entries, upto = self._page(m.from_slot)
            self.out.send(
                m.ballot.node,
                Promise(m.ballot, self.id, self.floor, entries, self.inc,
                        from_slot=m.from_slot, nonce=m.nonce, upto=upto),
            )  # fmt: skip
        elif self.cfg.nack:
            self.out.send(m.ballot.node, Nack(m.ballot, self.promised, self.id))

    def on_accept(self, m: Accept) -> None:
        if self.recovering or m.slot < self.floor:
            # Not a voter yet; or decided and trimmed long ago (the node answers
            # with the decision, see Node.step).
            return
        if m.ballot < self.promised:
            if self.cfg.nack:
                self.out.send(m.ballot.node, Nack(m.ballot, self.promised, self.id))
            return
        for aid, inc in m.incs:
            known = self.inc if aid == self.id else self.peer_inc.get(aid, 0)
            if inc < known:
                # The ballot's phase 1 counted a promise from a disk that has
                # since been lost; that promise no longer binds anyone, so the
                # quorum is void (docs/design.md, "amnesia").
                self.out.send(m.ballot.node, Fenced(m.ballot, self.id, aid))
                return
        cur = self.accepted.get(m.slot)
        if cur is not None and cur[0] == m.ballot and cur[1] != m.value:
            # A proposer sends one value per (ballot, slot); two would let two
            # values be chosen at one ballot (section 2.2, "a proposer issues a
            # proposal with number n ... for only one value").
            raise SafetyViolation(
                f"acceptor {self.id}: two values for slot {m.slot} at ballot {m.ballot}"
            )
        if m.ballot > self.promised:
            # Accepting b promises b (section 2.2, P1a): make that promise durable
            # on its own, not only implied by a vote that trimming may remove.
            self.promised = m.ballot
            self.out.persist(PromiseRec(m.ballot))
        if cur != (m.ballot, m.value):
            self.accepted[m.slot] = (m.ballot, m.value)
            self.out.persist(AcceptRec(m.slot, m.ballot, m.value))
        # Only the distinguished learner hears the vote; it is the ballot's node.
        self.out.send(m.ballot.node, Accepted(m.ballot, m.slot, self.id))

    def on_heartbeat(self, m: Heartbeat) -> None:
        if self.recovering:
            return  # must not count towards a read-index quorum
        self.out.send(m.ballot.node, HeartbeatAck(m.ballot, m.probe, self.id, self.promised))

    def on_recover_prepare(self, m: RecoverPrepare) -> None:
        """A peer lost its disk: promise its recovery ballot and record its new disk."""
        if self.recovering:
            return
        known = self.peer_inc.get(m.acceptor, 0)
        if m.from_slot > 0:
            # The next page of a report this recovery was promised (issue 12).
            # Only pages after the first: a recovery gets a first page only
            # by the strict rule below, so only after this acceptor promised
            # its ballot and recorded its incarnation; a retransmitted first
            # request could not be told from a later lost disk's recovery at
            # the same ballot and incarnation (which must be refused:
            # test_a_second_recovery_cannot_reuse_the_first_incarnation).
            # Answered while what a report needs still holds: a promise at
            # least the recovery's ballot, and its fence as the last record
            # of that acceptor. Not only while the recovery's own promise
            # stands: a leader re-elected meanwhile would win every race
            # against a many-page recovery. A later page may then report a
            # vote cast since, at a ballot above the recovery's: a real vote
            # of this acceptor, which the recovered one may adopt as it could
            # have cast it. Nothing is recorded.
            if m.inc != known or self.promised < m.ballot:
                return
            entries, upto = self._page(m.from_slot)
            self.out.send(
                m.ballot.node,
                Promise(m.ballot, self.id, self.floor, entries, self.inc,
                        tuple(sorted(self.peer_inc.items())), from_slot=m.from_slot,
                        recover_inc=m.inc, upto=upto),
            )  # fmt: skip
            return
        # Both strictly: a recovery ballot above every promise (so it is above
        # every ballot a quorum member promised before the loss, proof step 1),
        # and an incarnation above every earlier one of that acceptor (so that a
        # second recovery can never reuse the first one's number, step 2).
        if m.ballot > self.promised and m.inc > known:
            self.promised = m.ballot
            self.out.persist(PromiseRec(m.ballot))
            self.peer_inc[m.acceptor] = m.inc
            self.out.persist(PeerIncRec(m.acceptor, m.inc))
            known_incs = tuple(sorted(self.peer_inc.items()))
            entries, upto = self._page(0)
            self.out.send(
                m.ballot.node,
                Promise(
                    m.ballot,
                    self.id,
                    self.floor,
                    entries,
                    self.inc,
                    known_incs,
                    recover_inc=m.inc,
                    upto=upto,
                ),
            )
            return
        # Always answered, NACK option or not: the recovering acceptor needs a
        # ballot to go above (and its next round r gives incarnation r + 1).
        hint = max(self.promised, Ballot(known, m.acceptor))
        if hint <= m.ballot:
            hint = Ballot(m.ballot.round + 1, 0)
        self.out.send(m.ballot.node, Nack(m.ballot, hint, self.id))

    def adopt(self, ballot: Ballot, promises: list[Promise]) -> None:
        """Finish recovery from a quorum of other acceptors' promises for ``ballot``.

        The adopted state is what a phase 1 at ``ballot`` learns: for each slot
        the highest-ballot vote reported, and the highest floor. It is written
        with this Ready; votes from here on go in later Readies, so they leave
        only after it is durable.
        """
        assert self.recovering
        floor = max([self.floor, *(p.floor for p in promises)])
        merged: dict[int, tuple[Ballot, Value]] = {}
        for p in promises:
            for e in p.entries:
                cur = merged.get(e.slot)
                if e.slot >= floor and (cur is None or e.ballot > cur[0]):
                    merged[e.slot] = (e.ballot, e.value)
            # Inherit every fence the quorum knows of, not only its members'
            # own incarnations: otherwise an acceptor wiped after recording
            # a fence would come back without it.
            for aid, inc in ((p.acceptor, p.inc), *p.peer_incs):
                if aid != self.id and inc > self.peer_inc.get(aid, 0):
                    self.peer_inc[aid] = inc
                    self.out.persist(PeerIncRec(aid, inc))
        self.inc = ballot.round + 1
        self.out.persist(IncarnationRec(self.inc))
        # A report in pages may hold a vote cast after the recovery's
        # promise, at a higher ballot (on_recover_prepare): the adopted
        # promise covers it, as a vote implies a promise of its ballot.
        top = max((b for b, _ in merged.values()), default=ballot)
        self.promised = max(self.promised, ballot, top)
        self.out.persist(PromiseRec(self.promised))
        self.trim(floor)
        for s, (b, v) in sorted(merged.items()):
            self.accepted[s] = (b, v)
            self.out.persist(AcceptRec(s, b, v))
        self.recovering = False
        self.out.persist(RecoveryRec(False))

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
