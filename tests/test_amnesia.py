"""An acceptor replaced under the same id with an empty disk (issue 3, path 3).

Both scenarios of the issue are replayed deterministically, twice: with the
naive rejoin (a test double: ``SimParams.recovery=False``), which must choose
two values for one slot, and with our recovery, which must not.
"""

from __future__ import annotations

import pytest

from paxosrsm.client.core import Outcome
from paxosrsm.config import ClusterConfig
from paxosrsm.messages import Accept, Accepted
from paxosrsm.records import AcceptRec, IncarnationRec, Record
from paxosrsm.sim.engine import MS, SEC, SimParams, SimulationFailure, Simulator


def cluster(recovery: bool) -> tuple[Simulator, int, int, int]:
    params = SimParams(
        cfg=ClusterConfig(n_acceptors=3, nack=True),
        clients=2,
        faults=False,
        workload=False,
        recovery=recovery,
    )
    sim = Simulator(seed=99, params=params)
    b = sim.wait_for_leader()
    a, c = (n for n in sim.cfg.node_ids if n != b)
    assert sim.call(100, "put", "k", "v0").outcome == Outcome.OK
    sim.run_for(100 * MS)
    return sim, a, b, c


def slot_of(sim: Simulator, value: str) -> int:
    for slot, v in sim.chosen.items():
        if any(value.encode() in cmd.payload for cmd in v):
            return slot
    raise AssertionError(f"{value} not chosen")


def scenario_lost_vote(recovery: bool) -> Simulator:
    """v is chosen by {A, B}; A loses its disk; B fails; {A, C} must not choose w."""
    sim, a, b, c = cluster(recovery)
    to_c = sim.hold(lambda e: e.dst == c and isinstance(e.msg, Accept))
    assert sim.call(100, "put", "k", "v").outcome == Outcome.OK
    s = slot_of(sim, '"v"')
    assert sim.nodes[a].node is not None and sim.nodes[a].node.acceptor is not None
    assert sim.nodes[a].node.acceptor.accepted[s][1] == sim.chosen[s]
    sim.drop(to_c)  # C never hears of v
    sim.wipe(a)
    sim.crash(b)
    sim.restart(a)
    w = sim.call(101, "put", "k", "w", timeout_us=5 * SEC)
    if recovery:
        # A cannot recover without B (it needs a quorum of the *others*), so
        # nothing is decided: unavailable, not unsafe.
        assert w.outcome == Outcome.UNKNOWN
        assert sim.nodes[a].node is not None and sim.nodes[a].node.recovering
        sim.restart(b)
        sim.run_for(3 * SEC)
        assert not sim.nodes[a].node.recovering  # type: ignore[union-attr]
        assert sim.call(101, "put", "k", "w2").outcome == Outcome.OK
        assert sim.chosen[s] == sim.chosen[s]  # v is still the only value in s
    return sim


def scenario_accepted_in_flight(recovery: bool) -> Simulator:
    """A votes v, its Accepted in flight; A loses its disk and comes back; only
    then does B accept v. A recovery that merely asked the others what they had
    seen would let {A_old, B} choose v while {A_new, C} choose w."""
    sim, a, b, c = cluster(recovery)
    to_b = sim.hold(lambda e: e.dst == b and isinstance(e.msg, Accept))
    to_c = sim.hold(lambda e: e.dst == c and isinstance(e.msg, Accept))
    from_a = sim.hold(lambda e: e.src == a and isinstance(e.msg, Accepted))
    # v's client does not retry elsewhere (else the next leader would propose
    # v again itself, and the scenario would prove nothing).
    sim.clients[100].retry_ticks = 10**9
    sim.submit(100, "put", "k", "v", target=b)
    sim.run_for(50 * MS)
    node_a = sim.nodes[a].node
    assert node_a is not None and node_a.acceptor is not None
    (s,) = [
        slot
        for slot, (_, val) in node_a.acceptor.accepted.items()
        if val and b'"v"' in val[0].payload
    ]
    assert from_a, "A's Accepted is in flight"
    sim.wipe(a)
    # The adversarial schedule: B's retransmissions to the new A are delayed too.
    to_a = sim.hold(lambda e: e.dst == a and isinstance(e.msg, Accept) and e.msg.slot == s)
    if not recovery:
        # The test double of "ask the others what they have seen": A copies the
        # highest votes of B and C as they stand now, then votes again at once.
        seen: dict[int, AcceptRec] = {}
        for peer in (b, c):
            peer_node = sim.nodes[peer].node
            assert peer_node is not None and peer_node.acceptor is not None
            for slot, (bal, val) in peer_node.acceptor.accepted.items():
                if slot not in seen or bal > seen[slot].ballot:
                    seen[slot] = AcceptRec(slot, bal, val)
        disk: list[Record] = [IncarnationRec(777), *seen.values()]
        sim.nodes[a].disk.durable = disk
    sim.restart(a)
    sim.run_for(300 * MS)
    assert not sim.nodes[a].node.recovering  # type: ignore[union-attr]
    sim.release(to_b)  # B accepts v only now: with A's lost vote, a majority
    sim.run_for(10 * MS)  # B's vote is durable
    sim.crash(b)  # ... and B fails before anyone learns of v
    sim.drop(from_a)
    sim.drop(to_c)
    sim.drop(to_a)
    w = sim.call(101, "put", "k", "w", timeout_us=5 * SEC)
    assert w.outcome == Outcome.OK
    assert s in sim.chosen
    return sim


