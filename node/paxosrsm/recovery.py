"""Recovery of an acceptor that came back with an empty disk (same id).

The danger (issue 3): an acceptor that forgot its promises and votes can let
two different values be chosen for one slot. Before it votes again it runs a
phase 1 of its own, at a fresh ballot ``b_r``, with a quorum of the *other*
acceptors, and announces its new disk incarnation. Then it adopts what that
phase 1 learned (Acceptor.adopt). The proof sketch is in docs/design.md.
"""

from __future__ import annotations

from .config import ClusterConfig
from .messages import AcceptedEntry, Nack, PreVote, PreVoteReply, Promise, RecoverPrepare
from .outbox import Outbox
from .types import Ballot


class Recovery:
    def __init__(self, node_id: int, cfg: ClusterConfig, out: Outbox, max_seen: Ballot):
        self.id = node_id
        self.cfg = cfg
        self.out = out
        self.max_seen = max_seen
        self.ballot: Ballot | None = None
        self.promises: dict[int, Promise] = {}
        #: Reports coming in pages (Promise.upto): votes so far, the next
        #: page's first slot, the highest floor.
        self.pages: dict[int, tuple[list[AcceptedEntry], int, int]] = {}
        self.elapsed = 0
        self.rounds = 0
        #: Pre-vote (cfg.prevote): the ballot a reachability probe asks about,
        #: and the peers that answered it. The RecoverPrepare goes out only
        #: once a quorum of peers answered, so a recovery that cannot finish
        #: (a cut link) raises nobody's promise and deposes no leader.
        self.probe: Ballot | None = None
        self.reachable: set[int] = set()
        #: A quorum promised; the learner still fetches the slots below the
        #: adopted floor (Node._finish_recovery): (last such slot, quorum).
        self.waiting: tuple[int, list[Promise]] | None = None

    @property
    def others(self) -> list[int]:
        return [a for a in self.cfg.acceptor_ids if a != self.id]

    def tick(self) -> None:
        if self.waiting is not None:
            return  # done asking; the node adopts once its learner caught up
        self.elapsed += 1
        idle = self.ballot is None and self.probe is None
        rt = self.cfg.retransmit_ticks
        if self.ballot is not None and self.pages and self.elapsed < 4 * rt:
            # Reports are coming in pages (issue 12): a lost page is asked
            # for again, not the whole round started over (a report of a
            # hundred pages would never finish on a lossy network).
            if self.elapsed % rt == 0:
                self._ask_again()
            return
        if idle or self.elapsed >= 2 * rt:
            self.start()

    def _ask_again(self) -> None:
        """The next page each peer in the middle of its report owes us. (A
        lost first answer is not asked again: only a new round gets one.)"""
        assert self.ballot is not None
        inc = self.ballot.round + 1
        for a, (_votes, start, _floor) in self.pages.items():
            self.out.send(a, RecoverPrepare(self.ballot, self.id, inc, start))

    def start(self) -> None:
        if not self.cfg.prevote:
            self._prepare()
            return
        self.ballot = None
        self.promises = {}
        self.pages = {}
        self.elapsed = 0
        self.probe = Ballot(self.max_seen.round + 1, self.id)
        self.reachable = set()
        msg = PreVote(self.probe, recovery=True)
        for a in self.others:
            self.out.send(a, msg)

    def on_prevote_reply(self, m: PreVoteReply) -> None:
        if m.promised > self.max_seen:
            self.max_seen = m.promised
        if self.probe is None or m.ballot != self.probe or m.acceptor == self.id:
            return
        self.reachable.add(m.acceptor)
        if len(self.reachable) >= self.cfg.quorum:
            self.probe = None
            self._prepare()

    def _prepare(self) -> None:
        # A fresh ballot above everything heard of; peers that promised more
        # answer with a Nack, and the next round goes above that.
        self.ballot = Ballot(self.max_seen.round + 1, self.id)
        self.max_seen = self.ballot
        self.promises = {}
        self.pages = {}
        self.elapsed = 0
        self.rounds += 1
        # Incarnations are ordered: a new disk is 1, a recovered one is its
        # recovery round + 1. Each recovery's quorum of others meets the last
        # one's, so its round is higher: a later disk has a larger number.
        msg = RecoverPrepare(self.ballot, self.id, self.ballot.round + 1)
        for a in self.others:
            self.out.send(a, msg)

    def on_nack(self, m: Nack) -> None:
        if m.promised > self.max_seen:
            self.max_seen = m.promised

    def on_promise(self, m: Promise) -> list[Promise] | None:
        """Returns the quorum of promises once complete."""
        if self.waiting is not None:
            return None
        if m.ballot != self.ballot or m.acceptor == self.id:
            return None
        if m.recover_inc != self.ballot.round + 1:
            # Not an answer to this recovery's RecoverPrepare: a late answer
            # to a Prepare the lost disk sent at the same ballot (issue 11,
            # S2). It reports votes only from that Prepare's slot on, and its
            # sender never recorded the new incarnation: counting it breaks
            # both steps of the amnesia argument (design.md, section 8a).
            return None
        a = m.acceptor
        if a in self.promises:
            return None
        votes, start, floor = self.pages.get(a, ([], 0, 0))
        if m.from_slot != start:
            return None  # a late duplicate of an earlier page
        votes.extend(m.entries)
        floor = max(floor, m.floor)
        if m.upto != -1:
            # A report larger than a frame comes in pages (issue 12): ask for
            # the next; a page is progress, so this round does not time out.
            self.pages[a] = (votes, m.upto + 1, floor)
            self.elapsed = 0
            self.out.send(a, RecoverPrepare(self.ballot, self.id, m.recover_inc, m.upto + 1))
            return None
        self.pages.pop(a, None)
        self.promises[a] = Promise(m.ballot, a, floor, tuple(votes), m.inc, m.peer_incs,
                                   recover_inc=m.recover_inc)  # fmt: skip
        # A quorum (f+1) of the 2f others: it intersects every phase-1 quorum
        # of any ballot this acceptor could have voted in before the loss.
        if len(self.promises) >= self.cfg.quorum:
            return list(self.promises.values())
        return None
