"""Issue 11: one driver for the runtime and the simulator, and a core whose
roles nobody outside it reads.

- the runtime, the HTTP layer, the CLI and the simulator import no role
  module and read no role object of a Node (they use Node.status() and the
  intents Node.reinvite / read_local / persisted);
- the Driver's Ready loop: learner records wait for the next fsync (or the
  deferred timer), everything else is written before its messages leave;
- a leader's re-invites are the core's decision (Node.reinvite);
- acceptor-only nodes trim their votes on the leader's *durable* snapshot
  (Heartbeat.durable), never on a decision that may sit only in memory.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from review_harness import K, Net

import paxosrsm
from paxosrsm.config import Role
from paxosrsm.driver import Driver
from paxosrsm.messages import Accept, CatchupReply, ClientRequest, Heartbeat, Prepare
from paxosrsm.net import codec
from paxosrsm.records import DecideRec, SnapshotRec
from paxosrsm.types import Ballot, Kind

PKG = Path(paxosrsm.__file__).parent
ROLE_MODULES = {"acceptor", "proposer", "replica", "recovery"}
ROLE_ATTRS = {"acceptor", "proposer", "replica", "recovery"}
OUTSIDE = [
    *sorted((PKG / "net").glob("*.py")),
    *sorted((PKG / "sim").glob("*.py")),
    *sorted((PKG / "client").glob("*.py")),
    *sorted((PKG / "cli").glob("*.py")),
    *sorted((PKG / "etcdapi").glob("*.py")),
    PKG / "driver.py",
    PKG / "demo.py",
    PKG / "local.py",
    PKG / "loadgen.py",
]


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    bad: list[str] = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module is not None:
            mod = n.module.split(".")[-1]
            if mod in ROLE_MODULES:
                bad.append(f"{path.name}:{n.lineno} imports {n.module}")
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split(".")[-1] in ROLE_MODULES:
                    bad.append(f"{path.name}:{n.lineno} imports {a.name}")
        elif isinstance(n, ast.Attribute) and n.attr in ROLE_ATTRS:
            # A message's ``acceptor`` field is data, not a role: only flag a
            # role read off something that is (named like) a node.
            base = n.value
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if "node" in name.lower() or name in ("self", "n"):
                bad.append(f"{path.name}:{n.lineno} reads .{n.attr} of {name}")
    return bad


def test_nothing_outside_the_core_reads_role_internals() -> None:
    bad = [v for p in OUTSIDE for v in _violations(p)]
    assert not bad, "\n".join(bad)


def test_the_boundary_check_can_fail(tmp_path: Path) -> None:
    p = tmp_path / "leaky.py"
    p.write_text(
        "from paxosrsm.proposer import PState\n"
        "def f(node):\n"
        "    return node.acceptor.promised, node.proposer.queue\n"
        "def g(msg):\n"
        "    return msg.acceptor\n"
    )
    assert len(_violations(p)) == 3


# ---------------------------------------------------------------- the Ready loop


def _leader_net(**kw: Any) -> Net:
    net = Net(3, **kw)
    net.elect(0, {0, 1, 2})
    net.deliver(lambda e: True)
    return net


def test_learner_records_wait_for_the_next_fsync_in_order() -> None:
    net = _leader_net()
    node = net.nodes[1]
    drv = Driver(node)
    b = net.nodes[0].status().ballot
    assert b is not None
    net.client(0, 7, 1, K("k", "v"))
    accepts = net.take(lambda e: isinstance(e.msg, Accept) and e.dst == 1)
    assert accepts
    for e in accepts:
        node.step(e.src, e.msg)
    fl = drv.cycle()  # the vote: written before the Accepted leaves
    assert fl.records and fl.messages and not fl.arm_deferred
    slot = accepts[-1].msg.slot
    node.step(0, Heartbeat(b, slot, 9))  # the follower learns the decision
    fl = drv.cycle()
    assert fl.committed and fl.records == [] and fl.arm_deferred
    assert any(isinstance(r, DecideRec) for r in drv.deferred)
    assert drv.cycle().arm_deferred is False  # one timer at a time
    assert drv.flush_deferred()
    fl = drv.cycle()
    assert fl.records and all(isinstance(r, DecideRec | SnapshotRec) for r in fl.records)
    assert not drv.deferred
    assert not drv.flush_deferred()


def test_records_before_messages_and_deferred_records_ride_along() -> None:
    net = Net(3)
    node = net.nodes[0]
    drv = Driver(node)
    drv.deferred.append(DecideRec(99, ()))
    node.proposer.start_election()  # type: ignore[union-attr]
    fl = drv.cycle()
    # The BallotRec must be durable before the Prepares: it is in records,
    # behind the deferred learner record (order kept).
    assert isinstance(fl.records[0], DecideRec)
    assert any(type(r).__name__ == "BallotRec" for r in fl.records)
    assert any(isinstance(e.msg, Prepare) for e in fl.messages)
    assert not drv.deferred


def test_leadership_changes_are_reported_once() -> None:
    net = Net(3)
    drv = Driver(net.nodes[0])
    net.elect(0, {0, 1, 2})
    assert drv.cycle().leadership is True
    assert drv.cycle().leadership is None


def test_reinvite_is_the_cores_decision() -> None:
    net = _leader_net()
    node = net.nodes[0]
    st = node.status()
    assert st.is_leader and st.ballot is not None
    sessions = {(1, st.ballot)}
    assert node.reinvite(lambda a, b: (a, b) in sessions) == 1
    msgs = [e for e in node.ready().messages if isinstance(e.msg, Prepare)]
    assert [e.dst for e in msgs] == [2] and msgs[0].msg.ballot == st.ballot
    # A follower never re-invites.
    assert net.nodes[1].reinvite(lambda a, b: False) == 0
    # The driver does it every retransmit_ticks.
    drv = Driver(node)
    sent = sum(drv.tick(lambda a, b: False) for _ in range(node.cfg.retransmit_ticks))
    assert sent == 2


# ---------------------------------------------------------------- acceptor-only trimming


def test_heartbeat_durable_round_trips_and_is_validated() -> None:
    hb = Heartbeat(Ballot(3, 1), 40, 7, 20)
    assert codec.decode(codec.encode(hb)) == hb
    import pytest

    from paxosrsm.types import ProtocolError

    with pytest.raises(ProtocolError):
        Heartbeat(Ballot(3, 1), 10, 7, 11)


def test_acceptor_only_nodes_trim_on_the_leaders_durable_snapshot() -> None:
    roles = {0: Role.ACCEPTOR, 1: Role.ACCEPTOR, 2: Role.ACCEPTOR, 3: Role.PROPOSER | Role.LEARNER}
    net = Net(3, roles=roles, snapshot_interval=2, log_retain=0)
    leader = net.nodes[3]
    net.elect(3, {0, 1, 2})
    for seq in range(1, 13):
        net.client(3, 7, seq, K("k", str(seq)))
        net.deliver(lambda e: True)
    assert leader.applied >= 10 and leader.status().snapshot_slot is not None
    for _ in range(4):
        leader.tick()
        net.flush(3)
        net.deliver(lambda e: True)
    # The leader's snapshots are not on its disk yet: nobody trims.
    assert all(net.nodes[a].status().applied == -1 for a in (0, 1, 2))
    floors = [net.nodes[a].acceptor.floor for a in (0, 1, 2)]  # type: ignore[union-attr]
    assert floors == [0, 0, 0], floors
    # Its fsync returns: the heartbeats say so, and the acceptors trim.
    leader.persisted(net.disk[3])
    for _ in range(4):
        leader.tick()
        net.flush(3)
        net.deliver(lambda e: True)
    snap = leader.status().snapshot_slot
    assert snap is not None
    floors = [net.nodes[a].acceptor.floor for a in (0, 1, 2)]  # type: ignore[union-attr]
    assert all(0 < f <= snap + 1 for f in floors), (floors, snap)


def test_a_catchup_reply_stays_within_its_byte_bound() -> None:
    """Issue 11, sizes: a lagging learner is served in replies of at most
    catchup_bytes of commands (at least one entry), not in one frame that
    the runtime's receiver would refuse."""
    net = Net(3, catchup_bytes=3 << 20, snapshot_interval=1000)
    net.elect(0, {0, 1, 2})
    net.deliver(lambda e: True)
    big = "x" * ((1 << 20) - 200)
    for seq in range(1, 9):
        net.client(0, 7, seq, K("k", f"{seq}{big}"))
        net.deliver(lambda e: True)
    r = net.nodes[0]
    assert r.applied >= 8
    reply = r.replica.serve_catchup(1)  # type: ignore[union-attr]
    assert reply is not None
    size = sum(len(c.payload) for e in reply.entries for c in e.value)
    assert 1 <= len(reply.entries) <= 3 and size <= 3 << 20, (len(reply.entries), size)
    one = Net(3, catchup_bytes=1)
    one.elect(0, {0, 1, 2})
    one.deliver(lambda e: True)
    one.client(0, 7, 1, K("k", big))
    one.deliver(lambda e: True)
    rep = one.nodes[0].replica.serve_catchup(0)  # type: ignore[union-attr]
    assert rep is not None and len(rep.entries) == 1  # at least one entry, however big


