"""Deterministic scenarios on the simulator: each sets up one situation exactly."""

from __future__ import annotations

import pytest

from paxosrsm.check.linearizability import check_history
from paxosrsm.client.core import Outcome
from paxosrsm.config import ClusterConfig
from paxosrsm.sim.engine import MS, SEC, SimParams, Simulator


def quiet(n: int = 3, *, nack: bool = True, clients: int = 2, **cfg: int) -> Simulator:
    params = SimParams(
        cfg=ClusterConfig(n_acceptors=n, nack=nack, **cfg),
        clients=clients,
        faults=False,
        workload=False,
    )
    return Simulator(seed=1234, params=params)


def lin_ok(sim: Simulator) -> None:
    res = check_history(sim._lin_ops())
    assert res.ok, res.explanation


@pytest.mark.parametrize("n", [1, 3, 5, 7])
@pytest.mark.parametrize("nack", [False, True])
def test_cluster_sizes_serve_reads_and_writes(n: int, nack: bool) -> None:
    sim = quiet(n, nack=nack)
    sim.wait_for_leader()
    assert sim.call(100, "put", "k", "v1").outcome == Outcome.OK
    cas = sim.call(101, "cas", "k", "v1", "v2")
    assert cas.outcome == Outcome.OK and cas.result is True
    r = sim.call(100, "get", "k")
    assert (r.outcome, r.result) == (Outcome.OK, "v2")
    d = sim.call(101, "delete", "k")
    assert (d.outcome, d.result) == (Outcome.OK, True)
    assert sim.call(100, "get", "k").result is None
    sim.run_for(1 * SEC)
    applied = {sn.node.applied for sn in sim.nodes.values() if sn.node is not None}
    assert len(applied) == 1, "every replica applies the same prefix"
    lin_ok(sim)


def test_lone_survivor_of_three_never_decides() -> None:
    sim = quiet(3)
    lead = sim.wait_for_leader()
    assert sim.call(100, "put", "k", "before").outcome == Outcome.OK
    for other in sim.cfg.node_ids:
        if other != lead:
            sim.crash(other)
    before = set(sim.chosen)
    rec = sim.call(100, "put", "k", "alone", target=lead, timeout_us=5 * SEC)
    assert rec.outcome == Outcome.UNKNOWN
    assert set(sim.chosen) == before, "one acceptor of three must not choose anything"


def test_isolated_old_leader_does_not_serve_stale_reads() -> None:
    # The read-index rule: a deposed leader that has not noticed yet must not
    # answer a linearizable read from its own state.
    sim = quiet(3, election_ticks=10)
    old = sim.wait_for_leader()
    assert sim.call(100, "put", "x", "1", target=old).outcome == Outcome.OK
    others = [n for n in sim.cfg.node_ids if n != old]
    sim.partition([old], others)
    new = sim.wait_for_leader(exclude=old, timeout_us=2 * SEC)
    assert sim.nodes[old].node is not None and sim.nodes[old].node.is_leader, (
        "the old leader must still believe it leads for this test to mean anything"
    )
    assert sim.call(100, "put", "x", "2", target=new).outcome == Outcome.OK
    r = sim.call(101, "get", "x", target=old)
    assert r.outcome == Outcome.OK
    assert r.result == "2", "stale read from a deposed leader"
    lin_ok(sim)


def test_stale_read_option_answers_locally() -> None:
    sim = quiet(3)
    lead = sim.wait_for_leader()
    assert sim.call(100, "put", "x", "1").outcome == Outcome.OK
    others = [n for n in sim.cfg.node_ids if n != lead]
    sim.run_for(200 * MS)
    sim.partition([others[0]], [lead, others[1]])
    assert sim.call(100, "put", "x", "2").outcome == Outcome.OK
    r = sim.call(101, "get", "x", target=others[0], stale=True)
    assert (r.outcome, r.result) == (Outcome.OK, "1"), "explicitly stale: the local state"


def test_duelling_proposers_converge() -> None:
    # Two proposers time out together again and again with no backoff would
    # livelock (FLP); randomised timeouts with backoff must elect one.
    sim = quiet(5, nack=False)
    for sn in sim.nodes.values():
        assert sn.node is not None and sn.node.proposer is not None
        sn.node.proposer.timeout = 10  # everyone fires at the same tick
    lead = sim.wait_for_leader(timeout_us=10 * SEC)
    assert lead is not None
    assert sim.call(100, "put", "k", "v").outcome == Outcome.OK


