"""Unit tests for each role, driven message by message through ``Node.step``."""

from __future__ import annotations

import pytest

from paxosrsm.config import ClusterConfig, Role
from paxosrsm.messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    CatchupReply,
    CatchupRequest,
    ClientRequest,
    DecidedEntry,
    Heartbeat,
    HeartbeatAck,
    Nack,
    Prepare,
    Promise,
    Status,
)
from paxosrsm.node import Node
from paxosrsm.outbox import SafetyViolation
from paxosrsm.records import AcceptRec, DecideRec, DurableState, IncarnationRec, PromiseRec
from paxosrsm.statemachine import encode_op
from paxosrsm.types import NOOP, Ballot, Command, Kind

CFG3 = ClusterConfig(n_acceptors=3, nack=True)


def cmd(cid: int, seq: int, key: str = "k", value: str = "v") -> Command:
    return Command(cid, seq, encode_op("put", key, value))


def elect(node: Node, promises: list[Promise] | None = None) -> Ballot:
    """Make ``node`` a candidate and feed it a quorum of (empty) promises."""
    assert node.proposer is not None
    node.proposer.start_election()
    rd = node.ready()
    prepares = [e.msg for e in rd.messages if isinstance(e.msg, Prepare)]
    assert prepares, "an election sends Prepare"
    b = prepares[0].ballot
    if promises is None:
        promises = [Promise(b, a, 0, (), 1) for a in range(CFG3.quorum)]
    for p in promises:
        node.step(p.acceptor, p)
    return b


# ---------------------------------------------------------------- acceptor


def test_acceptor_persists_promise_in_the_same_ready_as_the_reply() -> None:
    n = Node(CFG3, 0)
    (inc_rec,) = n.ready().records
    assert isinstance(inc_rec, IncarnationRec) and inc_rec.inc > 0, "a new disk gets an identity"
    n.step(1, Prepare(Ballot(5, 1), 0))
    rd = n.ready()
    assert rd.records == [PromiseRec(Ballot(5, 1))]
    assert [type(e.msg) for e in rd.messages] == [Promise]
    assert rd.messages[0].dst == 1


def test_acceptor_refuses_lower_ballots_and_nacks_when_enabled() -> None:
    for nack in (True, False):
        n = Node(ClusterConfig(n_acceptors=3, nack=nack), 0)
        n.ready()
        n.step(2, Prepare(Ballot(5, 2), 0))
        n.ready()
        n.step(1, Prepare(Ballot(4, 1), 0))
        n.step(1, Accept(Ballot(4, 1), 0, NOOP, -1))
        rd = n.ready()
        assert rd.records == []
        msgs = [e.msg for e in rd.messages]
        if nack:
            assert msgs == [Nack(Ballot(4, 1), Ballot(5, 2), 0)] * 2
        else:
            assert msgs == []


def test_acceptor_reports_accepted_values_from_the_prepare_slot() -> None:
    n = Node(CFG3, 0)
    v = (cmd(7, 1),)
    n.step(1, Accept(Ballot(1, 1), 3, v, -1))
    n.step(1, Accept(Ballot(1, 1), 8, NOOP, -1))
    rd = n.ready()
    assert AcceptRec(3, Ballot(1, 1), v) in rd.records
    assert [e.dst for e in rd.messages if isinstance(e.msg, Accepted)] == [1, 1], (
        "Accepted goes only to the distinguished learner, the ballot's node"
    )
    n.step(2, Prepare(Ballot(2, 2), 5))
    promise = n.ready().messages[0].msg
    assert isinstance(promise, Promise)
    assert promise.entries == (AcceptedEntry(8, Ballot(1, 1), NOOP),)


def test_acceptor_rejects_two_values_at_one_ballot() -> None:
    n = Node(CFG3, 0)
    n.step(1, Accept(Ballot(1, 1), 0, (cmd(1, 1),), -1))
    with pytest.raises(SafetyViolation):
        n.step(1, Accept(Ballot(1, 1), 0, (cmd(1, 2),), -1))


def test_acceptor_state_survives_restart_from_records() -> None:
    n = Node(CFG3, 0)
    n.step(1, Prepare(Ballot(3, 1), 0))
    n.step(1, Accept(Ballot(3, 1), 0, (cmd(1, 1),), -1))
    recs = n.ready().records
    again = Node(CFG3, 0, DurableState.fold(recs))
    again.step(2, Prepare(Ballot(2, 2), 0))
    assert [type(e.msg) for e in again.ready().messages] == [Nack]
    assert again.acceptor is not None
    assert again.acceptor.accepted[0] == (Ballot(3, 1), (cmd(1, 1),))


