"""Regressions for the defects a review found (2026-11-27), each driven message
by message. Each scenario chose two values, served a stale read, or reused a
ballot before its fix; see docs/design.md for the rules they check."""

from __future__ import annotations

from review_harness import *


def test_deposed_leader_does_not_propose_into_a_learned_slot() -> None:
    net = Net(5, nack=False)
    b0 = net.elect(0, {0, 1, 2, 3, 4})
    # drop heartbeats etc.
    net.take(lambda e: isinstance(e.msg, (Heartbeat, HeartbeatAck)))
    net.client(0, 1, 1, K("k", "X"))  # slot 0
    net.client(0, 2, 1, K("k", "Y"))  # slot 1
    a0 = [e for e in net.pool if isinstance(e.msg, Accept) and e.msg.slot == 0]
    a1 = [e for e in net.pool if isinstance(e.msg, Accept) and e.msg.slot == 1]
    # slot 0 accepted by all, but its Accepteds to node 0 are held
    net.deliver(lambda e: isinstance(e.msg, Accept) and e.msg.slot == 0)
    held0 = net.take(lambda e: isinstance(e.msg, Accepted) and e.msg.slot == 0)
    # slot 1 accepted by {0,2,4}; decided at node 0
    net.deliver(lambda e: isinstance(e.msg, Accept) and e.msg.slot == 1 and e.dst in {0, 2, 4})
    net.take(lambda e: isinstance(e.msg, Accept) and e.msg.slot == 1)
    net.deliver(lambda e: isinstance(e.msg, Accepted) and e.msg.slot == 1)
    n0 = net.nodes[0]
    net.take(lambda e: True)
    # node 1 elected at a higher ballot with {1,2,3}; node 0 and 4 don't hear
    b1 = net.elect(1, {1, 2, 3})
    net.take(lambda e: e.dst in (0, 4))
    net.client(1, 3, 1, K("k", "W"))
    net.deliver(
        lambda e: (
            isinstance(e.msg, (Accept, Accepted)) and e.src in {1, 2, 3} and e.dst in {1, 2, 3}
        )
    )
    n1 = net.nodes[1]
    net.take(lambda e: True)
    # node 0 (still leader of b0) asks for catch-up: known_commit > applied
    for _ in range(5):
        n0.tick()
        net.flush(0)
    reqs = net.take(lambda e: e.src == 0 and isinstance(e.msg, CatchupRequest))
    net.take(lambda e: True)
    rep = n1.replica.serve_catchup(reqs[0].msg.from_slot)
    n0.step(1, rep)
    net.flush(0)
    net.take(lambda e: True)
    net.client(0, 4, 1, K("k", "Z"))
    acc = [e for e in net.pool if isinstance(e.msg, Accept)]
    net.deliver(lambda e: isinstance(e.msg, Accept) and e.dst == 4)
    n4 = net.nodes[4]
    common = set(n4.replica.log) & set(n1.replica.log)
    assert all(n4.replica.log[s] == n1.replica.log[s] for s in common), "two values in one slot"
    assert not acc, "a deposed leader must not propose into a slot decided without it"


