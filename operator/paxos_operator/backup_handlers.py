"""kopf handlers of PaxosBackup (the builders and decisions: backups.py).

A timer every 5 s, on observations read in that cycle: the backup's Jobs
(listed by label, never remembered), the PaxosCluster, the volume. A Job
that finished is read (its pod's termination message holds paxosctl's
report), recorded in the status with an Event, and deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

from . import backups as bk
from . import builders as b
from . import handlers as h
from . import metrics

log = logging.getLogger("paxos_operator")
Obj = dict[str, Any]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@kopf.timer(b.GROUP, b.VERSION, bk.PLURAL, interval=5.0, idle=0)
@h.retrying
async def backup_timer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    await asyncio.to_thread(run_backup_cycle, dict(body), patch)


@kopf.on.delete(b.GROUP, b.VERSION, bk.PLURAL, optional=True)
def backup_deleted(body: kopf.Body, **_: Any) -> None:
    md = body["metadata"]
    metrics.forget_backup(md["namespace"], md["name"])


def run_backup_cycle(bkp: Any, patch: kopf.Patch) -> None:
    md, spec = bkp["metadata"], bk.spec_with_defaults(dict(bkp["spec"]))
    ns, name = md["namespace"], md["name"]
    status: Obj = dict(bkp.get("status") or {})
    errs = bk.validate(spec)
    if errs:
        patch.status["phase"] = "Invalid"
        patch.status["message"] = "; ".join(errs)
        return
    now = _now()
    core: Any = kubernetes.client.CoreV1Api(h._api())
    batch: Any = kubernetes.client.BatchV1Api(h._api())
    jobs = batch.list_namespaced_job(ns, label_selector=f"{bk.JOB_LABEL}={name}").items
    active = [j for j in jobs if not _finished(j)]
    for j in sorted((j for j in jobs if _finished(j)), key=lambda j: j.metadata.name):
        _record(bkp, status, patch, core, batch, j)
    nxt = bk.next_run(bkp, status, now)
    patch.status["nextScheduleTime"] = _iso(nxt) if nxt else None
    age = bk.max_age(bkp, now)
    metrics.backup_state(ns, spec["cluster"], name, status, age)
    if active:
        patch.status["phase"] = "Running"
        patch.status["active"] = active[0].metadata.name
        return
    patch.status["active"] = None
    at = bk.due(bkp, status, now)
    if at is None:
        if "phase" not in status:
            patch.status["phase"] = "Scheduled"
        return
    try:
        cluster: Any = kubernetes.client.CustomObjectsApi(h._api()).get_namespaced_custom_object(
            b.GROUP, b.VERSION, ns, b.PLURAL, spec["cluster"]
        )
    except ApiException as e:
        if e.status != 404:
            raise
        patch.status["phase"] = "Failed"
        patch.status["message"] = f"no PaxosCluster {spec['cluster']!r} in namespace {ns}"
        kopf.warn(bkp, reason="BackupFailed", message=patch.status["message"])
        return
    cspec = b.spec_with_defaults(dict(cluster["spec"]))
    if bk.owns_claim(bkp) and _create_claim(core, bk.backup_pvc(bkp)):
        kopf.info(bkp, reason="Created", message=f"created the backup volume {bk.claim_name(bkp)}")
    chown = b.needs_chown(cspec, h._provisioner((spec.get("volume") or {}).get("storageClassName")))
    job = bk.backup_job(bkp, {**cluster, "spec": cspec}, now, chown=chown)
    try:
        batch.create_namespaced_job(ns, job)
    except ApiException as e:
        if e.status != 409:
            raise
    patch.status["lastScheduleTime"] = _iso(now)
    patch.status["phase"] = "Running"
    patch.status["active"] = job["metadata"]["name"]
    kopf.info(bkp, reason="BackupStarted", message=f"backup Job {job['metadata']['name']} of "
              f"{spec['cluster']} into volume {bk.claim_name(bkp)}")  # fmt: skip


def _create_claim(core: Any, pvc: Obj) -> bool:
    """Create the backup volume once (True: created now). Never patched:
    a PVC's spec is mostly immutable, and it holds the user's backups."""
    md = pvc["metadata"]
    try:
        core.read_namespaced_persistent_volume_claim(md["name"], md["namespace"])
        return False
    except ApiException as e:
        if e.status != 404:
            raise
    try:
        core.create_namespaced_persistent_volume_claim(md["namespace"], pvc)
    except ApiException as e:
        if e.status != 409:
            raise
        return False
    return True


def _finished(job: Any) -> bool:
    return any(
        c.type in ("Complete", "Failed") and c.status == "True"
        for c in (job.status.conditions or [])
    )


def _record(bkp: Any, status: Obj, patch: kopf.Patch, core: Any, batch: Any, job: Any) -> None:
    """Read a finished Job into the status, post an Event, delete the Job."""
    md = bkp["metadata"]
    ok = any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
    pods = core.list_namespaced_pod(
        md["namespace"], label_selector=f"job-name={job.metadata.name}"
    ).items
    message = ""
    for p in sorted(pods, key=lambda p: p.metadata.creation_timestamp, reverse=True):
        for cs in p.status.container_statuses or []:
            t = cs.state.terminated if cs.state else None
            if t is not None and t.message:
                message = t.message
                break
        if message:
            break
    finished = _iso(_now())
    if ok:
        report = bk.parse_report(message)
        if report is None:
            ok = False
            message = f"the Job succeeded but left no report: {message[:300]!r}"
        else:
            listed = bk.record(list(status.get("backups") or []), report, finished)
            status["backups"] = listed
            status["lastSuccessTime"] = finished
            patch.status["backups"] = listed
            patch.status["lastSuccessTime"] = finished
            patch.status["phase"] = "Succeeded" if not bkp["spec"].get("schedule") else "Scheduled"
            patch.status["message"] = (
                f"{report['file']}: slot {report.get('slot')}, revision {report.get('revision')}, "
                f"{report.get('size')} bytes"
            )
            gone = report.get("deleted") or []
            kopf.info(bkp, reason="BackupSucceeded", message=patch.status["message"]
                      + (f"; deleted {len(gone)} older (keep {bkp['spec'].get('keep', 7)})"
                         if gone else ""))  # fmt: skip
    if not ok:
        why = message.strip().splitlines()[-1][:500] if message.strip() else "no message"
        patch.status["phase"] = "Failed" if not bkp["spec"].get("schedule") else "Scheduled"
        patch.status["lastFailureTime"] = finished
        patch.status["message"] = f"backup Job {job.metadata.name} failed: {why}"
        status["lastFailureTime"] = finished
        kopf.warn(bkp, reason="BackupFailed", message=patch.status["message"])
    try:
        batch.delete_namespaced_job(
            job.metadata.name, md["namespace"], propagation_policy="Background"
        )
    except ApiException as e:
        if e.status != 404:
            raise