@pytest.mark.parametrize("scenario", [scenario_lost_vote, scenario_accepted_in_flight])
def test_naive_rejoin_chooses_two_values(scenario: object) -> None:
    with pytest.raises(SimulationFailure, match="two values chosen in slot"):
        scenario(recovery=False)  # type: ignore[operator]


@pytest.mark.parametrize("scenario", [scenario_lost_vote, scenario_accepted_in_flight])
def test_recovery_chooses_one_value(scenario: object) -> None:
    sim = scenario(recovery=True)  # type: ignore[operator]
    assert sim.sent.get("RecoverPrepare", 0) >= 2
    # The oracle raises on a second chosen value; check the client history too.
    sim.run_for(2 * SEC)
    from paxosrsm.check.linearizability import check_history

    res = check_history(sim._lin_ops())
    assert res.ok, res.explanation


def test_only_acceptor_cannot_recover() -> None:
    from paxosrsm.node import Node
    from paxosrsm.types import ProtocolError

    with pytest.raises(ProtocolError, match="nothing to recover from"):
        Node(ClusterConfig(n_acceptors=1), 0, initial_state="existing")


def test_new_and_existing_bootstrap() -> None:
    from paxosrsm.node import Node

    assert not Node(ClusterConfig(n_acceptors=3), 0, initial_state="new").recovering
    assert Node(ClusterConfig(n_acceptors=3), 0, initial_state="existing").recovering
    # a disk that already has state restarts normally, whatever the flag says
    n = Node(ClusterConfig(n_acceptors=3), 0)
    from paxosrsm.records import DurableState

    again = Node(
        ClusterConfig(n_acceptors=3),
        0,
        DurableState.fold(n.ready().records),
        initial_state="existing",
    )
    assert not again.recovering


def test_a_recovering_acceptor_does_not_vote_promise_or_ack() -> None:
    from paxosrsm.messages import Heartbeat, Prepare
    from paxosrsm.node import Node
    from paxosrsm.types import NOOP, Ballot

    n = Node(ClusterConfig(n_acceptors=3), 0, initial_state="existing")
    n.ready()
    n.step(1, Prepare(Ballot(5, 1), 0))
    n.step(1, Accept(Ballot(5, 1), 0, NOOP, -1))
    n.step(1, Heartbeat(Ballot(5, 1), -1, 1))
    rd = n.ready()
    assert not [e for e in rd.messages if e.dst == 1]
    assert not [r for r in rd.records if isinstance(r, AcceptRec)]


def scenario_stale_promise(recovery: bool) -> Simulator:
    """A promise from the lost disk is still in flight when the acceptor recovers.

    The suggested rule alone (recover at a fresh ballot b_r with a quorum of the
    others) is not enough here: proposer C holds A's old promise for p > b_r.
    After A recovers, B leads at q (b_r < q < p) and {A, B} choose u. Then C
    completes phase 1 at p with {A's old promise, C}, never hears of u, and
    {A, C} accept w at p. The incarnation fence makes every acceptor that saw
    A's recovery refuse C's Accepts, because C's quorum counted A's old disk.
    """
    from paxosrsm.messages import HeartbeatAck, Nack, Prepare, Promise
    from paxosrsm.types import Ballot

    sim, a, b, c = cluster(recovery=True)
    node_c = sim.nodes[c].node
    assert node_c is not None and node_c.proposer is not None
    # C prepares at a high ballot p; only A's copy goes through, and A's
    # Promise is delayed. (A's answers to B are delayed too, so that B does
    # not learn of p before A's disk is lost.)
    c_prepares = sim.hold(lambda e: e.src == c and isinstance(e.msg, Prepare) and e.dst != a)
    a_promise = sim.hold(lambda e: e.src == a and e.dst == c and isinstance(e.msg, Promise))
    a_to_b = sim.hold(
        lambda e: e.src == a and e.dst == b and isinstance(e.msg, HeartbeatAck | Nack)
    )
    node_c.proposer.max_seen = Ballot(50, c)
    node_c.proposer.start_election()
    node_c.proposer.timeout = 10**9
    sim._drain(sim.nodes[c])
    sim.run_for(20 * MS)
    assert a_promise, "A promised p; the Promise is in flight"
    c_to_a = sim.hold(lambda e: e.src == c and e.dst == a and isinstance(e.msg, Prepare))
    sim.drop(a_to_b)
    sim.wipe(a)
    sim.restart(a)
    sim.run_for(300 * MS)
    node_a = sim.nodes[a].node
    assert node_a is not None and not node_a.recovering
    assert node_a.acceptor is not None and node_a.acceptor.promised < Ballot(51, c)
    # B leads at q < p, with {A, B}; C hears nothing of it.
    b_to_c = sim.hold(lambda e: e.src == b and e.dst == c)
    node_b = sim.nodes[b].node
    assert node_b is not None and node_b.proposer is not None
    if node_b.is_leader:
        node_b.proposer.step_down(None)
    node_b.proposer.start_election()
    sim._drain(sim.nodes[b])
    sim.run_for(50 * MS)
    assert node_b.is_leader and node_b.proposer.ballot is not None
    assert node_b.proposer.ballot < Ballot(51, c)
    u = sim.call(100, "put", "k", "u", target=b)
    assert u.outcome == Outcome.OK
    # Now C's phase 1 at p completes with A's stale promise and its own.
    sim.nodes[b].node.proposer.timeout = 10**9  # type: ignore[union-attr]
    sim.drop(c_prepares)
    sim.drop(c_to_a)
    for sn in sim.nodes.values():
        assert sn.node is not None
    node_c.step(c, Prepare(node_c.proposer.ballot, node_c.proposer.prepare_from))  # type: ignore[arg-type]
    sim._drain(sim.nodes[c])
    sim.release(a_promise)
    sim.run_for(20 * MS)
    assert node_c.is_leader, "C leads at p on a quorum that counted A's lost disk"
    sim.crash(b)
    sim.drop(b_to_c)
    w = sim.call(101, "put", "k", "w", target=c, timeout_us=5 * SEC)
    assert w.outcome == Outcome.OK
    return sim


