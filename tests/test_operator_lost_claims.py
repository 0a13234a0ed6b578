"""Which member pods the operator deletes because their PVC was deleted."""

from __future__ import annotations

from paxos_operator.status import pods_stuck_on_lost_claims


def pod(name: str, phase: str = "Pending", *, deleting: bool = False) -> dict[str, object]:
    return {"name": name, "phase": phase, "deleting": deleting, "claims": [f"data-{name}"]}


def test_a_pending_pod_on_a_terminating_or_missing_claim_is_recreated() -> None:
    pods = [pod("a-0"), pod("a-1"), pod("a-2", "Running")]
    claims = {"data-a-0": True, "data-a-2": False}  # a-0 terminating, a-1 missing
    assert pods_stuck_on_lost_claims(pods, claims) == ["a-0", "a-1"]


def test_running_deleting_and_healthy_pods_are_left_alone() -> None:
    claims = {"data-a-0": True, "data-a-1": False}
    # A running member keeps its (terminating) claim until it is deleted itself.
    assert pods_stuck_on_lost_claims([pod("a-0", "Running")], claims) == []
    # Already being deleted: nothing more to do.
    assert pods_stuck_on_lost_claims([pod("a-0", deleting=True)], claims) == []
    # Pending on a claim that is there (e.g. waiting for its volume to bind).
    assert pods_stuck_on_lost_claims([pod("a-1")], claims) == []
    # No claim at all.
    assert pods_stuck_on_lost_claims([{"name": "x", "phase": "Pending", "claims": []}], {}) == []