# ---------------------------------------------------------------- proposer


def test_promise_with_an_accepted_value_makes_the_leader_propose_it() -> None:
    n = Node(CFG3, 0)
    assert n.proposer is not None
    n.proposer.start_election()
    b = n.ready().messages[0].msg.ballot  # type: ignore[union-attr]
    v_old, v_new = (cmd(1, 1, value="old"),), (cmd(2, 1, value="newer"),)
    n.step(1, Promise(b, 1, 0, (AcceptedEntry(0, Ballot(0, 1), v_old),), 1))
    n.step(2, Promise(b, 2, 0, (AcceptedEntry(0, Ballot(0, 2), v_new),), 1))
    assert n.is_leader
    accepts = [e.msg for e in n.ready().messages if isinstance(e.msg, Accept)]
    assert accepts and all(a.slot == 0 and a.value == v_new for a in accepts), (
        "the value of the highest-ballot vote must be re-proposed"
    )


def test_gaps_below_the_highest_reported_slot_become_noops() -> None:
    n = Node(CFG3, 0)
    assert n.proposer is not None
    n.proposer.start_election()
    b = n.ready().messages[0].msg.ballot  # type: ignore[union-attr]
    v = (cmd(1, 1),)
    n.step(1, Promise(b, 1, 0, (AcceptedEntry(2, Ballot(1, 1), v),), 1))
    n.step(2, Promise(b, 2, 0, (), 1))
    accepts = {e.msg.slot: e.msg.value for e in n.ready().messages if isinstance(e.msg, Accept)}
    assert accepts == {0: NOOP, 1: NOOP, 2: v}


def test_leader_never_proposes_below_a_reported_floor() -> None:
    n = Node(CFG3, 0)
    assert n.proposer is not None
    n.proposer.start_election()
    b = n.ready().messages[0].msg.ballot  # type: ignore[union-attr]
    n.step(1, Promise(b, 1, 10, (), 1))  # slots < 10 are decided and trimmed at acceptor 1
    n.step(2, Promise(b, 2, 0, (), 1))
    rd = n.ready()
    assert not [e for e in rd.messages if isinstance(e.msg, Accept) and e.msg.slot < 10]
    assert [e.dst for e in rd.messages if isinstance(e.msg, CatchupRequest)] == [1]


def test_duplicated_accepted_is_counted_once() -> None:
    cfg = ClusterConfig(n_acceptors=5)
    n = Node(cfg, 0)
    assert n.proposer is not None
    n.proposer.start_election()
    b = n.ready().messages[0].msg.ballot  # type: ignore[union-attr]
    for a in range(3):
        n.step(a, Promise(b, a, 0, (), 1))
    n.ready()
    for a in range(3):
        n.step(a, Accepted(b, 0, a))  # the new leader's no-op in slot 0
    assert n.applied == 0
    n.client_request(ClientRequest(9, 1, Kind.WRITE, encode_op("put", "k", "v")))
    assert next(e.msg.slot for e in n.ready().messages if isinstance(e.msg, Accept)) == 1
    for _ in range(4):
        n.step(1, Accepted(b, 1, 1))
        n.step(2, Accepted(b, 1, 2))
    assert n.applied == 0, "two acceptors of five, however often they repeat, are no quorum"
    n.step(3, Accepted(b, 1, 3))
    assert n.applied == 1
    rd = n.ready()
    assert [r.status for r in rd.replies] == [Status.OK]


def test_accepted_from_an_old_ballot_is_ignored() -> None:
    n = Node(CFG3, 0)
    b = elect(n)
    n.ready()
    n.client_request(ClientRequest(9, 1, Kind.WRITE, encode_op("put", "k", "v")))
    n.ready()
    old = Ballot(b.round - 1, 0) if b.round > 1 else Ballot(0, 0)
    n.step(1, Accepted(old, 0, 1))
    n.step(2, Accepted(old, 0, 2))
    assert n.applied == -1


def test_higher_ballot_deposes_the_leader_and_pending_clients_are_redirected() -> None:
    n = Node(CFG3, 0)
    b = elect(n)
    n.ready()
    n.client_request(ClientRequest(9, 1, Kind.WRITE, encode_op("put", "k", "v")))
    n.ready()
    n.step(1, Nack(b, Ballot(b.round + 3, 2), 1))
    assert not n.is_leader
    rd = n.ready()
    assert [(r.seq, r.status) for r in rd.replies] == [(1, Status.NOT_LEADER)]


