"""Quorum-loss recovery, pure: what the operator does next (docs/operations.md,
"Quorum loss", is the runbook).

When a majority of the acceptors lost their disks, the cluster cannot decide
and never pretends to: the members with empty disks wait, in recovery mode,
for a quorum that no longer exists (the ``QuorumLost`` condition says so).
The way out is explicit and audited, like etcd's ``--force-new-cluster`` but
safer:

    kubectl annotate pxc NAME paxosrsm.dev/force-new-cluster=NAME

(the cluster's name typed back), optionally with
``paxosrsm.dev/force-new-cluster-from=<claim>/<file>`` to start from a
backup rather than from the surviving member with the highest applied
state. The operator then, each step an Event and a line of
``status.recovery``:

1. ``Exporting``: a Job saves the chosen member's own applied state (no read
   index: no quorum exists) into the volume ``<name>-recovery``;
2. ``Rebuilding``: a NEW cluster id; every member's PVC and pod deleted; the
   new members seeded from that file (as a restore) and bootstrapped;
3. ``Done`` once Available: what may be lost is stated (every write decided
   after the source's applied slot), and the annotation is removed.

It refuses while the cluster is Available (nothing to recover), when the
name typed back is wrong, and when no member holds state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import builders as b

Obj = dict[str, Any]
REQUEST = f"{b.GROUP}/force-new-cluster"
FROM = f"{b.GROUP}/force-new-cluster-from"
_FROM = re.compile(
    r"^(?P<claim>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/(?P<file>[A-Za-z0-9][-A-Za-z0-9_.]*\.pxb)$"
)


@dataclass(frozen=True)
class Step:
    """``action``: none | refuse | export | rebuild | wait | done | failed."""

    action: str
    recovery: Obj | None = None
    event: tuple[str, str, bool] | None = None  # (reason, message, warning)
    source_url: str | None = None
    extra: Obj = field(default_factory=dict)


def job_owner(cluster: Obj) -> Obj:
    """The recovery's export Job and volume, built as a PaxosBackup of the
    cluster named ``<name>-recovery`` would be (backups.py)."""
    md = cluster["metadata"]
    return {
        "metadata": {"name": f"{md['name']}-recovery", "namespace": md["namespace"],
                     "uid": md["uid"]},
        "spec": {"cluster": md["name"], "keep": 20},
    }  # fmt: skip


def claim(name: str) -> str:
    return f"{name}-recovery-backups"


def _source(members: dict[str, Obj | None]) -> tuple[str, Obj] | None:
    """The member with the highest applied slot among those that hold state
    (answer, not recovering an empty disk)."""
    held = [
        (k, v) for k, v in members.items()
        if v and "node_id" in v and not v.get("recovering") and v.get("applied", -1) >= 0
    ]  # fmt: skip
    if not held:
        return None
    return max(held, key=lambda kv: (kv[1].get("applied", -1), kv[0]))


def plan(
    name: str,
    annotations: Obj,
    old: Obj | None,
    members: dict[str, Obj | None],
    available: bool,
    job: Obj | None,
    member_url: Any,
) -> Step:
    """``old``: status.recovery; ``job``: the export Job as observed now
    ({"state": "running"|"succeeded"|"failed", "report": dict|None,
    "message": str}) or None; ``member_url(pod)``: that member's HTTP URL."""
    want = annotations.get(REQUEST)
    phase = (old or {}).get("phase")
    if phase in ("Exporting", "Rebuilding"):
        return _continue(name, old or {}, available, job)
    if want is None:
        if phase == "Failed":  # the user removed the annotation: a new request may follow
            return Step("none", {**(old or {}), "phase": "Abandoned"})
        return Step("none")
    if phase == "Failed":
        return Step("none")  # until the annotation is removed and set again
    if want != name:
        msg = (f"{REQUEST}={want!r} ignored: type the cluster's name ({name!r}) as the value "
               "to confirm a forced new cluster")  # fmt: skip
        if (old or {}).get("refused") == msg:
            return Step("none")
        return Step("refuse", {**(old or {}), "refused": msg}, ("RecoveryRefused", msg, True))
    if available:
        msg = (f"{REQUEST} refused: the cluster has a quorum and is Available; a forced new "
               "cluster would only lose data. Remove the annotation.")  # fmt: skip
        if (old or {}).get("refused") == msg:
            return Step("none")
        return Step("refuse", {**(old or {}), "refused": msg}, ("RecoveryRefused", msg, True))
    epoch = int((old or {}).get("epoch", 0)) + 1
    decided = max((v.get("decided", -1) for v in members.values() if v), default=-1)
    src = annotations.get(FROM)
    if src:
        m = _FROM.match(src)
        if not m:
            msg = f"{FROM}={src!r} ignored: it must be <claimName>/<file>.pxb"
            return Step("refuse", {**(old or {}), "refused": msg}, ("RecoveryRefused", msg, True))
        rec = {
            "phase": "Rebuilding", "epoch": epoch, "from": f"backup {src}",
            "restore": {"claimName": m["claim"], "file": m["file"]},
            "highestDecidedSeen": decided,
            "mayBeLost": "every write acknowledged after the backup was taken",
        }  # fmt: skip
        msg = (f"forcing a new cluster (epoch {epoch}) from backup {src}: every member's data is "
               "deleted and seeded from it; writes after the backup are lost")  # fmt: skip
        return Step("rebuild", rec, ("RecoveryStarted", msg, True))
    best = _source(members)
    if best is None:
        msg = ("no member holds state (all are down or recovering empty disks): restore from a "
               f"backup with {FROM}=<claimName>/<file>")  # fmt: skip
        if (old or {}).get("refused") == msg:
            return Step("none")
        return Step("refuse", {**(old or {}), "refused": msg}, ("RecoveryRefused", msg, True))
    pod, st = best
    applied = int(st.get("applied", -1))
    rec = {
        "phase": "Exporting", "epoch": epoch, "from": f"member {pod}", "sourceApplied": applied,
        "highestDecidedSeen": decided,
        "mayBeLost": (f"every write decided after slot {applied} (the members seen had decided "
                      f"up to slot {decided}: at least {max(0, decided - applied)} slots)"),
    }  # fmt: skip
    msg = (f"forcing a new cluster (epoch {epoch}) from member {pod}, applied slot {applied}: "
           f"{rec['mayBeLost']} may be lost; exporting its state")  # fmt: skip
    return Step("export", rec, ("RecoveryStarted", msg, True), source_url=member_url(pod))


