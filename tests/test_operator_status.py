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


NAMES = ["a-0", "a-1", "a-2"]


def pod(*, outdated: bool = True, ready: bool = True, ready_for: float | None = 60.0,
        deleting: bool = False, acceptor: bool = True) -> dict[str, object]:  # fmt: skip
    return {"outdated": outdated, "acceptor": acceptor, "deleting": deleting, "ready": ready,
            "ready_for": ready_for if ready else None}  # fmt: skip


def test_rolling_upgrade_order_unhealthy_then_followers_then_leader() -> None:
    pods = {n: pod() for n in NAMES}
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2)}
    assert next_restart(pods, members, NAMES).pod == "a-0"  # a follower before the leader
    pods["a-0"]["outdated"] = False
    assert next_restart(pods, members, NAMES).pod == "a-2"
    pods["a-2"]["outdated"] = False
    assert next_restart(pods, members, NAMES).pod == "a-1"  # the leader last
    pods["a-1"]["outdated"] = False
    plan = next_restart(pods, members, NAMES)
    assert plan.pod is None and not plan.updating


def test_never_restart_without_a_quorum_left() -> None:
    pods = {n: pod() for n in NAMES}
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": None}  # a-2 is down
    # a-2 (unhealthy) may go first: the others are a majority and healthy.
    assert next_restart(pods, members, NAMES).pod == "a-2"
    pods["a-2"]["outdated"] = False
    # a-2 is still down: restarting anyone else would leave one of three.
    plan = next_restart(pods, members, NAMES)
    assert plan.pod is None and plan.updating and "a-2 does not answer" in plan.why
    # A member that lags is not "caught up": wait for it.
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2, applied=10)}
    for v in members.values():
        v["decided"] = 1000
    members["a-0"]["applied"] = members["a-1"]["applied"] = 1000
    plan = next_restart(pods, members, NAMES)
    assert plan.pod is None and "a-2 is catching up" in plan.why
    members["a-2"]["applied"] = 990
    assert next_restart(pods, members, NAMES).pod == "a-0"


def test_the_api_readiness_and_a_settle_period_are_both_required() -> None:
    """Issue 10: a member that answers ready, but whose pod is not Ready in
    the API (its probe has not passed yet, or times out under load), is down."""
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2)}
    pods = {"a-0": pod(outdated=False, ready=False), "a-1": pod(), "a-2": pod()}
    plan = next_restart(pods, members, NAMES)
    assert plan.pod is None and "a-0 is not Ready" in plan.why
    # Ready for 2 s of the 5 s settle period: still waiting.
    pods["a-0"] = pod(outdated=False, ready_for=2.0)
    plan = next_restart(pods, members, NAMES, settle=5.0)
    assert plan.pod is None and "a-0 is settling" in plan.why
    pods["a-0"] = pod(outdated=False, ready_for=6.0)
    assert next_restart(pods, members, NAMES, settle=5.0).pod == "a-2"


def test_a_member_with_no_pod_at_all_is_down() -> None:
    """Between the old pod's exit and the new pod's creation the name has no
    pod: with 5 acceptors the 4 others used to count as "every other"."""
    names = [f"a-{i}" for i in range(5)]
    members = {n: m(i, leader=i == 1) for i, n in enumerate(names)}
    pods = {n: pod() for n in names if n != "a-0"}
    plan = next_restart(pods, members, names)
    assert plan.pod is None and "a-0 has no pod" in plan.why


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
    pods = {"a-0": pod(deleting=True), "a-1": pod(), "a-2": pod()}
    assert next_restart(pods, members, NAMES).pod is None
    # Its replacement (new revision, not ready yet) blocks the next one too.
    pods["a-0"] = pod(outdated=False, ready=False)
    assert next_restart(pods, {**members, "a-0": None}, NAMES).pod is None
    pods["a-0"] = pod(outdated=False)
    assert next_restart(pods, members, NAMES).pod == "a-2"


