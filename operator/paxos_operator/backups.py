"""Pure builders and decisions for backups, restores and quorum-loss recovery
(docs/operations.md is the user's guide).

A ``PaxosBackup`` names a PaxosCluster of its namespace. Without a schedule
it takes one backup now; with one (cron, UTC) it takes one per run and keeps
the ``keep`` newest. Each backup is a Job: a pod of the cluster's own image
runs ``paxosctl snapshot save`` against the members' HTTP API with the
cluster's admin token, writes ``<backup>-<UTC time>.pxb`` to the backup
volume, deletes the files past ``keep``, and leaves a JSON report in its
termination message, which the operator reads into the status. The backup
volume is a PVC the operator creates once (``<backup>-backups``) unless
``volume.claimName`` names one of yours; it is never owned by the
PaxosBackup: deleting the resource keeps the files.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

from . import builders as b
from .cron import CronError
from .cron import parse as parse_cron

Obj = dict[str, Any]
PLURAL = "paxosbackups"
KIND = "PaxosBackup"
BACKUP_DIR = "/backups"
RESTORE_DIR = "/restore"
#: Label on a backup Job and its pod.
JOB_LABEL = f"{b.GROUP}/backup"
MAX_KEEP = 100
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FILE = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,200}\.pxb$")


def spec_with_defaults(spec: Obj) -> Obj:
    s = copy.deepcopy(spec)
    s.setdefault("keep", 7)
    v = s.setdefault("volume", {})
    v.setdefault("size", "1Gi")
    return s


def validate(spec: Obj) -> list[str]:
    errs: list[str] = []
    c = spec.get("cluster")
    if not isinstance(c, str) or not _NAME.match(c) or len(c) > 40:
        errs.append(f"spec.cluster must name a PaxosCluster of this namespace, got {c!r}")
    sched = spec.get("schedule")
    if sched is not None:
        try:
            parse_cron(sched).next_after(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        except CronError as e:
            errs.append(f"spec.schedule: {e}")
    keep = spec.get("keep", 7)
    if type(keep) is not int or not 1 <= keep <= MAX_KEEP:
        errs.append(f"spec.keep must be an integer from 1 to {MAX_KEEP}, got {keep!r}")
    vol = spec.get("volume") or {}
    claim = vol.get("claimName")
    if claim is not None and (not isinstance(claim, str) or not _NAME.match(claim)):
        errs.append(f"spec.volume.claimName must name a PersistentVolumeClaim, got {claim!r}")
    size = vol.get("size", "1Gi")
    if not isinstance(size, str) or not b._QUANTITY.match(size):
        errs.append(f"spec.volume.size must be a quantity such as 1Gi, got {size!r}")
    errs += _s3_errors(spec.get("s3"), "spec.s3", need_bucket=True)
    tok = spec.get("tokenSecret")
    if tok is not None and not (
        isinstance(tok, dict)
        and isinstance(tok.get("name"), str)
        and isinstance(tok.get("key"), str)
    ):
        errs.append("spec.tokenSecret must have a name and a key")
    return errs


def _s3_errors(s3: Any, where: str, need_bucket: bool) -> list[str]:
    if s3 is None:
        return []
    if not isinstance(s3, dict):
        return [f"{where} must be an object"]
    errs = []
    ep = s3.get("endpoint")
    if not isinstance(ep, str) or not re.match(r"^https?://[^/\s]+/?$", ep):
        errs.append(f"{where}.endpoint must be http(s)://host[:port], got {ep!r}")
    if need_bucket and (not isinstance(s3.get("bucket"), str) or not _BUCKET.match(s3["bucket"])):
        errs.append(f"{where}.bucket must be a bucket name, got {s3.get('bucket')!r}")
    path = s3.get("path", "")
    if not isinstance(path, str) or len(path) > 512 or ".." in path.split("/"):
        errs.append(f"{where}.path must be a relative object path")
    sec = s3.get("credentialsSecret")
    if not isinstance(sec, str) or not _NAME.match(sec):
        errs.append(f"{where}.credentialsSecret must name a Secret (keys AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY)")  # fmt: skip
    return errs


def _s3_env(s3: Obj) -> list[Obj]:
    """The store's endpoint and keys, from its Secret (never in the spec)."""
    env: list[Obj] = [{"name": "PAXOS_S3_ENDPOINT", "value": s3["endpoint"].rstrip("/")}]
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.append({"name": k, "valueFrom": {"secretKeyRef": {"name": s3["credentialsSecret"],
                                                              "key": k}}})  # fmt: skip
    if s3.get("region"):
        env.append({"name": "AWS_REGION", "value": s3["region"]})
    return env