def test_reads_wait_for_a_decision_at_the_leaders_ballot() -> None:
    net = Net(3, nack=True)
    A, C, B = 0, 1, 2
    bc = net.elect(C, {0, 1, 2})
    net.client(C, 1, 1, K("k", "v0"))
    net.deliver(lambda e: True)
    for _ in range(3):
        net.nodes[C].tick()
        net.flush(C)
        net.deliver(lambda e: True)
    for i in net.nodes:
        print(i, "applied", net.nodes[i].applied)
    # B: failed candidacy, then p
    nb = net.nodes[B]
    nb.proposer.start_election()
    net.flush(B)
    net.take(lambda e: e.src == B)
    nb.proposer.start_election()
    net.flush(B)
    p = nb.proposer.ballot
    print("p", p)
    net.deliver(lambda e: isinstance(e.msg, Prepare) and e.dst == A)
    held_prom = net.take(lambda e: isinstance(e.msg, Promise) and e.src == A)
    held_prep = net.take(lambda e: isinstance(e.msg, Prepare) and e.msg.ballot == p)
    net.take(lambda e: True)
    # wipe A
    net.wipe(A)
    na = net.nodes[A]
    for _ in range(40):
        na.tick()
        net.flush(A)
        net.deliver(lambda e: isinstance(e.msg, (RecoverPrepare, Promise, Nack)))
        if not na.recovering:
            break
    net.take(lambda e: True)
    # C elects q (Prepare to B held/dropped)
    nc = net.nodes[C]
    nc.proposer.start_election()
    net.flush(C)
    q = nc.proposer.ballot
    print("q", q)
    net.take(lambda e: isinstance(e.msg, Prepare) and e.dst == B)
    net.deliver(lambda e: isinstance(e.msg, (Prepare, Promise)) and e.msg.ballot == q)
    net.take(lambda e: True)
    net.client(C, 2, 1, K("k", "u"))
    net.take(lambda e: e.dst == B)
    net.deliver(lambda e: isinstance(e.msg, (Accept, Accepted)) and e.dst in (A, C))
    net.take(lambda e: True)
    # stale promise and B's own prepare arrive
    net.pool.extend(held_prom)
    net.pool.extend([e for e in held_prep if e.dst == B])
    net.deliver(
        lambda e: (
            (isinstance(e.msg, Promise) and e.msg.ballot == p)
            or (isinstance(e.msg, Prepare) and e.msg.ballot == p and e.dst == B)
        )
    )
    net.pool.extend([e for e in held_prep if e.dst == C])
    net.deliver(lambda e: isinstance(e.msg, Prepare) and e.msg.ballot == p and e.dst == C)
    net.take(lambda e: isinstance(e.msg, Accept))
    net.replies.clear()
    net.client(B, 3, 1, G("k"), kind=Kind.READ)
    for _ in range(3):
        net.deliver(
            lambda e: (
                isinstance(e.msg, (Heartbeat, HeartbeatAck)) and e.dst in (B, C) and e.src in (B, C)
            )
        )
        net.deliver(lambda e: isinstance(e.msg, (HeartbeatAck,)))
        nb.tick()
        net.flush(B)
    stale = [r for r in net.replies if r.client_id == 3 and b'"v0"' in r.result]
    assert not stale, "read served from a phase 1 that counted a lost disk's promise"


def test_a_second_recovery_cannot_reuse_the_first_incarnation() -> None:
    net = Net(5, nack=True, prevote=False)
    b0 = net.elect(0, {0, 1, 2, 3, 4})
    net.take(lambda e: True)

    def recover(i, to):
        n = net.nodes[i]
        for _ in range(40):
            n.tick()
            net.flush(i)
            net.take(lambda e: isinstance(e.msg, RecoverPrepare) and e.dst not in to)
            net.deliver(lambda e: isinstance(e.msg, (RecoverPrepare, Promise, Nack)))
            if not n.recovering:
                break
        return n

    net.wipe(4)
    n4 = recover(4, {1, 2, 3})
    net.take(lambda e: True)
    n0 = net.nodes[0]
    n0.proposer.start_election()
    net.flush(0)
    net.take(lambda e: e.src == 0)
    n0.proposer.start_election()
    net.flush(0)
    p = n0.proposer.ballot
    print("p", p)
    net.deliver(lambda e: isinstance(e.msg, Prepare) and e.dst in (0, 4))
    held_prom4 = net.take(lambda e: isinstance(e.msg, Promise) and e.src == 4)
    held_prep1 = net.take(lambda e: isinstance(e.msg, Prepare) and e.dst == 1)
    net.take(lambda e: isinstance(e.msg, Prepare))  # to 2,3 lost
    net.wipe(4)
    n4 = recover(4, {1, 2, 3})
    net.take(lambda e: True)
    n3 = net.nodes[3]
    n3.proposer.start_election()
    net.flush(3)
    q = n3.proposer.ballot
    print("q", q)
    net.take(lambda e: isinstance(e.msg, Prepare) and e.dst not in (2, 3, 4))
    net.deliver(lambda e: isinstance(e.msg, (Prepare, Promise)) and e.msg.ballot == q)
    net.take(lambda e: True)
    net.client(3, 7, 1, K("k", "u"))
    net.deliver(lambda e: isinstance(e.msg, (Accept, Accepted)) and e.dst in (2, 3, 4))
    net.take(lambda e: True)
    net.pool.extend(held_prom4 + held_prep1)
    net.deliver(lambda e: isinstance(e.msg, (Prepare, Promise)) and e.msg.ballot == p)
    net.take(lambda e: not isinstance(e.msg, Accept))
    net.client(0, 8, 1, K("k", "v"))
    net.deliver(lambda e: isinstance(e.msg, (Accept, Accepted)) and e.dst in (0, 1, 4))
    common = set(n0.replica.log) & set(n3.replica.log)
    assert all(n0.replica.log[s] == n3.replica.log[s] for s in common), "two values in one slot"
    assert n4.acceptor.inc > 2, "a second recovery gets a higher incarnation than the first"