def test_learners_restart_one_at_a_time_and_never_beside_a_down_acceptor() -> None:
    names = [*NAMES, "l-0", "l-1"]
    lrn = {**m(3), "roles": ["learner"]}
    members = {"a-0": m(0), "a-1": m(1, leader=True), "a-2": m(2), "l-0": lrn, "l-1": lrn}
    pods = {n: pod(outdated=False) for n in NAMES}
    pods |= {"l-0": pod(acceptor=False), "l-1": pod(acceptor=False)}
    assert next_restart(pods, members, names).pod == "l-0"
    pods["l-0"] = pod(acceptor=False, outdated=False, ready=False)
    plan = next_restart(pods, members, names)
    assert plan.pod is None and "l-0 is not Ready" in plan.why
    pods["l-0"] = pod(acceptor=False, outdated=False)
    pods["a-2"] = pod(outdated=False, ready=False)
    assert next_restart(pods, members, names).pod is None


def test_a_pod_whose_containers_exited_is_released_and_no_other() -> None:
    from paxos_operator.status import pods_to_release

    pods = [
        {"name": "a-0", "deleting": True, "containers": [5.0]},  # exited 5 s ago
        {"name": "a-1", "deleting": True, "containers": [1.0]},  # just exited: wait
        {"name": "a-2", "deleting": True, "containers": [9.0, None]},  # one still running
        {"name": "a-3", "deleting": True, "containers": []},  # no status: unknown
        {"name": "a-4", "deleting": False, "containers": [60.0]},  # exited, not deleted
    ]
    assert pods_to_release(pods) == ["a-0"]
    assert pods_to_release(pods, after=0.5) == ["a-0", "a-1"]


def test_a_pod_whose_port_refuses_past_the_stop_deadline_is_released() -> None:
    """The kubelet's report of exited containers can lag by tens of seconds;
    a member that has refused connections for longer than its stop deadline
    is gone as surely."""
    from paxos_operator.status import pods_to_release

    pods = [
        {"name": "a-0", "deleting": True, "containers": [None], "refused_for": 8.0},
        {"name": "a-1", "deleting": True, "containers": [None], "refused_for": 2.0},
        {"name": "a-2", "deleting": True, "containers": [None], "refused_for": None},
        {"name": "a-3", "deleting": False, "containers": [None], "refused_for": 60.0},
    ]
    assert pods_to_release(pods) == ["a-0"]


def test_the_kubelets_reports_of_an_exited_container() -> None:
    import datetime as dt

    from paxos_operator.status import GONE, exited_for

    now = dt.datetime(2026, 12, 6, 17, 25, 40, tzinfo=dt.UTC)
    fin = dt.datetime(2026, 12, 6, 17, 25, 30, tzinfo=dt.UTC)
    assert exited_for({"terminated": {"finished_at": fin, "exit_code": 0}}, None, now) == 10.0
    # Seen on 1.20 when the kubelet removed the container before reporting it:
    unknown = {"terminated": {"exit_code": 137, "finished_at": None,
                              "reason": "ContainerStatusUnknown", "message": "The container "
                              "could not be located when the pod was deleted."}}  # fmt: skip
    assert exited_for({"waiting": {"reason": "PodInitializing"}}, unknown, now) == GONE
    # Running, or waiting to start for the first time: it may run.
    assert exited_for({"running": {"started_at": fin}}, None, now) is None
    assert exited_for({"waiting": {"reason": "PodInitializing"}}, {}, now) is None
    assert exited_for(None, None, now) is None


def test_a_nospace_alarm_is_a_condition() -> None:
    def member(nid: int, **kw: object) -> dict[str, object]:
        return {"node_id": nid, "ready": True, "roles": ["acceptor"], "leader": 0,
                "is_leader": nid == 0, "applied": 5, "decided": 5, **kw}  # fmt: skip

    storage = {"alarms": [1], "disk_full": False, "used_bytes": 123}
    st = summarize(3, {"a-0": member(0, storage=storage), "a-1": member(1), "a-2": None}, 1, {})
    cond = next(c for c in st["conditions"] if c["type"] == "NoSpace")
    assert cond["status"] == "True" and cond["reason"] == "QuotaExceeded"
    assert "[1]" in cond["message"] and st["members"][0]["storageUsedBytes"] == 123
    st = summarize(3, {"a-0": member(0), "a-1": member(1), "a-2": member(2)}, 1, st)
    cond = next(c for c in st["conditions"] if c["type"] == "NoSpace")
    assert cond["status"] == "False"