def leading(cfg: ClusterConfig) -> tuple[Node, Ballot]:
    """Node 0 elected by acceptors 1 and 2, its no-op in slot 0 decided."""
    n = Node(cfg, 0)
    assert n.proposer is not None
    n.proposer.start_election()
    b = n.ready().messages[0].msg.ballot  # type: ignore[union-attr]
    for a in (1, 2):
        n.step(a, Promise(b, a, 0, (), 1))
    for a in (1, 2):
        n.step(a, Accepted(b, 0, a))  # the new leader's no-op
    n.ready()
    return n, b


def test_batching_and_the_pipeline_window() -> None:
    cfg = ClusterConfig(n_acceptors=3, window=2, max_batch=3)
    n, b = leading(cfg)
    for seq in range(1, 11):
        n.client_request(ClientRequest(5, seq, Kind.WRITE, encode_op("put", "k", str(seq))))
    accepts = [e.msg for e in n.ready().messages if isinstance(e.msg, Accept) and e.dst == 1]
    # The first two commands go out at once (no waiting to fill a batch); the
    # window is then full, and the other eight queue.
    assert [len(a.value) for a in accepts] == [1, 1], "two slots in flight"
    n.step(1, Accepted(b, 1, 1))
    n.step(2, Accepted(b, 1, 2))
    more = [e.msg for e in n.ready().messages if isinstance(e.msg, Accept) and e.dst == 1]
    assert [(a.slot, len(a.value)) for a in more] == [(3, 3)]


def test_a_decision_no_accept_carries_is_told_at_once_by_heartbeat() -> None:
    """A put decided with nothing else in flight: the leader tells every node
    the new commit point in the same Ready (a Heartbeat), as raft's leader
    does, instead of leaving followers (and the watches they serve) to learn
    it from the next Accept or periodic Heartbeat (30 ms on a network node:
    a watch on a follower saw events 17 ms late)."""
    cfg = ClusterConfig(n_acceptors=3, roles={3: Role.LEARNER})
    n, b = leading(cfg)
    n.client_request(ClientRequest(5, 1, Kind.WRITE, encode_op("put", "k", "v")))
    n.ready()
    n.step(1, Accepted(b, 1, 1))
    n.step(2, Accepted(b, 1, 2))
    assert n.applied == 1
    hbs = [(e.dst, e.msg.commit) for e in n.ready().messages if isinstance(e.msg, Heartbeat)]
    assert sorted(hbs) == [(0, 1), (1, 1), (2, 1), (3, 1)], "every node, the learner too"


def test_read_waits_for_a_quorum_probe_sent_after_it_arrived() -> None:
    n = Node(CFG3, 0)
    b = elect(n)
    n.step(0, Accepted(b, 0, 0))  # the new leader's no-op is decided
    n.step(1, Accepted(b, 0, 1))
    assert n.applied == 0
    n.ready()
    n.client_request(ClientRequest(9, 1, Kind.READ, encode_op("get", "k")))
    rd = n.ready()
    hbs = [e.msg for e in rd.messages if isinstance(e.msg, Heartbeat)]
    assert hbs, "a read triggers a probe"
    probe = hbs[0].probe
    assert not rd.replies
    n.step(1, HeartbeatAck(b, probe - 1, 1, b))
    n.step(2, HeartbeatAck(b, probe - 1, 2, b))
    assert not n.ready().replies, "acks to an older probe do not confirm"
    n.step(1, HeartbeatAck(b, probe, 1, b))
    assert not n.ready().replies, "one ack of three is no quorum"
    n.step(2, HeartbeatAck(b, probe, 2, b))
    assert [r.status for r in n.ready().replies] == [Status.OK]


# ---------------------------------------------------------------- learner / replica


def test_follower_learns_from_piggybacked_commit_and_its_own_vote() -> None:
    n = Node(CFG3, 1)
    b = Ballot(1, 0)
    v = (cmd(3, 1),)
    n.step(0, Accept(b, 0, v, -1))
    assert n.applied == -1
    n.step(0, Heartbeat(b, 0, 1))
    assert n.applied == 0
    assert DecideRec(0, v) in n.ready().records


def test_follower_does_not_learn_from_a_vote_at_another_ballot() -> None:
    n = Node(CFG3, 1)
    n.step(0, Accept(Ballot(1, 0), 0, (cmd(3, 1),), -1))
    n.step(2, Heartbeat(Ballot(2, 2), 0, 1))
    assert n.applied == -1
    n.ready()
    for _ in range(CFG3.retransmit_ticks):
        n.tick()
    asks = [e for e in n.ready().messages if isinstance(e.msg, CatchupRequest)]
    assert asks and asks[0].dst == 2 and asks[0].msg.from_slot == 0


