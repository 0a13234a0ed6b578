"""Issue 11's three safety bugs, each as the scripted message order that broke
consensus before its fix (two nodes learned different values for one slot).

S1: a deposed leader advertised a commit past a slot it never decided at its
    own ballot (a snapshot installed between propose() calls, then a tick()).
S2: recovery after a lost disk counted a Promise that answered the lost
    disk's own old Prepare at the same ballot.
S3: the proposer of a wiped node counted a stale Promise to the lost disk's
    Prepare from a later slot at the same ballot.
"""

from __future__ import annotations

from typing import Any

import pytest
from review_harness import *  # noqa: F403

from paxosrsm.proposer import Proposer
from paxosrsm.types import Ballot


def _decide_slot0(net: Any, leader: int) -> None:
    net.deliver(lambda e: True)
    for _ in range(2):
        net.nodes[leader].tick()
        net.flush(leader)
        net.deliver(lambda e: True)


# ---------------------------------------------------------------- S1


def _s1(net: Any, after_install: Any = None) -> tuple[Any, Any, Any]:
    """Node 0 leads b0 with slot 1 (X) in flight, voted only by node 1; node 2
    leads b1 with {2, 3, 4} and decides a no-op in slot 1; node 0 installs
    node 2's snapshot from a CatchupReply, then ticks (no propose between)."""
    L, F, M = 0, 1, 2
    b0 = net.elect(L, {0, 1, 2, 3, 4})
    net.deliver(lambda e: isinstance(e.msg, (Accept, Accepted)))  # noqa: F405
    for _ in range(2):
        net.nodes[L].tick()
        net.flush(L)
        net.deliver(lambda e: isinstance(e.msg, (Heartbeat, HeartbeatAck)))  # noqa: F405
    net.take(lambda e: True)
    net.client(L, 7, 1, K("k", "X"))  # noqa: F405
    net.nodes[L].propose()
    net.flush(L)
    net.deliver(lambda e: isinstance(e.msg, Accept) and e.msg.slot == 1 and e.dst == F)  # noqa: F405
    net.take(lambda e: True)
    assert net.nodes[F].acceptor.accepted[1][0] == b0
    net.elect(M, {2, 3, 4})
    net.take(lambda e: e.dst in (L, F))
    net.deliver(lambda e: isinstance(e.msg, (Accept, Accepted)) and e.dst in (2, 3, 4))  # noqa: F405
    nL, nF, nM = net.nodes[L], net.nodes[F], net.nodes[M]
    assert nM.applied == 1 and nM.replica.snapshot.slot == 1
    net.take(lambda e: True)
    rep = nM.replica.serve_catchup(1)
    assert rep.snapshot is not None and rep.snapshot.slot == 1 and not rep.entries
    nL.step(M, rep)
    net.flush(L)
    if after_install is not None:
        after_install(nL)
    for _ in range(4):  # heartbeats, and Accept retransmits
        nL.tick()
        net.flush(L)
    net.deliver(lambda e: e.dst == F and isinstance(e.msg, (Heartbeat, Accept)))  # noqa: F405
    return nL, nF, nM


def _s1_net() -> Any:
    return Net(5, nack=False, eager_propose=False, snapshot_interval=1, log_retain=0)  # noqa: F405


def test_s1_a_leader_steps_down_in_the_step_that_installs_a_snapshot() -> None:
    _, nF, nM = _s1(_s1_net(), after_install=lambda n: assert_not_leader(n))
    assert nF.replica.log.get(1) in (None, nM.replica.log.get(1))
    assert nF.replica.sm.query(G("k")) == nM.replica.sm.query(G("k"))  # noqa: F405


def assert_not_leader(n: Any) -> None:
    assert not n.is_leader, "still leading with a slot in flight below its snapshot"


