"""Status summaries and the order of a rolling upgrade, without a cluster."""

from __future__ import annotations

from paxos_operator.status import next_restart, summarize


def m(nid: int, *, leader: bool = False, ready: bool = True, applied: int = 10,
      recovering: bool = False) -> dict[str, object]:  # fmt: skip
    return {"node_id": nid, "roles": ["proposer", "acceptor", "learner"], "ready": ready,
            "is_leader": leader, "leader": 1, "decided": 10, "applied": applied,
            "recovering": recovering, "ballot": "3.1"}  # fmt: skip


def test_available_with_a_quorum_and_conditions() -> None:
    st = summarize(3, {"a-0": m(0), "a-1": m(1, leader=True), "a-2": None}, 4, {}, now="T0")
    assert st["phase"] == "Available" and st["readyAcceptors"] == 2 and st["leader"] == "a-1"
    c = {x["type"]: x for x in st["conditions"]}
    assert c["Available"]["status"] == "True" and c["Degraded"]["status"] == "True"
    assert c["Recovering"]["status"] == "False" and st["everAvailable"]
    # lastTransitionTime only moves when a condition flips.
    st2 = summarize(3, {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2)}, 4, st, now="T1")
    c2 = {x["type"]: x for x in st2["conditions"]}
    assert c2["Available"]["lastTransitionTime"] == "T0"
    assert c2["Degraded"]["lastTransitionTime"] == "T1" and c2["Degraded"]["status"] == "False"


def test_no_quorum_and_recovering() -> None:
    st = summarize(3, {"a-0": m(0, recovering=True, ready=False), "a-1": None, "a-2": None}, 1, {})
    c = {x["type"]: x for x in st["conditions"]}
    assert st["phase"] == "Degraded" and c["Available"]["status"] == "False"
    assert c["Recovering"]["status"] == "True" and "a-0" in c["Recovering"]["message"]


def test_rolling_upgrade_order_unhealthy_then_followers_then_leader() -> None:
    pods = {f"a-{i}": {"outdated": True, "acceptor": True} for i in range(3)}
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2)}
    assert next_restart(pods, members, 3) == "a-0"  # a follower before the leader
    pods["a-0"]["outdated"] = False
    assert next_restart(pods, members, 3) == "a-2"
    pods["a-2"]["outdated"] = False
    assert next_restart(pods, members, 3) == "a-1"  # the leader last


def test_never_restart_without_a_quorum_left() -> None:
    pods = {f"a-{i}": {"outdated": True, "acceptor": True} for i in range(3)}
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": None}  # a-2 is down
    # a-2 (unhealthy) may go first: the others are a majority and healthy.
    assert next_restart(pods, members, 3) == "a-2"
    pods["a-2"]["outdated"] = False
    # a-2 is still down: restarting anyone else would leave one of three.
    assert next_restart(pods, members, 3) is None
    # A member that lags is not "caught up": wait for it.
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2, applied=10)}
    for v in members.values():
        v["decided"] = 1000
    members["a-0"]["applied"] = members["a-1"]["applied"] = 1000
    assert next_restart(pods, members, 3) is None
    members["a-2"]["applied"] = 990
    assert next_restart(pods, members, 3) == "a-0"


def test_learners_are_counted_apart_from_acceptors() -> None:
    lrn = {**m(3), "roles": ["learner"]}
    st = summarize(3, {"a-0": m(0), "a-1": m(1, leader=True), "l-0": lrn,
                       "l-1": {**lrn, "ready": False}}, 1, {}, now="T")  # fmt: skip
    assert st["readyAcceptors"] == 2 and st["readyLearners"] == 1
    assert st["phase"] == "Available"  # learners never count toward a quorum


def test_rolling_upgrade_never_picks_or_leans_on_a_pod_being_deleted() -> None:
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2)}
    # a-0 is terminating (restarted a moment ago) but still answers as ready:
    # it is not chosen again, and nothing else restarts until it is back.
    pods = {"a-0": {"outdated": True, "acceptor": True, "deleting": True},
            "a-1": {"outdated": True, "acceptor": True},
            "a-2": {"outdated": True, "acceptor": True}}  # fmt: skip
    assert next_restart(pods, members, 3) is None
    # Its replacement (new revision, not ready yet) blocks the next one too.
    pods["a-0"] = {"outdated": False, "acceptor": True}
    assert next_restart(pods, {**members, "a-0": None}, 3) is None
    assert next_restart(pods, members, 3) == "a-2"
