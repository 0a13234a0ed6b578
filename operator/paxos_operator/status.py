"""Pure status logic: members' /v1/status answers to the PaxosCluster status,
and the choice of the next member to restart in a rolling upgrade."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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
    progress: str | None = None,
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
    # Storage (issue 12): a raised NOSPACE alarm (replicated: any member
    # reports every member's) and members whose disk filled up anyway.
    alarms = sorted({a for v in up.values() for a in (v.get("storage") or {}).get("alarms", [])})
    disk_full = sorted(k for k, v in up.items() if (v.get("storage") or {}).get("disk_full"))
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
              (progress or "restarting members one at a time") if updating
              else "no update in progress",
              generation, now, old_conds),
        _cond("Degraded", degraded, "MembersNotReady" if degraded else "AllReady",
              (f"stuck terminating: {', '.join(stuck)}; " if stuck else "")
              + f"{acceptors - ready_acc} acceptor(s) not ready", generation, now, old_conds),
        _cond("Recovering", bool(recovering), "EmptyDisk" if recovering else "None",
              ("recovering before voting: " + ", ".join(recovering)) if recovering
              else "no member is recovering", generation, now, old_conds),
        _cond("NoSpace", bool(alarms or disk_full),
              "DiskFull" if disk_full else ("QuotaExceeded" if alarms else "None"),
              (f"NOSPACE alarm of member id(s) {alarms}: only reads and deletes are taken; "
               "delete keys (the members compact) or grow the volumes. " if alarms else "")
              + (f"disk full, write retried: {', '.join(disk_full)}" if disk_full else "")
              if alarms or disk_full else "every member is under its storage quota",
              generation, now, old_conds),
    ]  # fmt: skip
    phase = "Available" if available else ("Pending" if not up else "Degraded")
    if available and updating:
        phase = "Updating"
    return {
        "observedGeneration": generation,
        "phase": phase,
        "ready": f"{ready_acc}/{acceptors}",
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
                "storageUsedBytes": (v.get("storage") or {}).get("used_bytes") or 0,
            }
            for k, v in sorted(members.items())
        ],
        "conditions": conds,
    }


#: A member is caught up when it has applied all but this many decided slots.
MAX_LAG = 128
#: Seconds every other member must have been Ready before the next restart.
SETTLE_SECONDS = 5.0
UP_TO_DATE = "every member is up to date"


@dataclass(frozen=True, slots=True)
class RestartPlan:
    """What a rolling upgrade does now: restart ``pod``, or wait (``why``)."""

    pod: str | None
    why: str

    @property
    def updating(self) -> bool:
        """A rolling upgrade is under way (a restart now, or one waiting)."""
        return self.pod is not None or self.why != UP_TO_DATE


def next_restart(
    pods: dict[str, Obj],
    members: dict[str, Obj | None],
    expected: list[str],
    *,
    settle: float = SETTLE_SECONDS,
) -> RestartPlan:
    """The next out-of-date member to restart, or why none may be restarted now.

    Every input is a fresh observation, read just before the decision:

    - ``pods``: pod name -> {"outdated", "acceptor", "deleting": bool,
      "ready": the pod's Ready condition from the API, "ready_for": seconds
      since that condition last became True (None when not ready)};
    - ``members``: pod name -> its /v1/status answer (None: no answer);
    - ``expected``: the name of every member's pod (acceptors 0..N-1 and
      learners 0..L-1, the StatefulSets' ordinals). A name with no pod is a
      member that is down.

    A member is restarted only if *every other* member (acceptors and
    learners) is, at this moment: present, not terminating, Ready in the API for at least
    ``settle`` seconds, and answering its status as ready and caught up
    (applied within MAX_LAG of the highest decided slot). The API's Ready
    condition and the member's own status are both required: each can lag
    behind reality (a probe that has not run yet, a probe that times out
    under load), and only both together mean "up". Since the operator's own
    restart is visible at once in the API (the pod terminating, then absent,
    then a new pod that has never been Ready), the member restarted last
    blocks every other restart until it is back, caught up and settled.

    Order: unhealthy members first (restarting them takes nothing more
    down), then followers, the leader last. A pod already being deleted is
    never chosen again: its name will soon be its replacement's. One member
    at a time, learners included: a new image whose pods never become ready
    stalls the rollout after one member, as maxUnavailable 1 would.
    """
    outdated = sorted(n for n, p in pods.items() if p["outdated"] and not p.get("deleting"))
    if not outdated:
        return RestartPlan(None, UP_TO_DATE)
    decided = max((v.get("decided", -1) for v in members.values() if v), default=-1)

    def problem(n: str) -> str | None:
        """Why member n is not up, caught up and settled (None: it is)."""
        p = pods.get(n)
        if p is None:
            return f"{n} has no pod"
        if p.get("deleting"):
            return f"{n} is terminating"
        if not p.get("ready"):
            return f"{n} is not Ready"
        v = members.get(n)
        if not v or not v.get("ready"):
            return f"{n} does not answer as ready"
        lag = decided - v.get("applied", -1)
        if lag > MAX_LAG:
            return f"{n} is catching up (lag {lag})"
        since = p.get("ready_for")
        if since is None or since < settle:
            return f"{n} is settling (Ready {since or 0:.0f} s of {settle:.0f} s)"
        return None

    def healthy(n: str) -> bool:
        v = members.get(n)
        return bool(pods[n].get("ready") and v and v.get("ready"))

    unhealthy = [n for n in outdated if not healthy(n)]
    followers = [n for n in outdated if healthy(n) and not (members.get(n) or {}).get("is_leader")]
    leaders = [n for n in outdated if healthy(n) and (members.get(n) or {}).get("is_leader")]
    why = ""
    for cand in unhealthy + followers + leaders:
        blockers = [w for n in expected if n != cand and (w := problem(n))]
        if not blockers:
            return RestartPlan(cand, "out of date" if healthy(cand) else "out of date, not ready")
        why = why or f"{cand} waits: " + "; ".join(blockers)
    return RestartPlan(None, why)


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


#: Seconds after every container of a terminating member pod has exited
#: before the operator deletes the pod object itself (see pods_to_release).
RELEASE_AFTER = 3.0
#: Seconds a terminating member must have refused connections on its HTTP
#: port: a node closes its listener only when it stops, and exits within
#: STOP_DEADLINE (6 s, paxosrsm.net.main) of that.
RELEASE_REFUSED_AFTER = 7.0


#: The age given to a container the kubelet reports gone without a finish time.
GONE = 1e9


def exited_for(state: Obj | None, last_state: Obj | None, now: dt.datetime) -> float | None:
    """Seconds since a container of a terminating pod exited, by the kubelet's
    report (None: it may still run). ``state``/``last_state``: the container
    status's fields as dicts (``V1ContainerState.to_dict()``).

    Two shapes say "exited": ``state.terminated`` (with ``finished_at``); and,
    when the kubelet removed the container before it wrote that, ``state.waiting``
    with ``last_state.terminated`` ("The container could not be located when
    the pod was deleted", reason ContainerStatusUnknown, seen on 1.20): a
    container of a pod being deleted is never started again.
    """
    term = (state or {}).get("terminated")
    if term:
        fin = term.get("finished_at")
        return max(0.0, (now - fin).total_seconds()) if fin else GONE
    if (state or {}).get("waiting") and (last_state or {}).get("terminated"):
        return GONE
    return None


def pods_to_release(
    pods: list[Obj], *, after: float = RELEASE_AFTER, refused_after: float = RELEASE_REFUSED_AFTER
) -> list[str]:
    """Terminating member pods whose process is gone, by either proof:

    - the kubelet reports every container exited ``after`` seconds ago or more;
    - the member's HTTP port has refused connections for ``refused_after``
      seconds or more (no listener: the node is stopping, and a node exits
      within its 6 s stop deadline). The kubelet's reports can lag by tens of
      seconds under churn (its API client is rate-limited), this cannot.

    ``pods``: [{"name", "deleting": bool, "containers": [seconds since that
    container finished, or None while it has not terminated], "refused_for":
    seconds of continuous refusals, or None}].

    The kubelet of Kubernetes 1.20 deletes a pod object only once its
    containers, sandboxes, volumes and cgroup are all cleaned up
    (PodResourcesAreReclaimed), and part of that waits for its periodic
    garbage collection: a pod whose process exited at once can stay
    Terminating for up to a minute, and the StatefulSet creates the
    replacement only after it is gone (issue 10: healed after 23-62 s in 3 of
    20 deletions). When the kubelet has reported every container terminated,
    the member's process is gone, so deleting the object (grace 0) cannot run
    two copies of a member; it only skips waiting for the clean-up. A pod with
    a container still running, or with no container status, is never touched.
    """
    out = []
    for p in pods:
        if not p.get("deleting"):
            continue
        ages = p.get("containers") or []
        exited = bool(ages) and all(a is not None and a >= after for a in ages)
        refused = p.get("refused_for")
        if exited or (refused is not None and refused >= refused_after):
            out.append(p["name"])
    return sorted(out)