def test_a_backlog_of_trimmed_accepts_draws_one_small_answer_each() -> None:
    """Jepsen, ring partition (CI of 2026-12-06): after the heal, a follower
    that had caught up and trimmed got the leader's backlog of retransmitted
    Accepts for those slots; each drew a full catch-up batch, and the one
    frame of all of them (70-130 MB) tied up both nodes for good. Each
    Accept below the floor now draws the decision of its own slot only, and
    a snapshot at most once per peer per retransmit period."""
    net = Net(3, snapshot_interval=5, log_retain=3)
    b = net.elect(0, {0, 1, 2})
    net.deliver(lambda e: True)
    for seq in range(1, 31):
        net.client(0, 7, seq, K("k", str(seq)))
        net.deliver(lambda e: True)
    f = net.nodes[1]
    floor = f.acceptor.floor  # type: ignore[union-attr]
    log = f.replica.log  # type: ignore[union-attr]
    assert floor > 10 and min(log) > 1, (floor, min(log))
    value = net.nodes[0].replica.log.get(1) or ()  # type: ignore[union-attr]
    net.pool.clear()
    for _ in range(5):
        for s in range(1, floor):
            f.step(0, Accept(b, s, log.get(s, value), -1, ()))
    net.flush(1)
    replies = [e.msg for e in net.pool if isinstance(e.msg, CatchupReply)]
    assert replies and all(len(m.entries) <= 1 for m in replies), [len(m.entries) for m in replies]
    with_snapshot = [m for m in replies if m.snapshot is not None]
    assert len(with_snapshot) == 1, len(with_snapshot)
    for _ in range(f.cfg.retransmit_ticks):
        f.tick()
    f.step(0, Accept(b, 1, value, -1, ()))
    net.flush(1)
    assert sum(1 for e in net.pool if isinstance(e.msg, CatchupReply) and e.msg.snapshot) == 2


