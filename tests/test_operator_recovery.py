"""Quorum-loss recovery's decisions (operator/paxos_operator/recovery.py), pure:
a forced new cluster goes Exporting -> Rebuilding -> Done, only when asked by
name, never while the cluster is Available, from the member with the most
state, and it says what may be lost."""

from __future__ import annotations

from typing import Any

from paxos_operator import recovery as r

ASK = {r.REQUEST: "px"}


def m(applied: int, decided: int | None = None, recovering: bool = False) -> dict[str, Any]:
    d = applied if decided is None else decided
    return {"node_id": 0, "roles": ["acceptor"], "applied": applied, "decided": d,
            "recovering": recovering}  # fmt: skip


LOST = {"px-acceptor-0": m(120, 130), "px-acceptor-1": m(-1, recovering=True),
        "px-acceptor-2": m(-1, recovering=True)}  # fmt: skip


def url(pod: str) -> str:
    return f"http://{pod}:8080"


def test_the_quorum_loss_is_reported_with_the_way_out() -> None:
    why = r.quorum_lost("px", 3, LOST)
    assert why is not None and "px-acceptor-1, px-acceptor-2" in why and "only 1 hold" in why
    assert f"kubectl annotate pxc px {r.REQUEST}=px" in why
    one_lost = {**LOST, "px-acceptor-1": m(100)}
    assert r.quorum_lost("px", 3, one_lost) is None  # it recovers by itself
    assert r.quorum_lost("px", 3, {k: None for k in LOST}) is None  # cannot tell


def test_nothing_without_the_name_typed_back_or_while_available() -> None:
    assert r.plan("px", {}, None, LOST, False, None, url).action == "none"
    wrong = r.plan("px", {r.REQUEST: "yes"}, None, LOST, False, None, url)
    assert wrong.action == "refuse" and "type the cluster's name" in wrong.event[1]  # type: ignore[index]
    # refused once, not again every cycle
    assert r.plan("px", {r.REQUEST: "yes"}, wrong.recovery, LOST, False, None, url).action == "none"
    up = r.plan("px", ASK, None, LOST, True, None, url)
    assert up.action == "refuse" and "Available" in up.event[1]  # type: ignore[index]


def test_a_forced_new_cluster_from_the_member_with_the_most_state() -> None:
    members = {**LOST, "px-learner-0": {**m(125, 130), "roles": ["learner"]}}
    s = r.plan("px", ASK, None, members, False, None, url)
    assert s.action == "export" and s.source_url == "http://px-learner-0:8080"
    rec = s.recovery
    assert rec is not None and rec["phase"] == "Exporting" and rec["epoch"] == 1
    assert rec["sourceApplied"] == 125 and "after slot 125" in rec["mayBeLost"]
    assert "at least 5 slots" in rec["mayBeLost"]
    assert r.plan("px", ASK, rec, members, False, None, url).action == "wait"
    running = {"state": "running", "report": None, "message": ""}
    assert r.plan("px", ASK, rec, members, False, running, url).action == "wait"
    report = {"file": "px-recovery-20261207-100000.pxb", "slot": 125, "revision": 90,
              "file_sha256": "ab"}  # fmt: skip
    s2 = r.plan("px", ASK, rec, members, False, {"state": "succeeded", "report": report}, url)
    assert s2.action == "rebuild" and s2.recovery is not None
    assert s2.recovery["restore"] == {"claimName": "px-recovery-backups",
                                      "file": "px-recovery-20261207-100000.pxb"}  # fmt: skip
    assert r.cluster_id("ns", "px", "u", s2.recovery) == "ns/px/u/r1"
    assert r.cluster_id("ns", "px", "u", rec) == "ns/px/u"  # not before the rebuild
    assert r.plan("px", ASK, s2.recovery, {}, False, None, url).action == "wait"
    done = r.plan("px", ASK, s2.recovery, {}, True, None, url)
    assert done.action == "done" and done.recovery is not None
    assert "may have been lost: every write decided after slot 125" in done.recovery["message"]
    assert r.cluster_id("ns", "px", "u", done.recovery) == "ns/px/u/r1"  # kept for good
    # Done, annotation removed by the operator: nothing more; a second one is epoch 2.
    assert r.plan("px", {}, done.recovery, LOST, False, None, url).action == "none"
    again = r.plan("px", ASK, done.recovery, LOST, False, None, url)
    assert again.action == "export" and again.recovery["epoch"] == 2  # type: ignore[index]


def test_a_failed_export_stops_until_asked_again_and_no_state_means_a_backup() -> None:
    rec = r.plan("px", ASK, None, LOST, False, None, url).recovery
    bad_job = {"state": "failed", "report": None, "message": "503 no backup"}
    failed = r.plan("px", ASK, rec, LOST, False, bad_job, url)
    assert failed.action == "failed" and "503 no backup" in failed.event[1]  # type: ignore[index]
    assert r.plan("px", ASK, failed.recovery, LOST, False, None, url).action == "none"
    cleared = r.plan("px", {}, failed.recovery, LOST, False, None, url)
    assert cleared.recovery is not None and cleared.recovery["phase"] == "Abandoned"
    assert r.plan("px", ASK, cleared.recovery, LOST, False, None, url).action == "export"
    empty = {k: m(-1, recovering=True) for k in LOST}
    none = r.plan("px", ASK, None, empty, False, None, url)
    assert none.action == "refuse" and r.FROM in none.event[1]  # type: ignore[index]
    fb = r.plan("px", {**ASK, r.FROM: "nightly-backups/nightly-20261207-030000.pxb"}, None,
                empty, False, None, url)  # fmt: skip
    assert fb.action == "rebuild" and fb.recovery is not None
    assert fb.recovery["restore"]["claimName"] == "nightly-backups"
    bad = r.plan("px", {**ASK, r.FROM: "../x"}, None, empty, False, None, url)
    assert bad.action == "refuse"
