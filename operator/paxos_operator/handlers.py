"""kopf handlers: thin. Each adopts what the pure builders make and makes one
idempotent API call per object; a timer reconciles on observed state.

Run: ``kopf run -m paxos_operator.handlers --all-namespaces`` (the image does).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
from typing import Any

import aiohttp
import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from . import builders as b
from .status import next_restart, pods_stuck_on_lost_claims, summarize

Obj = dict[str, Any]
log = logging.getLogger("paxos_operator")
#: Seconds between retries of a failed create/update/resume handler.
RETRY_BACKOFF = 10.0
_state: dict[str, str] = {}


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


def apply(obj: Obj, *, replace_fields: tuple[str, ...] = ("spec", "data")) -> str:
    """Create ``obj``, or patch the fields we own if they differ. Idempotent.

    Returns "created", "updated" (the server's object changed) or
    "unchanged"; nothing is written when the live object already holds
    every field we own (b.covers), so a steady cluster costs reads only."""
    dyn = kubernetes.dynamic.DynamicClient(_api())
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
    dyn = kubernetes.dynamic.DynamicClient(_api())
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
    # A failing handler is retried every RETRY_BACKOFF seconds (a failing
    # timer runs again on its next interval); PermanentError is not retried.
    settings.execution.max_workers = 4
    # Watches end on the server every 30 s and are re-opened (from the last
    # resourceVersion, so nothing is missed); a stalled connection is given up
    # after 40 s. Without this, a silently dead watch stream delays a new
    # PaxosCluster until kopf's inactivity timeout (70 s).
    settings.watching.server_timeout = 30
    settings.watching.client_timeout = 40
    settings.watching.connect_timeout = 10
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


@kopf.on.create(b.GROUP, b.VERSION, b.PLURAL, backoff=RETRY_BACKOFF)
def on_create(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile(body, patch)


@kopf.on.resume(b.GROUP, b.VERSION, b.PLURAL, backoff=RETRY_BACKOFF)
def on_resume(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile(body, patch)


@kopf.on.update(b.GROUP, b.VERSION, b.PLURAL, backoff=RETRY_BACKOFF)
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
    md = cr["metadata"]
    n = b.names(md["name"])
    if not _exists("Secret", "v1", n["secret"], md["namespace"]):
        key = base64.b64encode(base64.b64encode(os.urandom(32))).decode()
        apply(b.secret(cr, key))  # created once; never rotated by a reconcile
    initial = "existing" if status.get("everAvailable") else "new"
    objs = [
        b.configmap(cr, initial),
        b.headless_service(cr),
        b.client_service(cr),
        b.statefulset(cr, "acceptor"),
        b.statefulset(cr, "learner"),
        b.pdb(cr, _pdb_version()),
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
    core = kubernetes.client.CoreV1Api(_api())
    sel = ",".join(f"{k}={v}" for k, v in b.labels(meta["name"]).items())
    core.delete_collection_namespaced_persistent_volume_claim(meta["namespace"], label_selector=sel)
    kopf.info(body, reason="VolumesDeleted", message="reclaimPolicy Delete: PVCs deleted")


# ---------------------------------------------------------------- observed state


async def _member_status(session: aiohttp.ClientSession, ip: str) -> Obj | None:
    try:
        async with session.get(f"http://{ip}:{b.HTTP_PORT}/v1/status") as r:
            out: Obj = await r.json()
            return out
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


@kopf.timer(b.GROUP, b.VERSION, b.PLURAL, interval=5.0, idle=0)
async def observe(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    cr = dict(body)
    md, spec = cr["metadata"], b.spec_with_defaults(dict(cr["spec"]))
    errs = b.validate(spec, accepted_spec(body))
    if errs:
        # Never apply a refused spec, not even from the timer.
        patch.status["phase"] = "Invalid"
        patch.status["invalidSpec"] = "; ".join(errs)
        return
    patch.status["acceptors"] = spec["acceptors"]
    # Reconcile on observed state, not only on change events: whatever was
    # deleted or drifted is put back (create, or patch the fields we own).
    await asyncio.to_thread(ensure, {**cr, "spec": spec}, dict(body.get("status") or {}))
    core = kubernetes.client.CoreV1Api(_api())
    apps = kubernetes.client.AppsV1Api(_api())
    sel = ",".join(f"{k}={v}" for k, v in b.labels(md["name"]).items())
    pods = (await asyncio.to_thread(core.list_namespaced_pod, md["namespace"],
                                    label_selector=sel)).items  # fmt: skip
    timeout = aiohttp.ClientTimeout(total=1.5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answers = await asyncio.gather(
            *(
                _member_status(session, p.status.pod_ip) if p.status.pod_ip else _none()
                for p in pods
            )
        )
    members = {p.metadata.name: a for p, a in zip(pods, answers, strict=True)}
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
    # Rolling upgrade (OnDelete): one member at a time, quorum-aware.
    n = b.names(md["name"])
    updating = False
    pod_info: dict[str, Obj] = {}
    for role, sts_name in (("acceptor", n["acceptors"]), ("learner", n["learners"])):
        try:
            sts = await asyncio.to_thread(apps.read_namespaced_stateful_set, sts_name,
                                          md["namespace"])  # fmt: skip
        except ApiException:
            continue
        rev = sts.status.update_revision
        for p in pods:
            if p.metadata.labels.get("app.kubernetes.io/component") == role:
                outdated = p.metadata.labels.get("controller-revision-hash") != rev
                pod_info[p.metadata.name] = {
                    "outdated": outdated,
                    "acceptor": role == "acceptor",
                    "deleting": p.metadata.deletion_timestamp is not None,
                    "uid": p.metadata.uid,
                }
                updating = updating or outdated
    cand = next_restart(pod_info, members, spec["acceptors"])
    if cand is not None:
        # Only the pod we looked at: by now its name may be its replacement's.
        pre = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(uid=pod_info[cand]["uid"])
        )
        try:
            await asyncio.to_thread(core.delete_namespaced_pod, cand, md["namespace"], body=pre)
            kopf.info(body, reason="RollingRestart", message=f"restarting {cand} (out of date)")
        except ApiException as e:
            if e.status not in (404, 409):
                raise
    summary = summarize(spec["acceptors"], members, md.get("generation", 0),
                        dict(body.get("status") or {}), updating=updating, stuck=stuck)  # fmt: skip
    if summary["everAvailable"] and not (body.get("status") or {}).get("everAvailable"):
        # From now on a member with an empty disk must recover before voting.
        await asyncio.to_thread(
            core.patch_namespaced_config_map, n["config"], md["namespace"],
            {"data": {"PAXOS_INITIAL_CLUSTER_STATE": "existing"}},
        )  # fmt: skip
        kopf.info(body, reason="Bootstrapped", message="first Available: a member that starts "
                  "on an empty disk now recovers before it votes")  # fmt: skip
    for k, v in summary.items():
        patch.status[k] = v


async def _none() -> None:
    return None


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