def test_s1_defence_in_depth_alone_keeps_followers_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the step-down, the advertised commit stays below the slots in
    flight, and a follower that promised a later ballot does not decide from
    its own vote: node 1 still never applies X."""
    monkeypatch.setattr(Proposer, "on_snapshot_installed", lambda self, slot: None)
    _, nF, nM = _s1(_s1_net())
    assert nF.replica.log.get(1) in (None, nM.replica.log.get(1))
    assert nF.replica.sm.query(G("k")) == nM.replica.sm.query(G("k"))  # noqa: F405


# ---------------------------------------------------------------- S2

A, P, C = 0, 1, 2


def _chosen_by_a_and_p(net: Any) -> None:
    """P leads; slot 0 is decided everywhere; slot 1 = v is chosen by {A, P}
    while C misses it."""
    net.elect(P, {0, 1, 2})
    _decide_slot0(net, P)
    net.client(P, 7, 1, K("k", "v"))  # noqa: F405
    net.take(lambda e: e.dst == C)
    net.deliver(lambda e: e.dst in (A, P))
    for _ in range(2):
        net.nodes[P].tick()
        net.flush(P)
        net.take(lambda e: e.dst == C)
        net.deliver(lambda e: True)


def test_s2_recovery_ignores_a_late_promise_to_the_lost_disks_prepare() -> None:
    net = Net(3, nack=True, prevote=False)  # noqa: F405
    _chosen_by_a_and_p(net)
    nA, nP, nC = (net.nodes[i] for i in (A, P, C))
    assert nA.applied == 1 and nP.applied == 1 and nC.applied == 0
    # A prepares (2,0) from slot 2; P is paused with it in its buffer.
    nA.proposer.start_election()
    net.flush(A)
    old = nA.proposer.ballot
    assert old == Ballot(2, A)
    buffered = net.take(lambda e: e.dst == P and isinstance(e.msg, Prepare))  # noqa: F405
    net.take(lambda e: True)
    net.wipe(A)  # A loses its disk and recovers; C's Nack makes b_r = (2,0)
    nA = net.nodes[A]
    for _ in range(30):
        nA.tick()
        net.flush(A)
        buffered += net.take(lambda e: e.dst == P)
        net.deliver(lambda e: e.dst in (A, C)
                    and isinstance(e.msg, (RecoverPrepare, Promise, Nack)))  # noqa: F405  # fmt: skip
        if nA.recovery.ballot == old:
            break
    assert nA.recovery.ballot == old
    # P resumes: the old Prepare first, then RecoverPrepare(b_r).
    net.pool.extend(buffered)
    net.deliver(lambda e: e.dst == P)
    net.deliver(lambda e: e.dst == A and isinstance(e.msg, (Promise, Nack)))  # noqa: F405
    # The late Promise to the old Prepare must not have completed recovery
    # without P's votes; let recovery finish for real.
    for _ in range(60):
        if not nA.recovering:
            break
        nA.tick()
        net.flush(A)
        net.deliver(lambda e: isinstance(e.msg, (RecoverPrepare, Promise, Nack)))  # noqa: F405
    assert not nA.recovering
    assert nA.acceptor.accepted.get(1, (None, None))[1] == nP.replica.log.get(1), (
        "recovered without the vote a quorum chose"
    )
    assert nP.acceptor.peer_inc.get(A) == nA.acceptor.inc
    net.take(lambda e: True)
    # C leads with {A, C}; P hears nothing. Slot 1 must stay v.
    net.elect(C, {A, C})
    net.take(lambda e: e.dst == P)
    net.client(C, 8, 1, K("k", "w"))  # noqa: F405
    for _ in range(3):
        net.take(lambda e: e.dst == P)
        net.deliver(lambda e: e.dst in (A, C))
    assert nC.replica.log.get(1) == nP.replica.log.get(1)


# ---------------------------------------------------------------- S3


def test_s3_a_stale_promise_at_a_reused_ballot_does_not_elect() -> None:
    net = Net(3, nack=True, prevote=False)  # noqa: F405
    _chosen_by_a_and_p(net)
    nA, nP = net.nodes[A], net.nodes[P]
    # Old A: a failed candidacy at (2,0), then (3,0) from slot 2, whose
    # Prepare to P is delayed in the network.
    nA.proposer.start_election()
    net.flush(A)
    net.take(lambda e: True)
    nA.proposer.start_election()
    net.flush(A)
    p = nA.proposer.ballot
    assert p == Ballot(3, A)
    delayed = net.take(lambda e: e.dst == P and isinstance(e.msg, Prepare))  # noqa: F405
    net.take(lambda e: True)
    net.wipe(A)
    nA = net.nodes[A]
    for _ in range(30):
        nA.tick()
        net.flush(A)
        net.deliver(lambda e: isinstance(e.msg, (RecoverPrepare, Promise, Nack)))  # noqa: F405
        if not nA.recovering:
            break
    net.take(lambda e: True)
    # The new A elects at the same ballot p, from slot 0; its own Promise is
    # late and P's copy of the new Prepare is lost; the old one arrives.
    nA.proposer.start_election()
    net.flush(A)
    assert nA.proposer.ballot == p and nA.proposer.prepare_from < delayed[0].msg.from_slot
    net.take(lambda e: e.dst in (A, P) and isinstance(e.msg, Prepare))  # noqa: F405
    net.pool.extend(delayed)
    net.deliver(lambda e: isinstance(e.msg, (Prepare, Promise)) and e.msg.ballot == p)  # noqa: F405
    assert not nA.is_leader, "elected on a Promise that answered another request"
    net.take(lambda e: e.dst == P)
    net.client(A, 8, 1, K("k", "w"))  # noqa: F405
    for _ in range(3):
        net.take(lambda e: e.dst == P)
        net.deliver(lambda e: e.dst in (A, C))
    assert nA.replica.log.get(1) in (None, nP.replica.log.get(1))


# ---------------------------------------------------------------- adopted floors


def test_a_recovered_acceptor_votes_only_once_its_learner_holds_the_adopted_floor() -> None:
    """Simulator seed 347: an acceptor that recovered adopted its peers'
    floor (slots below it decided and trimmed) before its learner had those
    slots; the peer whose snapshot held them then lost its disk too, and the
    slot was on no disk while two acceptors claimed it trimmed. Now the
    recovered acceptor waits, not voting, until its learner has them."""
    net = Net(3, nack=True, prevote=False, snapshot_interval=2, log_retain=0)  # noqa: F405
    net.elect(0, {0, 1, 2})
    net.deliver(lambda e: True)
    for seq in range(1, 8):
        net.client(0, 7, seq, K("k", str(seq)))  # noqa: F405
        net.deliver(lambda e: True)
    floors = [net.nodes[i].acceptor.floor for i in (0, 1)]
    assert min(floors) > 2, floors
    net.wipe(2)
    n2 = net.nodes[2]
    for _ in range(40):  # recovery rounds; its catch-up requests are lost
        n2.tick()
        net.flush(2)
        net.take(lambda e: isinstance(e.msg, (CatchupRequest, CatchupReply)))  # noqa: F405
        net.deliver(lambda e: isinstance(e.msg, (RecoverPrepare, Promise, Nack)))  # noqa: F405
    assert n2.recovering, "voted with an adopted floor its learner does not back"
    assert n2.applied < min(floors) - 1
    for _ in range(40):  # now catch-up works
        n2.tick()
        net.flush(2)
        net.deliver(lambda e: True)
        if not n2.recovering:
            break
    assert not n2.recovering
    assert n2.applied >= n2.acceptor.floor - 1