def test_stale_promise_without_the_incarnation_fence_chooses_two_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from paxosrsm.proposer import Proposer

    monkeypatch.setattr(Proposer, "fence_incarnations", False)  # the test double
    with pytest.raises(SimulationFailure, match="two values chosen in slot"):
        scenario_stale_promise(recovery=True)


def test_stale_promise_is_fenced() -> None:
    sim = scenario_stale_promise(recovery=True)
    assert sim.sent.get("Fenced", 0) >= 1, "the fence is what kept it safe"
    from paxosrsm.check.linearizability import check_history

    res = check_history(sim._lin_ops())
    assert res.ok, res.explanation


def test_fence_refuses_older_incarnations_only() -> None:
    # Regression (simulator seed 482): a peer that missed a later recovery
    # knows an older incarnation; it must not fence the newer one forever.
    from paxosrsm.messages import Fenced, RecoverPrepare
    from paxosrsm.node import Node
    from paxosrsm.types import Ballot

    n = Node(ClusterConfig(n_acceptors=3), 1)
    n.step(0, RecoverPrepare(Ballot(4, 0), 0, 5))  # acceptor 0 is now incarnation 5
    n.ready()
    b = Ballot(9, 2)
    n.step(2, Accept(b, 0, (), -1, ((0, 7), (2, 1))))  # newer than 5: fine
    n.step(2, Accept(b, 1, (), -1, ((0, 5), (2, 1))))  # the known one: fine
    n.step(2, Accept(b, 2, (), -1, ((0, 1), (2, 1))))  # the lost disk: fenced
    msgs = [e.msg for e in n.ready().messages]
    assert [type(m).__name__ for m in msgs] == ["Accepted", "Accepted", "Fenced"]
    assert msgs[2] == Fenced(b, 1, 0)


def test_a_recovered_acceptor_inherits_every_known_fence() -> None:
    # Review finding 7: with f >= 2, an acceptor wiped after it recorded a
    # peer's new incarnation must get that fence back through recovery.
    from paxosrsm.messages import Promise, RecoverPrepare
    from paxosrsm.node import Node
    from paxosrsm.types import Ballot

    cfg = ClusterConfig(n_acceptors=5, prevote=False)  # scripted RecoverPrepare rounds
    peer = Node(cfg, 1)
    peer.step(0, RecoverPrepare(Ballot(6, 0), 0, 7))  # acceptor 0 recovered: incarnation 7
    peer.ready()
    wiped = Node(cfg, 2, initial_state="existing")
    promise = None
    for _ in range(50):  # rounds until the recovery ballot clears the peer's promise
        wiped.tick()
        for e in wiped.ready().messages:
            if e.dst == 1 and isinstance(e.msg, RecoverPrepare):
                rp = e.msg
                peer.step(2, rp)
                for back in peer.ready().messages:
                    if isinstance(back.msg, Promise):
                        promise = back.msg
                    else:
                        wiped.step(1, back.msg)  # the Nack: go higher
        if promise is not None:
            break
    assert isinstance(promise, Promise) and (0, 7) in promise.peer_incs
    for a in (1, 3, 4):
        wiped.step(a, Promise(rp.ballot, a, 0, (), 1, promise.peer_incs if a == 1 else (),
                              recover_inc=rp.inc))  # fmt: skip
    assert not wiped.recovering
    assert wiped.acceptor is not None and wiped.acceptor.peer_inc[0] == 7