def s3_dir(s3: Obj) -> str:
    path = str(s3.get("path", "")).strip("/")
    return f"s3://{s3['bucket']}/{path}" if path else f"s3://{s3['bucket']}"


def claim_name(bk: Obj) -> str:
    vol = (bk.get("spec") or {}).get("volume") or {}
    return str(vol.get("claimName") or f"{bk['metadata']['name']}-backups")


def owns_claim(bk: Obj) -> bool:
    spec = bk.get("spec") or {}
    return not spec.get("s3") and not (spec.get("volume") or {}).get("claimName")


def backup_pvc(bk: Obj) -> Obj:
    """The backup volume (when the PaxosBackup names none): not owned by the
    PaxosBackup, so that deleting it never deletes backups."""
    s = spec_with_defaults(bk["spec"])
    md = bk["metadata"]
    pvc: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(bk),
            "namespace": md["namespace"],
            "labels": {**b.labels(s["cluster"], "backups"), JOB_LABEL: md["name"]},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": s["volume"]["size"]}},
        },
    }
    if s["volume"].get("storageClassName"):
        pvc["spec"]["storageClassName"] = s["volume"]["storageClassName"]
    return pvc


def owner_reference(bk: Obj) -> Obj:
    return b.owner_reference(bk, KIND)


def member_urls(cluster: Obj) -> list[str]:
    """Every member's HTTP API by its stable DNS name (acceptors first)."""
    md, spec = cluster["metadata"], b.spec_with_defaults(cluster["spec"])
    n = b.names(md["name"])
    hosts = [f"{n['acceptors']}-{i}" for i in range(spec["acceptors"])]
    hosts += [f"{n['learners']}-{i}" for i in range(spec["learners"])]
    # The names the members list as their own (the HTTP API refuses other
    # Host names: the DNS rebinding guard).
    return [
        f"http://{h}.{n['peers']}.{md['namespace']}.svc.cluster.local:{b.HTTP_PORT}" for h in hosts
    ]


def token_ref(bk: Obj, cluster: Obj) -> Obj:
    """The admin token the Job uses: spec.tokenSecret, else the token the
    operator generated for the cluster (absent when the cluster names a
    tokens Secret of its own: then spec.tokenSecret is needed)."""
    tok = (bk.get("spec") or {}).get("tokenSecret")
    if tok:
        return {"name": tok["name"], "key": tok["key"]}
    return {"name": b.names(cluster["metadata"]["name"])["http_auth"], "key": "admin-token"}


def _restricted(extra: Obj | None = None) -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": b.UID,
        "runAsGroup": b.UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        **(extra or {}),
    }


def job_name(bk: Obj, at: dt.datetime) -> str:
    return f"{bk['metadata']['name'][:40]}-{at.strftime('%Y%m%d-%H%M%S')}"