def test_learner_detects_two_decisions_for_one_slot() -> None:
    n = Node(CFG3, 1)
    n.step(2, CatchupReply(None, (DecidedEntry(0, (cmd(1, 1),)),), 0))
    with pytest.raises(SafetyViolation):
        n.step(2, CatchupReply(None, (DecidedEntry(0, (cmd(1, 2),)),), 0))


def test_sessions_make_duplicates_exactly_once() -> None:
    n = Node(ClusterConfig(n_acceptors=1), 0)
    c = Command(4, 1, encode_op("cas", "k", None, "x"))
    n.step(0, CatchupReply(None, (DecidedEntry(0, (c,)), DecidedEntry(1, (c,))), 1))
    assert n.applied == 1
    assert n.replica is not None
    assert n.replica.sm.query(encode_op("get", "k")) == b'{"ok":true,"value":"x"}'
    assert n.replica.sessions[4].result == b'{"ok":true,"value":true}', (
        "the first answer is kept; the duplicate did not re-run the cas"
    )


def test_catchup_serves_snapshot_then_entries() -> None:
    cfg = ClusterConfig(n_acceptors=1, snapshot_interval=4, log_retain=1)
    n = Node(cfg, 0)
    entries = tuple(DecidedEntry(s, (cmd(1, s + 1, value=str(s)),)) for s in range(10))
    n.step(0, CatchupReply(None, entries, 9))
    n.ready()
    assert n.replica is not None and n.replica.snapshot is not None
    snap_slot = n.replica.snapshot.slot
    n.step(0, CatchupRequest(0))
    reply = n.ready().messages[0].msg
    assert isinstance(reply, CatchupReply)
    assert reply.snapshot is not None and reply.snapshot.slot == snap_slot
    assert [e.slot for e in reply.entries] == list(range(snap_slot + 1, 10))
    fresh = Node(cfg, 0)
    fresh.step(0, reply)
    assert fresh.applied == 9
    assert fresh.replica is not None
    assert fresh.replica.sm.snapshot() == n.replica.sm.snapshot()


def test_restart_replays_the_durable_log() -> None:
    n = Node(ClusterConfig(n_acceptors=1), 0)
    n.step(0, CatchupReply(None, (DecidedEntry(0, (cmd(1, 1, value="a"),)),), 0))
    recs = n.ready().records
    again = Node(ClusterConfig(n_acceptors=1), 0, DurableState.fold(recs))
    assert again.applied == 0
    assert again.replica is not None and again.replica.sm.query(encode_op("get", "k")) == (
        b'{"ok":true,"value":"a"}'
    )


# ---------------------------------------------------------------- roles apart


def test_roles_on_separate_nodes() -> None:
    # Node 0: acceptor only; nodes 1, 2: acceptors+learners; node 3: proposer+learner;
    # node 4: learner only.
    cfg = ClusterConfig(
        n_acceptors=3,
        roles={
            0: Role.ACCEPTOR,
            1: Role.ACCEPTOR | Role.LEARNER,
            2: Role.ACCEPTOR | Role.LEARNER,
            3: Role.PROPOSER | Role.LEARNER,
            4: Role.LEARNER,
        },
    )
    nodes = {i: Node(cfg, i, seed=i) for i in cfg.node_ids}
    assert nodes[0].proposer is None and nodes[0].replica is None
    assert nodes[4].acceptor is None and nodes[4].proposer is None
    assert cfg.proposer_ids == (3,)
    prop = nodes[3]
    assert prop.proposer is not None
    prop.proposer.start_election()
    queue = list(prop.ready().messages)
    replies = []

    def pump(steps: int) -> None:
        nonlocal queue
        for _ in range(steps):
            if not queue:
                for node in nodes.values():
                    node.tick()
                    rd = node.ready()
                    queue += rd.messages
                    replies.extend(rd.replies)
                continue
            env = queue.pop(0)
            target = nodes[env.dst]
            target.step(env.src, env.msg)
            rd = target.ready()
            queue += rd.messages
            replies.extend(rd.replies)

    pump(50)
    assert prop.is_leader
    prop.client_request(ClientRequest(1, 1, Kind.WRITE, encode_op("put", "k", "v")))
    queue += prop.ready().messages
    pump(300)
    assert [r.status for r in replies if r.client_id == 1] == [Status.OK]
    assert nodes[4].applied >= 0 and nodes[1].applied >= 0, "pure learners catch up too"