def test_a_restarted_proposer_never_reuses_a_ballot() -> None:
    net = Net(3, nack=True)
    net.elect(0, {0, 1, 2})
    net.client(0, 1, 1, K("k", "a"))
    net.deliver(lambda e: True)
    for _ in range(3):
        net.nodes[0].tick()
        net.flush(0)
        net.deliver(lambda e: True)
    net.take(lambda e: True)
    n1 = net.nodes[1]
    n1.proposer.start_election()
    net.flush(1)
    b = n1.proposer.ballot
    print("b", b)
    net.take(lambda e: e.dst == 1)  # own Prepare not yet processed
    net.deliver(lambda e: isinstance(e.msg, (Prepare, Promise)) and e.msg.ballot == b)
    net.client(1, 2, 1, K("k", "v"))
    s = [
        e.msg.slot
        for e in net.pool
        if isinstance(e.msg, Accept) and e.msg.ballot == b and e.msg.value
    ][0]
    net.deliver(lambda e: isinstance(e.msg, Accept) and e.dst == 0)
    net.take(lambda e: True)
    # node 1 crashes; its durable records:
    st = DurableState.fold(net.disk[1])
    net.nodes[1] = n1 = Node(net.cfg, 1, st, seed=5)
    net.flush(1)
    n1.proposer.start_election()
    net.flush(1)
    net.take(lambda e: isinstance(e.msg, Prepare) and e.dst == 0)
    net.deliver(lambda e: isinstance(e.msg, (Prepare, Promise)) and e.msg.ballot == b)
    net.client(1, 3, 1, K("k", "w"))
    net.take(lambda e: isinstance(e.msg, Accept) and e.dst == 0)
    net.deliver(lambda e: isinstance(e.msg, (Accept, Accepted)) and e.dst in (1, 2))
    n1.tick()
    n1.tick()
    net.flush(1)
    net.take(lambda e: isinstance(e.msg, Accept))
    net.deliver(lambda e: isinstance(e.msg, Heartbeat) and e.dst == 0)
    assert n1.proposer.ballot != b, "a ballot is never reused after a restart"
    n0log, n1log = net.nodes[0].replica.log, n1.replica.log
    assert all(n0log[s] == n1log[s] for s in set(n0log) & set(n1log))


def test_catching_up_during_candidacy_keeps_the_new_leader() -> None:
    net = Net(3, nack=True)
    net.elect(0, {0, 1, 2})
    net.client(0, 1, 1, K("k", "a"))
    # node 2 misses everything about slot 0
    net.take(lambda e: e.dst == 2)
    net.deliver(lambda e: e.dst in (0, 1))
    net.take(lambda e: e.dst == 2)
    n2 = net.nodes[2]
    n2.proposer.start_election()
    net.flush(2)
    b = n2.proposer.ballot
    rep = net.nodes[0].replica.serve_catchup(0)
    n2.step(0, rep)
    net.flush(2)  # catch-up reply lands during candidacy
    net.deliver(lambda e: isinstance(e.msg, (Prepare, Promise)) and e.msg.ballot == b)
    assert n2.proposer.state.name == "LEADER", "catching up while a candidate must not depose it"