def backup_job(
    bk: Obj, cluster: Obj, at: dt.datetime, *, chown: bool = False, local_from: str | None = None
) -> Obj:
    """One backup, now. ``chown``: the volume ignores fsGroup (needs_chown).
    ``local_from``: a member's URL to take its own state from, without a
    read index (the quorum-loss recovery's export)."""
    s = spec_with_defaults(bk["spec"])
    cs = b.spec_with_defaults(cluster["spec"])
    md = bk["metadata"]
    name = job_name(bk, at)
    job_labels = {"app.kubernetes.io/name": "paxosrsm-backup",
                  "app.kubernetes.io/instance": s["cluster"], JOB_LABEL: md["name"]}  # fmt: skip
    s3 = s.get("s3")
    target = s3_dir(s3) if s3 else BACKUP_DIR
    cmd = ["python3", "-m", "paxosrsm.cli", "snapshot", "save", "--dir", target,
           "--prefix", md["name"], "--keep", str(s["keep"]), "--report", "/dev/termination-log",
           "--endpoints", local_from or ",".join(member_urls(cluster))]  # fmt: skip
    if local_from:
        cmd.append("--local")
    tok = token_ref(bk, cluster)
    container: Obj = {
        "name": "backup",
        "image": cs["image"],
        "imagePullPolicy": cs["imagePullPolicy"],
        "command": cmd,
        "env": [
            {
                "name": "PAXOS_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": tok["name"], "key": tok["key"]}},
            }
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
        + ([] if s3 else [{"name": "backups", "mountPath": BACKUP_DIR}]),
        "securityContext": _restricted(),
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    pod: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": b.UID,
            "fsGroup": b.UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Gi"}}],
    }
    if s3:
        container["env"] += _s3_env(s3)
    else:
        pod["volumes"].append(
            {"name": "backups", "persistentVolumeClaim": {"claimName": claim_name(bk)}}
        )
    if chown and not s3:
        pod["initContainers"] = [b.chown_container(cs, BACKUP_DIR, "backups")]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": md["namespace"],
            "labels": job_labels,
            "annotations": {f"{b.GROUP}/scheduled-at": at.isoformat()},
            "ownerReferences": [owner_reference(bk)],
        },
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 900,
            "template": {"metadata": {"labels": job_labels}, "spec": pod},
        },
    }


def due(bk: Obj, status: Obj, now: dt.datetime) -> dt.datetime | None:
    """When the next backup should start, if that is now or past (else None).
    On demand (no schedule): once, when none was started yet."""
    spec = bk["spec"]
    last = status.get("lastScheduleTime")
    sched = spec.get("schedule")
    if not sched:
        return None if last else now
    since = dt.datetime.fromisoformat(last) if last else _created(bk, now)
    nxt = parse_cron(sched).next_after(since)
    return nxt if nxt <= now else None


def next_run(bk: Obj, status: Obj, now: dt.datetime) -> dt.datetime | None:
    sched = bk["spec"].get("schedule")
    if not sched:
        return None
    last = status.get("lastScheduleTime")
    since = dt.datetime.fromisoformat(last) if last else _created(bk, now)
    return parse_cron(sched).next_after(max(since, now))


def max_age(bk: Obj, now: dt.datetime) -> float | None:
    """Seconds after which a scheduled backup is overdue: twice the longest
    gap between two runs (the PaxosBackupOverdue alert's threshold)."""
    sched = bk["spec"].get("schedule")
    if not sched:
        return None
    return 2 * parse_cron(sched).max_gap(now).total_seconds()


def _created(bk: Obj, now: dt.datetime) -> dt.datetime:
    ts = bk["metadata"].get("creationTimestamp")
    if isinstance(ts, dt.datetime):
        return ts
    if isinstance(ts, str):
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return now


def parse_report(message: str | None) -> Obj | None:
    """The Job's termination message: the JSON report of paxosctl (None: not one)."""
    if not message:
        return None
    try:
        rep = json.loads(message)
    except ValueError:
        return None
    if not isinstance(rep, dict) or not _FILE.match(str(rep.get("file", ""))):
        return None
    return rep


def record(status_backups: list[Obj], report: Obj, finished: str) -> list[Obj]:
    """The status's list of backups after a successful run: the new one
    first, then those the run kept (files it deleted are gone from the list)."""
    entry = {
        "file": report["file"],
        "time": finished,
        "size": report.get("size"),
        "slot": report.get("slot"),
        "revision": report.get("revision"),
        "sha256": report.get("file_sha256"),
        "readIndex": report.get("read_index"),
    }
    if report.get("url"):
        entry["url"] = report["url"]
    kept = report.get("kept")
    rest = [e for e in status_backups if e.get("file") != entry["file"]]
    if isinstance(kept, list):
        rest = [e for e in rest if e.get("file") in kept]
    return [entry, *rest][:MAX_KEEP]