def _continue(name: str, old: Obj, available: bool, job: Obj | None) -> Step:
    if old["phase"] == "Exporting":
        if job is None or job["state"] == "running":
            return Step("wait", old)
        if job["state"] == "failed" or not job.get("report"):
            msg = (f"the export of {old.get('from')} failed: {job.get('message', '')[:300]}; "
                   "remove and set the annotation again to retry")  # fmt: skip
            return Step("failed", {**old, "phase": "Failed", "message": msg},
                        ("RecoveryFailed", msg, True))  # fmt: skip
        report = job["report"]
        rec = {
            **old, "phase": "Rebuilding",
            "restore": {"claimName": claim(name), "file": report["file"]},
            "revision": report.get("revision"), "sha256": report.get("file_sha256"),
        }  # fmt: skip
        msg = (f"exported {report['file']} (slot {report.get('slot')}, revision "
               f"{report.get('revision')}); deleting every member's volume and seeding a new "
               f"cluster (epoch {old['epoch']}) from it")  # fmt: skip
        return Step("rebuild", rec, ("RecoveryRebuilding", msg, True))
    # Rebuilding
    if not available:
        return Step("wait", old)
    msg = (f"the new cluster (epoch {old['epoch']}) from {old.get('from')} is Available; "
           f"may have been lost: {old.get('mayBeLost')}")  # fmt: skip
    return Step("done", {**old, "phase": "Done", "message": msg}, ("RecoveryDone", msg, True))


def cluster_id(ns: str, name: str, uid: str, recovery: Obj | None) -> str:
    """The cluster id the members run: a new one per forced new cluster."""
    base = f"{ns}/{name}/{uid}"
    epoch = int((recovery or {}).get("epoch", 0)) if (recovery or {}).get("restore") else 0
    return f"{base}/r{epoch}" if epoch else base


def quorum_lost(name: str, acceptors: int, members: dict[str, Obj | None]) -> str | None:
    """Why the cluster cannot get a quorum back by itself (None: it can, or
    we cannot tell): fewer acceptors hold their data than a quorum needs,
    and the others are recovering empty disks, which needs that quorum."""
    acc = {k: v for k, v in members.items() if v and "acceptor" in v.get("roles", [])}
    recovering = sorted(k for k, v in acc.items() if v.get("recovering"))
    holding = sorted(k for k, v in acc.items() if not v.get("recovering"))
    quorum = acceptors // 2 + 1
    if not recovering or len(holding) >= quorum:
        return None
    return (
        f"{len(recovering)} acceptor(s) lost their disks ({', '.join(recovering)}) and wait to "
        f"recover from a quorum of {quorum}, but only {len(holding)} hold their data "
        f"({', '.join(holding) or 'none'}): the cluster cannot decide again by itself. "
        f"To force a new cluster from the member with the most state (writes after it are "
        f"lost): kubectl annotate pxc {name} {REQUEST}={name} (docs/operations.md)"
    )