def test_config_validation() -> None:
    from paxosrsm.types import ProtocolError

    with pytest.raises(ProtocolError, match="odd"):
        ClusterConfig(n_acceptors=4)
    with pytest.raises(ProtocolError, match="acceptor"):
        ClusterConfig(n_acceptors=3, roles={5: Role.ACCEPTOR})
    with pytest.raises(ProtocolError, match="learner"):
        ClusterConfig(n_acceptors=3, roles={4: Role.PROPOSER})
    with pytest.raises(ProtocolError):
        ClusterConfig(n_acceptors=3, window=0)


def test_installing_a_snapshot_applies_decided_slots_just_past_it() -> None:
    # Regression (simulator seed 7): slot 6 was decided before slot 5 arrived,
    # and slot 5 then came inside a snapshot; slot 6 must be applied at once.
    cfg = ClusterConfig(n_acceptors=1, snapshot_interval=3, log_retain=0)
    src = Node(cfg, 0)
    src.step(0, CatchupReply(None, tuple(DecidedEntry(s, (cmd(1, s + 1),)) for s in range(6)), 5))
    src.ready()
    assert src.replica is not None and src.replica.snapshot is not None
    assert src.replica.snapshot.slot == 5
    lagger = Node(cfg, 0)
    lagger.step(0, CatchupReply(None, (DecidedEntry(6, (cmd(2, 1),)),), 6))
    assert lagger.applied == -1
    lagger.step(0, CatchupReply(src.replica.snapshot, (), 5))
    assert lagger.applied == 6


def test_accept_below_the_floor_is_answered_with_the_decision() -> None:
    cfg = ClusterConfig(n_acceptors=3, snapshot_interval=2, log_retain=5)
    n = Node(cfg, 1)
    entries = tuple(DecidedEntry(s, (cmd(1, s + 1),)) for s in range(4))
    n.step(2, CatchupReply(None, entries, 3))
    n.ready()
    assert n.acceptor is not None and n.acceptor.floor > 0
    n.step(0, Accept(Ballot(7, 0), 0, NOOP, -1))
    rd = n.ready()
    assert not [e for e in rd.messages if isinstance(e.msg, Accepted)], "no vote below the floor"
    (reply,) = [e for e in rd.messages if isinstance(e.msg, CatchupReply)]
    assert reply.dst == 0 and reply.msg.entries[0] == entries[0]  # type: ignore[union-attr]


def test_leader_steps_down_when_a_snapshot_covers_its_in_flight_slots() -> None:
    cfg = ClusterConfig(n_acceptors=3, snapshot_interval=2, log_retain=0)
    n = Node(cfg, 0)
    b = elect(n)
    n.ready()
    n.client_request(ClientRequest(9, 1, Kind.WRITE, encode_op("put", "k", "mine")))
    n.ready()
    donor = Node(cfg, 1)
    donor.step(2, CatchupReply(None, tuple(DecidedEntry(s, (cmd(3, s + 1),)) for s in range(4)), 3))
    assert donor.replica is not None and donor.replica.snapshot is not None
    n.step(1, CatchupReply(donor.replica.snapshot, (), 3))
    assert not n.is_leader, "cannot verify slot 0 was decided with our value: step down"
    assert b.node == 0


def test_a_learner_that_hears_no_leader_pulls_from_a_proposer() -> None:
    """A learner-only node introduces itself: after election_ticks without a
    leader it asks a proposer (never another learner-only node, which may not
    run) for what follows its log; a heard leader stops the pulling and
    becomes the catch-up target."""
    cfg = ClusterConfig(3, roles={3: Role.LEARNER, 4: Role.LEARNER})
    ln = Node(cfg, 3, seed=7)
    ln.ready()
    pulls = []
    for _ in range(5 * cfg.election_ticks):
        ln.tick()
        pulls += [e for e in ln.ready().messages if isinstance(e.msg, CatchupRequest)]
    assert len(pulls) == 5
    assert {e.dst for e in pulls} <= {0, 1, 2} and all(e.msg.from_slot == 0 for e in pulls)
    b = Ballot(4, 1)
    ln.step(1, Heartbeat(b, 9, 1))
    assert ln.leader_hint == 1
    sent = []
    for _ in range(cfg.election_ticks - 1):
        ln.tick()
        sent += ln.ready().messages
    # Behind the leader's commit: it fetches from the leader, not at random.
    assert sent and {e.dst for e in sent} == {1}