# ---------------------------------------------------------------- restore


def restore_source(cluster: Obj) -> Obj | None:
    """spec.bootstrap.fromBackup: {claimName, file}, {s3, url}, or None."""
    src = ((cluster.get("spec") or {}).get("bootstrap") or {}).get("fromBackup")
    if not src:
        return None
    if src.get("s3"):
        return {"s3": src["s3"], "url": src.get("url")}
    return {"claimName": src.get("claimName"), "file": src.get("file")}


def validate_restore(spec: Obj) -> list[str]:
    src = (spec.get("bootstrap") or {}).get("fromBackup")
    if src is None:
        return []
    errs = []
    if not isinstance(src, dict):
        return ["spec.bootstrap.fromBackup must be an object with claimName and file"]
    if src.get("s3") is not None:
        errs = _s3_errors(src["s3"], "spec.bootstrap.fromBackup.s3", need_bucket=False)
        url = src.get("url")
        if not isinstance(url, str) or not re.match(r"^s3://[a-z0-9][a-z0-9.-]+/.+\.pxb$", url):
            errs.append("spec.bootstrap.fromBackup.url must be s3://BUCKET/PATH/NAME.pxb")
        return errs
    if not isinstance(src.get("claimName"), str) or not _NAME.match(src["claimName"]):
        errs.append("spec.bootstrap.fromBackup.claimName must name the backup volume's PVC")
    if not isinstance(src.get("file"), str) or not _FILE.match(src["file"]):
        errs.append("spec.bootstrap.fromBackup.file must name a .pxb file in that volume")
    return errs


RESTORE_SCRIPT = """set -eu
if [ "$PAXOS_INITIAL_CLUSTER_STATE" != new ]; then
  echo "cluster already bootstrapped: nothing to restore"; exit 0
fi
if [ -e "$PAXOS_DATA_DIR/IDENTITY" ]; then
  echo "data directory in use: nothing to restore"; exit 0
fi
id=$(( ${HOSTNAME##*-} + PAXOS_ORDINAL_OFFSET ))
exec python3 -m paxosrsm.cli snapshot restore "$RESTORE_FILE" --member-dir "$PAXOS_DATA_DIR" \\
  --cluster-id "$PAXOS_CLUSTER_ID" --node-id "$id" --acceptors "$PAXOS_ACCEPTOR_COUNT"
"""


def restore_container(cluster: Obj, src: Obj, offset: int) -> Obj:
    """The init container that seeds an empty member of a NEW cluster from a
    backup. Only while the cluster is bootstrapping (initial state "new"):
    after its first Available, an empty member recovers from its peers and
    never from a backup (a backup is older than its promises)."""
    s = b.spec_with_defaults(cluster["spec"])
    n = b.names(cluster["metadata"]["name"])
    s3 = src.get("s3")
    env: list[Obj] = [
        {"name": "PAXOS_DATA_DIR", "value": b.DATA_DIR},
        {"name": "PAXOS_ORDINAL_OFFSET", "value": str(offset)},
        {"name": "PAXOS_ACCEPTOR_COUNT", "value": str(s["acceptors"])},
        {"name": "RESTORE_FILE", "value": src["url"] if s3 else f"{RESTORE_DIR}/{src['file']}"},
    ]
    mounts: list[Obj] = [
        {"name": "data", "mountPath": b.DATA_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if s3:
        env += _s3_env(s3)
    else:
        mounts.append({"name": "restore", "mountPath": RESTORE_DIR, "readOnly": True})
    return {
        "name": "restore",
        "image": s["image"],
        "imagePullPolicy": s["imagePullPolicy"],
        "command": ["sh", "-c", RESTORE_SCRIPT],
        "envFrom": [{"configMapRef": {"name": n["config"]}}],
        "env": env,
        "securityContext": _restricted(),
        "volumeMounts": mounts,
    }