def test_a_batch_is_bounded_in_bytes() -> None:
    """Issue 12: 70 writes of 1 MiB made one 73 MB Accept that every acceptor
    refused (over the frame limit), proposed again forever. A slot now takes
    at most max_batch_bytes of payloads (and always at least one command)."""
    net = Net(3, max_batch=64, max_batch_bytes=3 << 20, window=1)
    net.elect(0, {0, 1, 2})
    net.deliver(lambda e: True)
    big = "x" * ((1 << 20) - 200)
    for seq in range(1, 11):  # the first takes the window; the rest queue
        net.nodes[0].client_request(ClientRequest(seq, 1, Kind.WRITE, K("k", big)))
    net.flush(0)
    accepts: dict[int, Accept] = {}

    def seen(e: Any) -> bool:
        if isinstance(e.msg, Accept) and e.msg.value:
            accepts[e.msg.slot] = e.msg
        return True

    for _ in range(20):
        net.deliver(seen)
        net.nodes[0].propose()
        net.flush(0)
    sizes = [sum(len(c.payload) for c in m.value) for m in accepts.values()]
    assert sum(len(m.value) for m in accepts.values()) == 10, sizes
    assert all(s <= 3 << 20 for s in sizes) and max(len(m.value) for m in accepts.values()) > 1, (
        sizes
    )
    encoded = max(len(codec.encode(m)) for m in accepts.values())
    assert encoded < (3 << 20) + 4096, encoded
