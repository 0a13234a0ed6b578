"""kopf handlers: thin. Each adopts what the pure builders make and makes one
idempotent API call per object; a timer reconciles on observed state.

Run: ``kopf run -m paxos_operator.handlers --all-namespaces`` (the image does).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

from . import backups, metrics, recovery, rotation
from . import builders as b
from .status import (
    SETTLE_SECONDS,
    RestartPlan,
    exited_for,
    next_restart,
    pods_stuck_on_lost_claims,
    pods_to_release,
    summarize,
)

Obj = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("paxos_operator")
#: A failed reconcile is retried after 1, 2, 4, then every 8 seconds.
RETRY_FIRST, RETRY_MAX = 1.0, 8.0
#: Seconds every other member must have been Ready before the next restart
#: of a rolling upgrade (PAXOS_OPERATOR_SETTLE_SECONDS).
SETTLE = float(os.environ.get("PAXOS_OPERATOR_SETTLE_SECONDS", SETTLE_SECONDS))
_state: dict[str, str] = {}
#: One reconcile at a time per cluster: the create/update handlers and the
#: timer run concurrently in kopf, and two creates of one object race.
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(md: Obj) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((md["namespace"], md["name"]), threading.Lock())


def describe(e: BaseException) -> str:
    """An API error as a person needs it: status, reason and the server's
    message (the body of a 403 says which verb on which resource was refused)."""
    status = getattr(e, "status", None)
    if status is None:
        return f"{type(e).__name__}: {e}"
    body = getattr(e, "body", None)
    msg = ""
    try:
        doc = json.loads(body) if body else {}
        msg = doc.get("message", "") if isinstance(doc, dict) else ""
    except (TypeError, ValueError):
        msg = str(body)[:500]
    return f"{type(e).__name__} {status} {getattr(e, 'reason', '') or ''}: {msg}".strip()


def retry_delay(retry: int) -> float:
    return float(min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, retry)))


def retrying(fn: F) -> F:
    """Turn any failure of a handler or timer into a retry within seconds
    (1, 2, 4, 8 s, ...), never kopf's 60 s default, and log the API error's
    reason and message. A PermanentError stays permanent; cancellation is
    never swallowed."""

    def wrap(e: Exception, kw: dict[str, Any]) -> kopf.TemporaryError:
        delay = retry_delay(int(kw.get("retry") or 0))
        what = describe(e)
        log.error("%s failed (%s); retrying in %.0f s", fn.__name__, what, delay)
        return kopf.TemporaryError(what, delay=delay)

    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def arun(*a: Any, **kw: Any) -> Any:
            try:
                return await fn(*a, **kw)
            except (kopf.PermanentError, kopf.TemporaryError):
                raise
            except Exception as e:
                raise wrap(e, kw) from e

        return arun  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except (kopf.PermanentError, kopf.TemporaryError):
            raise
        except Exception as e:
            raise wrap(e, kw) from e

    return run  # type: ignore[return-value]


# ---------------------------------------------------------------- API helpers


def _api() -> kubernetes.client.ApiClient:
    return kubernetes.client.ApiClient()


def _pdb_version() -> str:
    """policy/v1 where the server offers it (1.21+), else policy/v1beta1."""
    if "pdb" not in _state:
        groups = kubernetes.client.ApisApi(_api()).get_api_versions().groups
        versions = {v.group_version for g in groups if g.name == "policy" for v in g.versions}
        _state["pdb"] = "policy/v1" if "policy/v1" in versions else "policy/v1beta1"
    return _state["pdb"]


def _api_level() -> b.ApiLevel:
    """The server's version and API groups, by discovery (once)."""
    if "minor" not in _state:
        v: Any = kubernetes.client.VersionApi(_api()).get_code()
        _state["minor"] = "".join(ch for ch in str(v.minor) if ch.isdigit()) or "20"
    return b.ApiLevel(minor=int(_state["minor"]), pdb=_pdb_version())