def test_exactly_once_across_leader_change() -> None:
    # A write is accepted, its leader crashes before answering, and the client
    # retries the same (client, seq) elsewhere: it must be applied once.
    sim = quiet(3)
    old = sim.wait_for_leader()
    assert sim.call(100, "put", "n", "0").outcome == Outcome.OK
    rec = sim.submit(100, "cas", "n", "0", "1", target=old)
    sim.run_for(2 * MS)  # the Accepts are out, the answer is not
    sim.crash(old)
    deadline = sim.now + 10 * SEC
    while rec.outcome is None and sim.now < deadline:
        sim.run_for(10 * MS)
    assert rec.outcome == Outcome.OK
    assert rec.result is True, "the retry must see its own first answer, not a failed cas"
    cmds = [c for v in sim.chosen.values() for c in v if (c.client_id, c.seq) == (100, rec.seq)]
    assert cmds, "the write is in the log"
    assert sim.call(101, "get", "n").result == "1"
    lin_ok(sim)


def test_restarted_replica_catches_up_by_snapshot() -> None:
    sim = quiet(3, snapshot_interval=10, log_retain=2)
    lead = sim.wait_for_leader()
    lag = next(n for n in sim.cfg.node_ids if n != lead)
    sim.crash(lag)
    for i in range(60):
        assert sim.call(100, "put", f"k{i % 5}", str(i)).outcome == Outcome.OK
    sim.restart(lag)
    sim.run_for(2 * SEC)
    lagger = sim.nodes[lag].node
    leader = sim.nodes[lead].node
    assert lagger is not None and leader is not None and lagger.replica is not None
    assert lagger.applied == leader.applied
    assert lagger.replica.snapshot is not None, "it caught up through a snapshot"
    assert lagger.replica.sm.snapshot() == leader.replica.sm.snapshot()  # type: ignore[union-attr]


def test_wipe_fault_restarts_with_empty_disk() -> None:
    sim = quiet(3)
    sim.wait_for_leader()
    assert sim.call(100, "put", "k", "v").outcome == Outcome.OK
    victim = 0
    assert sim.nodes[victim].disk.durable
    sim.wipe(victim)
    assert sim.nodes[victim].node is None and sim.nodes[victim].disk.durable == []
    sim.restart(victim)
    node = sim.nodes[victim].node
    assert node is not None and node.acceptor is not None
    assert node.acceptor.accepted == {} and node.applied == -1


def test_long_recovery_reports_come_in_pages() -> None:
    """Issue 12: a recovery report (every vote above the floor) larger than a
    frame was dropped, and that acceptor's answer lost. With 200-byte pages,
    an acceptor wiped after 40 writes recovers from paged reports, and every
    write survives."""
    sim = quiet(3, promise_bytes=200, snapshot_interval=1000)
    lead = sim.wait_for_leader()
    for i in range(40):
        assert sim.call(100, "put", f"k{i}", "v" * 50).outcome == Outcome.OK
    victim = next(n for n in sim.cfg.acceptor_ids if n != lead)
    sim.wipe(victim)
    sim.restart(victim)
    deadline = sim.now + 10 * SEC
    node = sim.nodes[victim].node
    while node is not None and node.recovering and sim.now < deadline:
        sim.run_for(10 * MS)
        node = sim.nodes[victim].node
    assert node is not None and not node.recovering, "the wiped acceptor never recovered"
    assert sim.stats.get("recovery_pages", 0) >= 10, sim.stats
    sim.crash(lead)  # the recovered acceptor is needed for a quorum now
    sim.wait_for_leader(exclude=lead)
    for i in (0, 20, 39):
        assert sim.call(100, "get", f"k{i}").result == "v" * 50
    lin_ok(sim)


def test_the_sweep_pages_promises_and_recovery_reports() -> None:
    """The simulator's small pages (promise_bytes 300 or 2000 in half the
    seeds) make paged Promises and recovery reports common, so the sweep
    covers both paths (with a first page taken for the whole report, seed 0
    chooses two values in one slot)."""
    import random

    from paxosrsm.sim.engine import SimulationFailure

    stats: dict[str, int] = {}
    for seed in range(40):
        sim = Simulator(seed, SimParams.random(random.Random(seed), wipe=True))
        try:
            sim.run()
        except SimulationFailure as e:
            raise AssertionError(f"seed {seed}: {str(e)[:300]}") from None
        for k in ("promise_pages", "recovery_pages"):
            stats[k] = stats.get(k, 0) + sim.stats.get(k, 0)
    assert stats["promise_pages"] > 0 and stats["recovery_pages"] > 0, stats
