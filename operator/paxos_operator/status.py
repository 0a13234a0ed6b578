"""Pure status logic: members' /v1/status answers to the PaxosCluster status,
and the choice of the next member to restart in a rolling upgrade."""

from __future__ import annotations

import datetime as dt
from typing import Any

Obj = dict[str, Any]


def _cond(ctype: str, ok: bool, reason: str, message: str, generation: int, now: str,
          old: list[Obj]) -> Obj:  # fmt: skip
    status = "True" if ok else "False"
    prev = next((c for c in old if c.get("type") == ctype), None)
    # lastTransitionTime moves only when the status flips (API conventions).
    ltt = prev["lastTransitionTime"] if prev and prev.get("status") == status else now
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": ltt,
    }


def summarize(
    acceptors: int,
    members: dict[str, Obj | None],
    generation: int,
    old_status: Obj,
    *,
    updating: bool = False,
    stuck: list[str] | None = None,
    now: str | None = None,
) -> Obj:
    """``members``: pod name -> its /v1/status (None: unreachable)."""
    now = now or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    up = {k: v for k, v in members.items() if v is not None and "node_id" in v}
    ready_acc = sum(1 for v in up.values() if v.get("ready") and "acceptor" in v.get("roles", []))
    ready_lrn = sum(
        1 for v in up.values() if v.get("ready") and "acceptor" not in v.get("roles", [])
    )
    recovering = sorted(k for k, v in up.items() if v.get("recovering"))
    leaders = {v.get("leader") for v in up.values() if v.get("leader") is not None}
    leader_id = next(iter(leaders)) if len(leaders) == 1 else None
    leader_pod = next((k for k, v in up.items() if v.get("is_leader")), None)
    decided = max((v.get("decided", -1) for v in up.values()), default=-1)
    ballot = next((v.get("ballot") for v in up.values() if v.get("is_leader")), None)
    quorum = acceptors // 2 + 1
    available = ready_acc >= quorum and leader_id is not None
    degraded = ready_acc < acceptors or bool(stuck)
    old_conds = old_status.get("conditions", []) if old_status else []
    conds = [
        _cond("Available", available, "QuorumReady" if available else "NoQuorum",
              f"{ready_acc}/{acceptors} acceptors ready, quorum {quorum}", generation, now,
              old_conds),
        _cond("Progressing", updating, "RollingUpdate" if updating else "Stable",
              "restarting members one at a time" if updating else "no update in progress",
              generation, now, old_conds),
        _cond("Degraded", degraded, "MembersNotReady" if degraded else "AllReady",
              (f"stuck terminating: {', '.join(stuck)}; " if stuck else "")
              + f"{acceptors - ready_acc} acceptor(s) not ready", generation, now, old_conds),
        _cond("Recovering", bool(recovering), "EmptyDisk" if recovering else "None",
              ("recovering before voting: " + ", ".join(recovering)) if recovering
              else "no member is recovering", generation, now, old_conds),
    ]  # fmt: skip
    phase = "Available" if available else ("Pending" if not up else "Degraded")
    if available and updating:
        phase = "Updating"
    return {
        "observedGeneration": generation,
        "phase": phase,
        "readyAcceptors": ready_acc,
        "readyLearners": ready_lrn,
        "leader": leader_pod,
        "leaderId": leader_id,
        "ballot": ballot,
        "decided": decided,
        "everAvailable": bool(old_status.get("everAvailable")) or available,
        # No nulls inside list items: a merge patch cannot store them.
        "members": [
            {"name": k, "ready": False, "error": "unreachable"}
            if not v
            else {
                "name": k,
                "ready": bool(v.get("ready")),
                "applied": v.get("applied", -1),
                "lag": max(0, decided - v.get("applied", -1)),
            }
            for k, v in sorted(members.items())
        ],
        "conditions": conds,
    }


def next_restart(
    pods: dict[str, Obj], members: dict[str, Obj | None], acceptors: int
) -> str | None:
    """The next out-of-date member to restart, or None.

    ``pods``: name -> {"outdated": bool, "acceptor": bool, "deleting": bool}.
    Order: unhealthy members first, then followers, the leader last. Never
    restart while it would leave no quorum: every other acceptor must be ready
    and caught up, and not on its way out (a terminating pod may still answer
    as ready). A pod already being deleted is never chosen again: the name
    would soon be its replacement's, on the new revision.
    """
    outdated = [n for n, p in pods.items() if p["outdated"] and not p.get("deleting")]
    if not outdated:
        return None

    def healthy(n: str) -> bool:
        v = members.get(n)
        return bool(v and v.get("ready"))

    decided = max((v.get("decided", -1) for v in members.values() if v), default=-1)

    def caught_up(n: str) -> bool:
        v = members.get(n)
        if pods.get(n, {}).get("deleting"):
            return False
        return bool(v and v.get("ready") and decided - v.get("applied", -1) <= 128)

    unhealthy = sorted(n for n in outdated if not healthy(n))
    followers = sorted(
        n for n in outdated if healthy(n) and not (members[n] or {}).get("is_leader")
    )
    leaders = sorted(n for n in outdated if healthy(n) and (members[n] or {}).get("is_leader"))
    for cand in unhealthy + followers + leaders:
        others = [n for n, p in pods.items() if p["acceptor"] and n != cand]
        ok_others = sum(1 for n in others if caught_up(n))
        need = acceptors // 2 + 1
        # With cand down, the others alone must still be a majority (and every
        # other acceptor healthy, so that one restart at a time never stacks).
        if pods[cand]["acceptor"] and (ok_others < need or ok_others < len(others)):
            continue
        return cand
    return None


def pods_stuck_on_lost_claims(pods: list[Obj], claims: dict[str, bool]) -> list[str]:
    """Member pods that can never start because their PVC is gone or going.

    ``pods``: [{"name", "phase", "deleting": bool, "claims": [PVC names]}];
    ``claims``: PVC name -> True if it is terminating (absent: no such PVC).

    When a PVC and its pod are deleted together, the PVC waits (finalizer
    kubernetes.io/pvc-protection) until the old pod is gone, and the
    StatefulSet controller may create the new pod first: that pod refers to a
    terminating, then missing, PVC and stays Pending for ever (the controller
    creates a claim only when it creates the pod). Deleting such a pod lets the
    StatefulSet create both again. Only Pending pods, never a running member.
    """
    out = []
    for p in pods:
        if p.get("phase") != "Pending" or p.get("deleting"):
            continue
        if any(c not in claims or claims[c] for c in p.get("claims", [])):
            out.append(p["name"])
    return sorted(out)