def _provisioner(storage_class: str | None) -> str | None:
    """The provisioner of a StorageClass (None: the default class), looked
    up once per class: whether its volumes honour fsGroup (b.needs_chown)."""
    key = f"sc:{storage_class or ''}"
    if key not in _state:
        st: Any = kubernetes.client.StorageV1Api(_api())
        found = ""
        for sc in st.list_storage_class().items:
            default = (sc.metadata.annotations or {}).get(
                "storageclass.kubernetes.io/is-default-class"
            ) == "true"
            if sc.metadata.name == storage_class or (not storage_class and default):
                found = sc.provisioner or ""
                break
        _state[key] = found
    return _state[key] or None


def apply(obj: Obj, *, replace_fields: tuple[str, ...] = ("spec", "data")) -> str:
    """Create ``obj``, or patch the fields we own if they differ. Idempotent.

    Returns "created", "updated" (the server's object changed) or
    "unchanged"; nothing is written when the live object already holds
    every field we own (b.covers), so a steady cluster costs reads only."""
    dyn = kubernetes.dynamic.DynamicClient(_api())  # type: ignore[no-untyped-call]
    res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    md = obj["metadata"]
    try:
        live = res.get(name=md["name"], namespace=md["namespace"]).to_dict()
    except ApiException as e:
        if e.status != 404:
            raise
        try:
            res.create(body=obj, namespace=md["namespace"])
            return "created"
        except ApiException as e2:
            if e2.status != 409:  # created meanwhile: patch it below
                raise
        live = res.get(name=md["name"], namespace=md["namespace"]).to_dict()
    patch = {k: obj[k] for k in replace_fields if k in obj}
    patch["metadata"] = {"labels": md.get("labels", {}), "ownerReferences": md["ownerReferences"]}
    if obj["kind"] == "StatefulSet":
        # volumeClaimTemplates, selector and serviceName are immutable.
        spec = dict(obj["spec"])
        for k in ("volumeClaimTemplates", "selector", "serviceName", "podManagementPolicy"):
            spec.pop(k, None)
        patch["spec"] = spec
    if b.covers(patch, live):
        return "unchanged"
    out = res.patch(body=patch, name=md["name"], namespace=md["namespace"],
                    content_type="application/merge-patch+json")  # fmt: skip
    before = live.get("metadata", {}).get("resourceVersion")
    return "updated" if out.metadata.resourceVersion != before else "unchanged"


def _exists(kind: str, api_version: str, name: str, ns: str) -> bool:
    dyn = kubernetes.dynamic.DynamicClient(_api())  # type: ignore[no-untyped-call]
    try:
        dyn.resources.get(api_version=api_version, kind=kind).get(name=name, namespace=ns)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


# ---------------------------------------------------------------- handlers


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{b.GROUP}/finalizer"
    # Failures become TemporaryErrors with a short delay (``retrying``); this
    # default only covers what escapes that (kopf's own is 60 s).
    settings.execution.default_backoff = RETRY_MAX
    settings.execution.max_workers = 4
    # Watches end on the server every 30 s and are re-opened (from the last
    # resourceVersion, so nothing is missed); a stalled connection is given up
    # after 40 s. Without this, a silently dead watch stream delays a new
    # PaxosCluster until kopf's inactivity timeout (70 s).
    settings.watching.server_timeout = 30
    settings.watching.client_timeout = 40
    settings.watching.connect_timeout = 10
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    metrics.start()


@kopf.on.create(b.GROUP, b.VERSION, b.PLURAL)
@retrying
def on_create(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile(body, patch)


@kopf.on.resume(b.GROUP, b.VERSION, b.PLURAL)
@retrying
def on_resume(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile(body, patch)


@kopf.on.update(b.GROUP, b.VERSION, b.PLURAL)
@retrying
def on_update(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile(body, patch)


def accepted_spec(body: kopf.Body) -> Obj | None:
    """The acceptor count this cluster was created with (kept in status): a
    later change is refused against it, whatever event (or none) we saw."""
    n = (body.get("status") or {}).get("acceptors")
    return {"acceptors": n} if n is not None else None


def reconcile(body: kopf.Body, patch: kopf.Patch) -> None:
    cr = dict(body)
    errs = b.validate(dict(cr["spec"]), accepted_spec(body))
    errs += backups.validate_restore(dict(cr["spec"]))
    if errs:
        msg = "; ".join(errs)
        kopf.warn(body, reason="InvalidSpec", message=msg)
        patch.status["phase"] = "Invalid"
        patch.status["invalidSpec"] = msg
        # Nothing is applied: a bad change is refused whole, never half-way.
        raise kopf.PermanentError(msg)
    patch.status["invalidSpec"] = None
    patch.status["acceptors"] = cr["spec"]["acceptors"]
    cr = {**cr, "spec": b.spec_with_defaults(dict(cr["spec"]))}
    ensure(cr, dict(body.get("status") or {}))


def ensure(cr: Obj, status: Obj) -> None:
    with _lock(cr["metadata"]):
        _ensure(cr, status)


def _create_secret_once(cr: Obj, name: str, obj: Any = None) -> None:
    """A generated secret (the cluster key, the HTTP tokens): created once,
    never patched or rotated by a reconcile. Two reconciles may both find it
    missing; the loser's 409 means it exists. (It used to fall through to a
    patch, which RBAC refuses for Secrets: the 403 that delayed new clusters
    by up to a minute.)"""
    md = cr["metadata"]
    if _exists("Secret", "v1", name, md["namespace"]):
        return
    if obj is None:
        obj = b.secret(cr, base64.b64encode(base64.b64encode(os.urandom(32))).decode())
    try:
        kubernetes.client.CoreV1Api(_api()).create_namespaced_secret(md["namespace"], obj)
    except ApiException as e:
        if e.status != 409:
            raise


def _secret_text(name: str, ns: str, field: str) -> str:
    sec: Any = kubernetes.client.CoreV1Api(_api()).read_namespaced_secret(name, ns)
    return base64.b64decode((sec.data or {}).get(field, "")).decode()


def _node_keys(cr: Obj) -> Obj:
    """The node key files, made from the cluster key and the identity
    secret as they stand now (read in this cycle)."""
    md = cr["metadata"]
    n = b.names(md["name"])
    return b.node_keys_secret(
        cr,
        _secret_text(n["secret"], md["namespace"], "cluster.key"),
        _secret_text(n["identity"], md["namespace"], "identity.key"),
    )


def _ensure(cr: Any, status: Obj) -> None:
    md = cr["metadata"]
    n = b.names(md["name"])
    _create_secret_once(cr, n["secret"])
    _create_secret_once(cr, n["identity"], b.identity_secret(cr, secrets.token_hex(32)))
    if b.http_auth_secret_name(cr) == n["http_auth"]:
        # No tokens of the user's own: make an admin token (never anonymous).
        _create_secret_once(cr, n["http_auth"], b.http_auth_secret(cr, secrets.token_urlsafe(32)))
    rec = status.get("recovery") or {}
    initial = "existing" if status.get("everAvailable") else "new"
    if rec.get("phase") == "Rebuilding":
        initial = "new"  # a forced new cluster bootstraps again (recovery.py)
    chown = b.needs_chown(cr["spec"], _provisioner(cr["spec"]["storage"].get("storageClassName")))
    restore = rec.get("restore") or backups.restore_source(cr)
    cid = recovery.cluster_id(md["namespace"], md["name"], md["uid"], rec)
    level = _api_level()
    objs = [
        _node_keys(cr),
        b.configmap(cr, initial, cid),
        b.headless_service(cr),
        b.client_service(cr),
        b.statefulset(cr, "acceptor", chown=chown, restore=restore, level=level),
        b.statefulset(cr, "learner", chown=chown, restore=restore, level=level),
        b.pdb(cr, level),
        b.network_policy(cr),
    ]
    for obj in objs:
        what = apply(obj)
        if what != "unchanged":
            # An event for every action the operator takes.
            kopf.info(cr, reason=what.capitalize(),
                      message=f"{what} {obj['kind']} {obj['metadata']['name']}")  # fmt: skip


@kopf.on.delete(b.GROUP, b.VERSION, b.PLURAL)
def cleanup(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> None:
    """Owner references delete the rest; PVCs go only if the spec says so."""
    s = b.spec_with_defaults(dict(spec))
    if s["storage"]["reclaimPolicy"] != "Delete":
        kopf.info(body, reason="VolumesKept", message="reclaimPolicy Retain: PVCs are kept")
        return
    core: Any = kubernetes.client.CoreV1Api(_api())
    sel = ",".join(f"{k}={v}" for k, v in b.labels(meta["name"]).items())
    # The members' PVCs only (a PaxosBackup's volume has component "backups"),
    # one by one: the operator has no deletecollection on PVCs.
    sel += ",app.kubernetes.io/component in (acceptor,learner)"
    gone = []
    for pvc in core.list_namespaced_persistent_volume_claim(meta["namespace"],
                                                            label_selector=sel).items:  # fmt: skip
        try:
            core.delete_namespaced_persistent_volume_claim(pvc.metadata.name, meta["namespace"])
            gone.append(pvc.metadata.name)
        except ApiException as e:
            if e.status != 404:
                raise
    names_gone = ", ".join(gone) or "none"
    kopf.info(body, reason="VolumesDeleted",
              message=f"reclaimPolicy Delete: PVCs deleted ({names_gone})")  # fmt: skip


# ---------------------------------------------------------------- observed state


async def _member_status(session: aiohttp.ClientSession, ip: str) -> Obj | None:
    try:
        async with session.get(f"http://{ip}:{b.HTTP_PORT}/v1/status") as r:
            out: Obj = await r.json()
            return out
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


@kopf.timer(b.GROUP, b.VERSION, b.PLURAL, interval=5.0, idle=0)
@retrying
async def observe(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    cr = dict(body)
    md, spec = cr["metadata"], b.spec_with_defaults(dict(cr["spec"]))
    errs = b.validate(spec, accepted_spec(body)) + backups.validate_restore(spec)
    if errs:
        # Never apply a refused spec, not even from the timer.
        patch.status["phase"] = "Invalid"
        patch.status["invalidSpec"] = "; ".join(errs)
        return
    patch.status["acceptors"] = spec["acceptors"]
    # Reconcile on observed state, not only on change events: whatever was
    # deleted or drifted is put back (create, or patch the fields we own).
    await asyncio.to_thread(ensure, {**cr, "spec": spec}, dict(body.get("status") or {}))
    # API objects are handled as Any: the client's models type every field
    # as optional, and the server fills what this code reads.
    core: Any = kubernetes.client.CoreV1Api(_api())
    apps: Any = kubernetes.client.AppsV1Api(_api())
    sel = ",".join(f"{k}={v}" for k, v in b.labels(md["name"]).items())
    pods = (await asyncio.to_thread(core.list_namespaced_pod, md["namespace"],
                                    label_selector=sel)).items  # fmt: skip
    members = await _statuses(pods)
    # Pods stuck Terminating on a NotReady node.
    stuck = []
    now = dt.datetime.now(dt.UTC)
    for p in pods:
        if p.metadata.deletion_timestamp is None or not p.spec.node_name:
            continue
        node = await asyncio.to_thread(core.read_node, p.spec.node_name)
        ready = next((c.status for c in node.status.conditions or [] if c.type == "Ready"), "")
        if ready != "True":
            stuck.append(p.metadata.name)
            age = (now - p.metadata.deletion_timestamp).total_seconds()
            f = spec["forceDeleteStuckPods"]
            if f["enabled"] and age > f["afterSeconds"]:
                await asyncio.to_thread(core.delete_namespaced_pod, p.metadata.name,
                                        md["namespace"], grace_period_seconds=0)  # fmt: skip
                kopf.warn(body, reason="ForceDeleted", message=f"{p.metadata.name} was stuck")
    await _recreate_pods_of_lost_claims(body, core, md["namespace"], pods)
    await _release_exited_pods(body, core, md["namespace"], pods, now)
    # Rolling upgrade (OnDelete): one member at a time, quorum-aware, decided
    # on observations read now (never on this cycle's or the status's).
    plan = await _rolling_restart(body, core, apps, md["namespace"], md["name"], spec)
    updating = plan is not None and plan.updating
    summary = summarize(spec["acceptors"], members, md.get("generation", 0),
                        dict(body.get("status") or {}), updating=updating, stuck=stuck,
                        progress=plan.why if plan and updating else None)  # fmt: skip
    n = b.names(md["name"])
    if summary["everAvailable"] and not (body.get("status") or {}).get("everAvailable"):
        # From now on a member with an empty disk must recover before voting.
        await asyncio.to_thread(
            core.patch_namespaced_config_map, n["config"], md["namespace"],
            {"data": {"PAXOS_INITIAL_CLUSTER_STATE": "existing"}},
        )  # fmt: skip
        kopf.info(body, reason="Bootstrapped", message="first Available: a member that starts "
                  "on an empty disk now recovers before it votes")  # fmt: skip
    lost = recovery.quorum_lost(md["name"], spec["acceptors"], members)
    available = summary["phase"] in ("Available", "Updating")
    if lost and not available:
        summary["phase"] = "QuorumLost"
        kopf_cond = {"type": "QuorumLost", "status": "True", "reason": "MajorityLostDisks",
                     "message": lost, "lastTransitionTime": _now_iso()}  # fmt: skip
    else:
        kopf_cond = {"type": "QuorumLost", "status": "False", "reason": "None",
                     "message": "a quorum of acceptors holds its data", "lastTransitionTime":
                     _now_iso()}  # fmt: skip
    old_q = next((c for c in (body.get("status") or {}).get("conditions", [])
                  if c.get("type") == "QuorumLost"), None)  # fmt: skip
    if old_q is not None and old_q.get("status") == kopf_cond["status"]:
        kopf_cond["lastTransitionTime"] = old_q.get("lastTransitionTime")
    elif kopf_cond["status"] == "True":
        kopf.warn(body, reason="QuorumLost", message=lost or "")
    summary["conditions"] = [*summary["conditions"], kopf_cond]
    status_now = {**dict(body.get("status") or {}), **summary}
    rec = await asyncio.to_thread(_recover, body, {**cr, "spec": spec}, status_now, members,
                                  available)  # fmt: skip
    if rec is not None:
        summary["recovery"] = rec
        if rec.get("phase") in ("Exporting", "Rebuilding"):
            summary["phase"] = "Recovering"
    summary["operation"] = await asyncio.to_thread(
        _operation, md, summary, plan.why if plan and updating else None
    )
    for k, v in summary.items():
        patch.status[k] = v
    expected = spec["acceptors"] + spec.get("learners", 0)
    await asyncio.to_thread(_rotate_key, body, members, expected)


def _operation(md: Obj, summary: Obj, rolling: str | None) -> str:
    """What the operator is doing for this cluster now, and why it waits
    (status.operation), from this cycle's observations."""
    rec = summary.get("recovery") or {}
    if rec.get("phase") in ("Exporting", "Rebuilding"):
        return f"forced new cluster, {rec['phase'].lower()} (from {rec.get('from')})"
    if summary.get("phase") == "QuorumLost":
        return "waiting: no quorum can form by itself (see the QuorumLost condition)"
    if rolling:
        return f"rolling restart: {rolling}"
    conds = summary.get("conditions", [])
    recovering = next(
        (c for c in conds if c.get("type") == "Recovering" and c.get("status") == "True"), None
    )
    if recovering:
        return f"waiting: {recovering['message']}"
    batch: Any = kubernetes.client.BatchV1Api(_api())
    sel = f"app.kubernetes.io/name=paxosrsm-backup,app.kubernetes.io/instance={md['name']}"
    running = [j.metadata.name for j in batch.list_namespaced_job(md["namespace"],
                                                                  label_selector=sel).items
               if not (j.status.succeeded or j.status.failed)]  # fmt: skip
    if running:
        return f"backup running: Job {', '.join(sorted(running))}"
    if summary.get("phase") != "Available":
        return f"waiting for a quorum of ready acceptors ({summary.get('ready')})"
    return "idle: every member up to date"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _recover(
    body: kopf.Body, cr: Obj, status: Obj, members: dict[str, Obj | None], available: bool
) -> Obj | None:
    """One step of a forced new cluster (recovery.py), on this cycle's
    observations: the members' answers, the export Job, the annotations.
    Returns the new status.recovery (None: unchanged)."""
    md = cr["metadata"]
    ns, name = md["namespace"], md["name"]
    old = status.get("recovery")
    batch: Any = kubernetes.client.BatchV1Api(_api())
    core: Any = kubernetes.client.CoreV1Api(_api())
    owner = recovery.job_owner(cr)
    job = None
    if (old or {}).get("phase") == "Exporting":
        jobs = batch.list_namespaced_job(
            ns, label_selector=f"{backups.JOB_LABEL}={owner['metadata']['name']}"
        ).items
        jobs.sort(key=lambda j: j.metadata.creation_timestamp)
        job = _job_view(core, ns, jobs[-1]) if jobs else None
    n = b.names(name)

    def url(pod: str) -> str:
        return f"http://{pod}.{n['peers']}.{ns}.svc.cluster.local:{b.HTTP_PORT}"

    step = recovery.plan(name, dict(md.get("annotations") or {}), old, members, available, job,
                         url)  # fmt: skip
    if step.event is not None:
        reason, msg, warn = step.event
        (kopf.warn if warn else kopf.info)(body, reason=reason, message=msg)
        log.warning("%s/%s: %s: %s", ns, name, reason, msg)
    if step.action == "export":
        if backups.owns_claim(owner):
            pvc = backups.backup_pvc(owner)
            try:
                core.create_namespaced_persistent_volume_claim(ns, pvc)
            except ApiException as e:
                if e.status != 409:
                    raise
        chown = b.needs_chown(cr["spec"], _provisioner(None))
        jb = backups.backup_job(owner, cr, dt.datetime.now(dt.UTC), chown=chown,
                                local_from=step.source_url)  # fmt: skip
        jb["metadata"]["ownerReferences"] = [b.owner_reference(cr)]
        try:
            batch.create_namespaced_job(ns, jb)
        except ApiException as e:
            if e.status != 409:
                raise
    elif step.action == "rebuild":
        # The new cluster id, initial state "new" and the restore source go
        # into the ConfigMap and the StatefulSets first; then every member's
        # volume and pod is deleted, and the StatefulSets make new ones.
        ensure(cr, {**status, "recovery": step.recovery})
        sel = ",".join(f"{k}={v}" for k, v in b.labels(name).items())
        for pvc in core.list_namespaced_persistent_volume_claim(
            ns, label_selector=sel + ",app.kubernetes.io/component in (acceptor,learner)"
        ).items:
            try:
                core.delete_namespaced_persistent_volume_claim(pvc.metadata.name, ns)
            except ApiException as e:
                if e.status != 404:
                    raise
        for p in core.list_namespaced_pod(ns, label_selector=sel).items:
            pre = kubernetes.client.V1DeleteOptions(
                grace_period_seconds=0,
                preconditions=kubernetes.client.V1Preconditions(uid=p.metadata.uid),
            )
            try:
                core.delete_namespaced_pod(p.metadata.name, ns, body=pre)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
    elif step.action == "done":
        custom: Any = kubernetes.client.CustomObjectsApi(_api())
        custom.patch_namespaced_custom_object(
            b.GROUP, b.VERSION, ns, b.PLURAL, name,
            {"metadata": {"annotations": {recovery.REQUEST: None, recovery.FROM: None}}},
        )  # fmt: skip
    return step.recovery if step.recovery is not None and step.recovery != old else None


def _job_view(core: Any, ns: str, job: Any) -> Obj:
    conds = {c.type: c.status for c in job.status.conditions or []}
    state = ("succeeded" if conds.get("Complete") == "True"
             else "failed" if conds.get("Failed") == "True" else "running")  # fmt: skip
    message = ""
    if state != "running":
        for p in core.list_namespaced_pod(ns, label_selector=f"job-name={job.metadata.name}").items:
            for cs in p.status.container_statuses or []:
                t = cs.state.terminated if cs.state else None
                if t is not None and t.message:
                    message = t.message
    return {"state": state, "report": backups.parse_report(message), "message": message}


def _rotate_key(body: kopf.Body, members: dict[str, Obj | None], expected: int) -> None:
    """One step of a key rotation the user asked for (rotation.py), decided
    on the Secret and the members' answers read in this cycle."""
    md = body["metadata"]
    request = (md.get("annotations") or {}).get(rotation.REQUEST)
    if not request:
        return
    core = kubernetes.client.CoreV1Api(_api())
    name = b.names(md["name"])["secret"]
    sec: Any = core.read_namespaced_secret(name, md["namespace"])
    text = base64.b64decode((sec.data or {}).get("cluster.key", "")).decode()
    mark = (sec.metadata.annotations or {}).get(rotation.MARK)
    try:
        step = rotation.plan(request, text, mark, members, expected, secrets.token_hex(32))
    except ValueError as e:
        kopf.warn(body, reason="KeyRotationStuck", message=str(e))
        return
    if isinstance(step, rotation.Wait):
        log.info("%s/%s: %s", md["namespace"], md["name"], step.message)
        return
    if step is None:
        return
    core.patch_namespaced_secret(name, md["namespace"], {
        "metadata": {"annotations": {rotation.MARK: step.mark}},
        "data": {"cluster.key": base64.b64encode(step.text.encode()).decode()},
    })  # fmt: skip
    # Each node's own key file follows at once (the reconcile would too).
    apply(_node_keys({"metadata": dict(md), "spec": b.spec_with_defaults(dict(body["spec"]))}))
    kopf.info(body, reason="KeyRotation", message=step.message)


async def _none() -> None:
    return None


async def _statuses(pods: list[Any]) -> dict[str, Obj | None]:
    """Each pod's /v1/status, asked now (None: no answer within 1.5 s)."""
    timeout = aiohttp.ClientTimeout(total=1.5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answers = await asyncio.gather(
            *(
                _member_status(session, p.status.pod_ip) if p.status.pod_ip else _none()
                for p in pods
            )
        )
    return {p.metadata.name: a for p, a in zip(pods, answers, strict=True)}


def _ready_for(p: Any, now: dt.datetime) -> float | None:
    """Seconds since the pod's Ready condition became True (None: not Ready)."""
    for c in p.status.conditions or []:
        if c.type == "Ready":
            if c.status != "True":
                return None
            t = c.last_transition_time
            return max(0.0, (now - t).total_seconds()) if t else 0.0
    return None


async def _rolling_restart(
    body: kopf.Body, core: Any, apps: Any, ns: str, name: str, spec: Obj
) -> RestartPlan | None:
    """Restart at most one out-of-date member, from fresh observations: the
    pods and their Ready conditions are listed from the API, and every member
    is asked for its status, here, just before the decision (status.next_restart
    says what must hold). Returns the plan (None: no StatefulSet yet)."""
    n = b.names(name)
    revs: dict[str, str] = {}
    for role, sts_name in (("acceptor", n["acceptors"]), ("learner", n["learners"])):
        try:
            sts = await asyncio.to_thread(apps.read_namespaced_stateful_set, sts_name, ns)
        except ApiException as e:
            if e.status != 404:
                raise
            continue
        if sts.status.update_revision:
            revs[role] = sts.status.update_revision
    if "acceptor" not in revs:
        return None
    sel = ",".join(f"{k}={v}" for k, v in b.labels(name).items())
    pods = (await asyncio.to_thread(core.list_namespaced_pod, ns, label_selector=sel)).items
    members = await _statuses(pods)
    now = dt.datetime.now(dt.UTC)
    views: dict[str, Obj] = {}
    for p in pods:
        role = p.metadata.labels.get("app.kubernetes.io/component")
        if role not in revs:
            continue
        views[p.metadata.name] = {
            "outdated": p.metadata.labels.get("controller-revision-hash") != revs[role],
            "acceptor": role == "acceptor",
            "deleting": p.metadata.deletion_timestamp is not None,
            "ready": _ready_for(p, now) is not None,
            "ready_for": _ready_for(p, now),
            "uid": p.metadata.uid,
        }
    expected = [f"{n['acceptors']}-{i}" for i in range(spec["acceptors"])]
    expected += [f"{n['learners']}-{i}" for i in range(spec["learners"])]
    plan = next_restart(views, members, expected, settle=SETTLE)
    if plan.pod is None:
        return plan
    # Only the pod we looked at: by now its name may be its replacement's.
    pre = kubernetes.client.V1DeleteOptions(
        preconditions=kubernetes.client.V1Preconditions(uid=views[plan.pod]["uid"])
    )
    try:
        await asyncio.to_thread(core.delete_namespaced_pod, plan.pod, ns, body=pre)
    except ApiException as e:
        if e.status not in (404, 409):
            raise
        return plan
    log.info("rolling restart of %s (%s)", plan.pod, plan.why)
    kopf.info(body, reason="RollingRestart", message=f"restarting {plan.pod} ({plan.why})")
    return RestartPlan(None, f"restarted {plan.pod}; waiting for it to be Ready and caught up")


def _finished_ago(p: Any, now: dt.datetime) -> list[float | None]:
    """Per container of pod p: seconds since it exited (None: it may still run)."""
    return [
        exited_for(c.state.to_dict() if c.state else None,
                   c.last_state.to_dict() if c.last_state else None, now)
        for c in p.status.container_statuses or []
    ]  # fmt: skip


#: Pod uid -> monotonic time since when its member's port refuses connections.
_refused_since: dict[str, float] = {}


async def _refuses(ip: str | None) -> bool:
    """True if nothing listens on the member's HTTP port (connection refused);
    False if it answers, or on any doubt (a timeout, no address)."""
    if not ip:
        return False
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(ip, b.HTTP_PORT), 1.0)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError):
        return False
    w.close()
    return False


async def _refused_for(pods: list[Any]) -> dict[str, float | None]:
    """Per terminating pod: seconds its port has refused, in a row (None: not now)."""
    dying = [p for p in pods if p.metadata.deletion_timestamp is not None]
    answers = await asyncio.gather(*(_refuses(p.status.pod_ip) for p in dying))
    clock = asyncio.get_running_loop().time()
    out: dict[str, float | None] = {}
    for p, refused in zip(dying, answers, strict=True):
        uid = p.metadata.uid
        if refused:
            out[p.metadata.name] = clock - _refused_since.setdefault(uid, clock)
        else:
            _refused_since.pop(uid, None)
            out[p.metadata.name] = None
    live = {p.metadata.uid for p in dying}
    for uid in [u for u in _refused_since if u not in live]:
        del _refused_since[uid]
    return out


async def _release_exited_pods(
    body: kopf.Body, core: Any, ns: str, pods: list[Any], now: dt.datetime
) -> None:
    """Delete (grace 0) a terminating member pod whose process is gone: see
    status.pods_to_release. Only the pod we looked at (uid precondition)."""
    refused = await _refused_for(pods)
    views = [
        {"name": p.metadata.name, "deleting": p.metadata.deletion_timestamp is not None,
         "containers": _finished_ago(p, now), "refused_for": refused.get(p.metadata.name)}
        for p in pods
    ]  # fmt: skip
    uids = {p.metadata.name: p.metadata.uid for p in pods}
    for name in pods_to_release(views):
        opts = kubernetes.client.V1DeleteOptions(
            grace_period_seconds=0,
            preconditions=kubernetes.client.V1Preconditions(uid=uids[name]),
        )
        try:
            await asyncio.to_thread(core.delete_namespaced_pod, name, ns, body=opts)
        except ApiException as e:
            if e.status in (404, 409):
                continue
            raise
        msg = (f"{name}: its process is gone (containers exited, or its port refused "
               "connections past the stop deadline); deleted the pod object rather than "
               "wait for the kubelet's clean-up, so that its replacement starts")  # fmt: skip
        kopf.info(body, reason="ReleasedPod", message=msg)


async def _recreate_pods_of_lost_claims(
    body: kopf.Body, core: Any, ns: str, pods: list[Any]
) -> None:
    """A member pod Pending on a deleted PVC is deleted, so that the
    StatefulSet creates the pod and its claim again (see status.py)."""
    views = [
        {
            "name": p.metadata.name,
            "phase": p.status.phase,
            "deleting": p.metadata.deletion_timestamp is not None,
            "claims": [v.persistent_volume_claim.claim_name for v in p.spec.volumes or []
                       if v.persistent_volume_claim],
        }
        for p in pods
    ]  # fmt: skip
    if not any(v["phase"] == "Pending" and v["claims"] for v in views):
        return
    pvcs = (await asyncio.to_thread(core.list_namespaced_persistent_volume_claim, ns)).items
    claims = {c.metadata.name: c.metadata.deletion_timestamp is not None for c in pvcs}
    for name in pods_stuck_on_lost_claims(views, claims):
        try:
            await asyncio.to_thread(core.delete_namespaced_pod, name, ns)
        except ApiException as e:
            if e.status != 404:
                raise
            continue
        kopf.warn(body, reason="RecreatingPod",
                  message=f"{name} was Pending on a deleted PersistentVolumeClaim: deleted it so "
                  "that the StatefulSet creates the pod and a new, empty claim")  # fmt: skip


# The PaxosBackup handlers register with kopf when this module is loaded.
from . import backup_handlers  # noqa: E402, F401
