"""Pure builders: a PaxosCluster (a dict, as the API returns it) to manifest dicts.

No I/O and no Kubernetes client here: every function takes plain data and
returns plain data, so each is unit-tested without a cluster. The kopf handlers
(issue 5, in progress) adopt these objects and make one idempotent call each.
"""

from __future__ import annotations

import base64
import copy
import os
import re
from dataclasses import dataclass
from typing import Any

from paxosrsm.net import identity as ident

GROUP = "paxosrsm.dev"
VERSION = "v1alpha1"
PLURAL = "paxosclusters"
KIND = "PaxosCluster"
PEER_PORT = 7000
#: Clients' own port (UDP and TCP): the peer port + 1 (--client-port-offset).
#: The client Service exposes this one and HTTP, never the peer port.
CLIENT_PORT = 7001
HTTP_PORT = 8080
#: etcd's v3 API over gRPC (issue 13): etcd's own client port number.
GRPC_PORT = 2379
DATA_DIR = "/var/lib/paxosrsm"
KEY_DIR = "/etc/paxosrsm/key"
#: Where the key-sync containers see every node's key file; the node
#: container never mounts it: it sees its own file in KEY_DIR only.
NODE_KEYS_DIR = "/etc/paxosrsm/node-keys"
HTTP_AUTH_DIR = "/etc/paxosrsm/http-auth"
TLS_DIR = "/etc/paxosrsm/tls"
UID = 65534
#: Learner slots (ids N .. N+MAX_LEARNERS-1); the CRD's maximum for spec.learners.
MAX_LEARNERS = 32
#: The node image of a PaxosCluster that names none: the operator's own
#: version's (the chart sets it from image.node).
DEFAULT_NODE_IMAGE = os.environ.get("PAXOS_OPERATOR_NODE_IMAGE", "")

Obj = dict[str, Any]
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


#: Seconds a member pod is given to stop (see statefulset()).
TERMINATION_GRACE = 10


def names(name: str) -> dict[str, str]:
    return {
        "peers": f"{name}-peers",  # headless: stable DNS names per member
        "client": name,  # the client Service
        "acceptors": f"{name}-acceptor",
        "learners": f"{name}-learner",
        "secret": f"{name}-key",
        # Node identities (issue 12): the secret the node key files are made
        # from (the operator's alone: no pod mounts it), and those files.
        "identity": f"{name}-identity",
        "node_keys": f"{name}-node-keys",
        "http_auth": f"{name}-http-auth",  # bearer tokens of the HTTP API
        "config": f"{name}-config",
        "pdb": f"{name}-acceptors",
    }


def labels(name: str, component: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "paxosrsm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "paxos-operator",
    }
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def spec_with_defaults(spec: Obj) -> Obj:
    """The spec with the CRD's defaults filled in (the API server does this too,
    but the operator must not depend on it: on 1.20 a default may be missing)."""
    s = copy.deepcopy(spec)
    if not s.get("image") and DEFAULT_NODE_IMAGE:
        s["image"] = DEFAULT_NODE_IMAGE
    s.setdefault("learners", 0)
    s.setdefault("imagePullPolicy", "IfNotPresent")
    st = s.setdefault("storage", {})
    st.setdefault("size", "1Gi")
    st.setdefault("reclaimPolicy", "Retain")
    p = s.setdefault("protocol", {})
    p.setdefault("nack", True)
    p.setdefault("maxBatch", 256)
    p.setdefault("window", 64)
    p.setdefault("snapshotInterval", 10_000)
    s.setdefault("podTemplate", {})
    s.setdefault("auth", {})
    f = s.setdefault("forceDeleteStuckPods", {})
    f.setdefault("enabled", False)
    f.setdefault("afterSeconds", 300)
    return s


def validate(spec: Obj, old_spec: Obj | None = None) -> list[str]:
    """Every problem with a spec, as clear messages (empty: valid). The CRD's
    schema says most of this too; the operator checks again because Kubernetes
    1.20 drops the CEL rule that makes ``acceptors`` immutable."""
    errs: list[str] = []
    a = spec.get("acceptors")
    if type(a) is not int or a not in (1, 3, 5, 7, 9):
        errs.append(f"spec.acceptors must be an odd number from 1 to 9 (2f+1), got {a!r}")
    if old_spec is not None and old_spec.get("acceptors") != a:
        errs.append(
            f"spec.acceptors is immutable (was {old_spec.get('acceptors')}, now {a}): the "
            "acceptor set is fixed for the life of a cluster; create a new PaxosCluster instead"
        )
    lr = spec.get("learners", 0)
    if type(lr) is not int or not 0 <= lr <= 32:
        errs.append(f"spec.learners must be an integer from 0 to 32, got {lr!r}")
    img = spec.get("image") or DEFAULT_NODE_IMAGE
    if not isinstance(img, str) or not img:
        errs.append("spec.image is required (this operator has no default node image)")
    tls = (spec.get("tls") or {}).get("secretName")
    if tls is not None and (not isinstance(tls, str) or not _DNS_NAME.match(tls)):
        errs.append(f"spec.tls.secretName must name a Secret, got {tls!r}")
    sec = (spec.get("auth") or {}).get("httpTokensSecret")
    if sec is not None and (not isinstance(sec, str) or not _DNS_NAME.match(sec)):
        errs.append(f"spec.auth.httpTokensSecret must name a Secret, got {sec!r}")
    size = spec.get("storage", {}).get("size", "1Gi")
    if not isinstance(size, str) or not _QUANTITY.match(size):
        errs.append(f"spec.storage.size must be a non-negative quantity such as 1Gi, got {size!r}")
    return errs


def owner_reference(cr: Obj, kind: str = KIND) -> Obj:
    """The controller reference to one of our resources (a PaxosCluster by default)."""
    md = cr["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "name": md["name"],
        "uid": md["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(cr: Obj, name: str, component: str | None) -> Obj:
    md = cr["metadata"]
    return {
        "name": name,
        "namespace": md["namespace"],
        "labels": labels(md["name"], component),
        "ownerReferences": [owner_reference(cr)],
    }


def acceptor_addresses(cr: Obj) -> list[str]:
    """``host:port`` of acceptor i = ordinal i, by the headless Service's DNS."""
    md = cr["metadata"]
    n = names(md["name"])
    return [
        f"{n['acceptors']}-{i}.{n['peers']}.{md['namespace']}.svc.cluster.local:{PEER_PORT}"
        for i in range(cr["spec"]["acceptors"])
    ]


def service_host_names(cr: Obj) -> list[str]:
    """Every name of the client Service a request may carry in its Host header."""
    md = cr["metadata"]
    svc, ns = names(md["name"])["client"], md["namespace"]
    return [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]


def learner_addresses(cr: Obj) -> list[str]:
    """Every learner *slot* (MAX_LEARNERS, the CRD's maximum), not just the
    running learners: the list is part of every member's configuration, and
    it must not change when spec.learners does, or scaling learners would
    mean restarting the acceptors. A slot whose pod does not exist costs a
    DNS lookup with backoff and nothing else; a learner that starts
    introduces itself by pulling (docs/design.md, "Learners come and go").
    The trailing dot makes the name absolute (no search-domain expansion for
    the names that do not exist)."""
    md = cr["metadata"]
    n = names(md["name"])
    return [
        f"{n['learners']}-{i}.{n['peers']}.{md['namespace']}.svc.cluster.local.:{PEER_PORT}"
        for i in range(MAX_LEARNERS)
    ]


def headless_service(cr: Obj) -> Obj:
    md = cr["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(cr, names(md["name"])["peers"], "peers"),
        "spec": {
            "clusterIP": "None",
            # Members must find each other before they are ready: a
            # recovering acceptor needs its peers to become ready at all.
            "publishNotReadyAddresses": True,
            "selector": labels(md["name"]),
            "ports": [
                {"name": "paxos-udp", "port": PEER_PORT, "protocol": "UDP"},
                {"name": "paxos-tcp", "port": PEER_PORT, "protocol": "TCP"},
                {"name": "client-udp", "port": CLIENT_PORT, "protocol": "UDP"},
                {"name": "client-tcp", "port": CLIENT_PORT, "protocol": "TCP"},
                {"name": "http", "port": HTTP_PORT, "protocol": "TCP"},
                {"name": "etcd-grpc", "port": GRPC_PORT, "protocol": "TCP"},
            ],
        },
    }


def client_service(cr: Obj) -> Obj:
    md = cr["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(cr, names(md["name"])["client"], "client"),
        "spec": {
            "selector": labels(md["name"]),
            # The client port and HTTP only: the peer port is not exposed
            # (issue 12), and the NetworkPolicy keeps other pods off it.
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
                {"name": "client-udp", "port": CLIENT_PORT, "protocol": "UDP"},
                {"name": "client-tcp", "port": CLIENT_PORT, "protocol": "TCP"},
                # etcd's v3 API: etcdctl and etcd clients, under the same tokens.
                {
                    "name": "etcd-grpc",
                    "port": GRPC_PORT,
                    "targetPort": GRPC_PORT,
                    "protocol": "TCP",
                },
            ],
        },
    }


def secret(cr: Obj, key_b64: str) -> Obj:
    md = cr["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(cr, names(md["name"])["secret"], "key"),
        "type": "Opaque",
        "data": {"cluster.key": key_b64},
    }


def identity_secret(cr: Obj, secret_hex: str) -> Obj:
    """The identity secret: with the cluster key it makes every node's key
    file (paxosrsm.net.identity). Only the operator reads it."""
    md = cr["metadata"]
    ident.parse_identity(secret_hex)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(cr, names(md["name"])["identity"], "identity"),
        "type": "Opaque",
        "data": {"identity.key": base64.b64encode(secret_hex.encode()).decode()},
    }


def member_ids(cr: Obj) -> list[int]:
    """Every id a member may have: the acceptors and every learner slot. The
    key files hold pair keys for learners not yet there, so that scaling
    learners up needs no change to the running members' files (which a
    Secret volume takes up to a minute or two to bring)."""
    s = spec_with_defaults(cr["spec"])
    return list(range(s["acceptors"] + MAX_LEARNERS))


def node_keys_secret(cr: Obj, cluster_key: str, identity_secret: str) -> Obj:
    """Every member's own key file (``node-<id>``), made from the cluster key
    as it stands (a rotation changes them all) and the identity secret. Each
    pod's key-sync containers copy their own file to the node container."""
    md = cr["metadata"]
    secret_b = ident.parse_identity(identity_secret)
    ids = member_ids(cr)
    data = {
        f"node-{i}": base64.b64encode(
            ident.node_key_file(cluster_key, secret_b, i, ids).encode()
        ).decode()
        for i in ids
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(cr, names(md["name"])["node_keys"], "node-keys"),
        "type": "Opaque",
        "data": data,
    }


#: The key-sync containers' script: copy this member's own key file (by
#: ordinal + offset) to the node's in-memory key directory when it changed,
#: atomically; with ``loop``, every 2 s (a rotation reaches the Secret volume,
#: then the node, which reloads it).
_KEY_SYNC = (
    'src="{keys}/node-$(( ${{HOSTNAME##*-}} + PAXOS_ORDINAL_OFFSET ))"; dst={key}/node.key; '
    'sync() {{ if ! cmp -s "$src" "$dst"; then cp "$src" "$dst.tmp" && chmod 600 "$dst.tmp" '
    '&& mv -f "$dst.tmp" "$dst"; fi; }}; '
)


def key_sync_script(loop: bool) -> str:
    base = _KEY_SYNC.format(keys=NODE_KEYS_DIR, key=KEY_DIR)
    if not loop:
        return base + 'test -f "$src" && sync'
    return base + "trap 'exit 0' TERM; while :; do sync; sleep 2 & wait $!; done"


def http_auth_secret_name(cr: Obj) -> str:
    """The Secret whose ``tokens`` file the nodes' HTTP API checks: the
    user's own (``spec.auth.httpTokensSecret``) or the one the operator made."""
    s = spec_with_defaults(cr["spec"])
    own = s["auth"].get("httpTokensSecret")
    return str(own) if own else names(cr["metadata"]["name"])["http_auth"]


def http_auth_secret(cr: Obj, token: str) -> Obj:
    """The tokens the operator makes when the user brings none: one ``admin``
    token (every key), also under ``admin-token`` for scripts. Users add
    tokens (``name role prefix token`` lines, see docs/kubernetes.md) by
    editing ``tokens``; the nodes reload it without a restart."""
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError("a token needs at least 16 characters and no spaces")
    md = cr["metadata"]
    tokens = f"# name role prefix token (roles: read, readwrite, admin)\nadmin admin * {token}\n"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(cr, names(md["name"])["http_auth"], "http-auth"),
        "type": "Opaque",
        "data": {
            "tokens": base64.b64encode(tokens.encode()).decode(),
            "admin-token": base64.b64encode(token.encode()).decode(),
        },
    }


def configmap(cr: Obj, initial_state: str, cluster_id: str | None = None) -> Obj:
    """``initial_state`` is "new" only until the cluster first became Available
    (and during a forced new cluster, recovery.py, which also gives a new
    ``cluster_id``)."""
    if initial_state not in ("new", "existing"):
        raise ValueError("initial_state must be new or existing")
    md = cr["metadata"]
    s = spec_with_defaults(cr["spec"])
    p = s["protocol"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(cr, names(md["name"])["config"], "config"),
        "data": {
            "PAXOS_CLUSTER_ID": cluster_id or f"{md['namespace']}/{md['name']}/{md['uid']}",
            "PAXOS_ACCEPTORS": ",".join(acceptor_addresses(cr)),
            "PAXOS_LEARNERS": ",".join(learner_addresses(cr)),
            "PAXOS_NACK": "true" if p["nack"] else "false",
            "PAXOS_MAX_BATCH": str(p["maxBatch"]),
            "PAXOS_WINDOW": str(p["window"]),
            "PAXOS_SNAPSHOT_INTERVAL": str(p["snapshotInterval"]),
            "PAXOS_INITIAL_CLUSTER_STATE": initial_state,
            # The client Service's names, which the HTTP API must answer to
            # (other names are refused: DNS rebinding, net/browser.py).
            "PAXOS_HTTP_ALLOWED_HOSTS": ",".join(service_host_names(cr)),
        },
    }


@dataclass(frozen=True, slots=True)
class ApiLevel:
    """What the API server offers, found by discovery (handlers._api_level);
    every choice that differs by Kubernetes version goes through here
    (docs/kubernetes.md, "Kubernetes versions")."""

    minor: int = 20
    pdb: str = "policy/v1beta1"

    @property
    def pvc_retention(self) -> bool:
        """StatefulSet persistentVolumeClaimRetentionPolicy: beta and on by
        default from 1.27 (GA 1.32); older servers drop the field."""
        return self.minor >= 27

    @property
    def unhealthy_eviction(self) -> bool:
        """PDB unhealthyPodEvictionPolicy: beta, on by default from 1.27 (GA 1.31)."""
        return self.minor >= 27 and self.pdb == "policy/v1"


#: A current Kubernetes (what users run: 1.33 - 1.37).
CURRENT = ApiLevel(minor=33, pdb="policy/v1")


def chown_container(spec: Obj, path: str, volume: str) -> Obj:
    """Gives a volume to the nodes' uid, for volume types that ignore fsGroup
    (hostPath, as the in-tree host-path provisioner of test clusters makes).
    The only step that runs as root, with CHOWN alone; used only where the
    operator found such a volume type (storage.volumeOwnership, docs)."""
    return {
        "name": f"{volume}-owner",
        "image": spec["image"],
        "imagePullPolicy": spec["imagePullPolicy"],
        "command": ["chown", f"{UID}:{UID}", path],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": volume, "mountPath": path}],
    }


#: Provisioners whose volumes ignore fsGroup: their PVs need the chown step.
CHOWN_PROVISIONERS = ("kubernetes.io/host-path",)


def needs_chown(spec: Obj, provisioner: str | None = None) -> bool:
    """storage.volumeOwnership: Chown always; FSGroup never (the "restricted"
    Pod Security Standard: no container runs as root); Auto (default): only
    for a StorageClass whose provisioner ignores fsGroup (the handler looks
    the class up and passes its provisioner)."""
    mode = (spec.get("storage") or {}).get("volumeOwnership", "Auto")
    if mode == "Chown":
        return True
    if mode == "FSGroup":
        return False
    return provisioner in CHOWN_PROVISIONERS


def statefulset(
    cr: Obj,
    role: str,
    *,
    chown: bool = False,
    restore: Obj | None = None,
    level: ApiLevel | None = None,
) -> Obj:
    """Acceptors (ordinal i = acceptor id i) or learners (id N + ordinal).
    ``chown``: give the data volume to the nodes' uid first (needs_chown).
    ``restore``: {claimName, file} of a backup that seeds each empty member
    while the cluster bootstraps (backups.restore_container)."""
    from . import backups  # backups builds on this module

    if role not in ("acceptor", "learner"):
        raise ValueError(role)
    md = cr["metadata"]
    s = spec_with_defaults(cr["spec"])
    n = names(md["name"])
    sts_name = n["acceptors"] if role == "acceptor" else n["learners"]
    replicas = s["acceptors"] if role == "acceptor" else s["learners"]
    offset = 0 if role == "acceptor" else s["acceptors"]
    pt = s["podTemplate"]
    pod_labels = {**pt.get("labels", {}), **labels(md["name"], role)}
    container: Obj = {
        "name": "node",
        "image": s["image"],
        "imagePullPolicy": s["imagePullPolicy"],
        "envFrom": [{"configMapRef": {"name": n["config"]}}],
        "env": [
            {"name": "PAXOS_ORDINAL_OFFSET", "value": str(offset)},
            {"name": "PAXOS_DATA_DIR", "value": DATA_DIR},
            # Its own key file (an identity), copied in by the key-sync containers.
            {"name": "PAXOS_KEY_FILE", "value": f"{KEY_DIR}/node.key"},
            {"name": "PAXOS_PORT", "value": str(PEER_PORT)},
            {"name": "PAXOS_CLIENT_PORT_OFFSET", "value": str(CLIENT_PORT - PEER_PORT)},
            {"name": "PAXOS_HTTP_PORT", "value": str(HTTP_PORT)},
            {"name": "PAXOS_GRPC_PORT", "value": str(GRPC_PORT)},
            # Never anonymous in Kubernetes: every pod can reach this port.
            {"name": "PAXOS_HTTP_LISTEN", "value": "0.0.0.0"},
            {"name": "PAXOS_HTTP_AUTH_FILE", "value": f"{HTTP_AUTH_DIR}/tokens"},
        ],
        "ports": [
            {"name": "paxos-udp", "containerPort": PEER_PORT, "protocol": "UDP"},
            {"name": "paxos-tcp", "containerPort": PEER_PORT, "protocol": "TCP"},
            {"name": "client-udp", "containerPort": CLIENT_PORT, "protocol": "UDP"},
            {"name": "client-tcp", "containerPort": CLIENT_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "etcd-grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": HTTP_PORT},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": HTTP_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 5,
            "failureThreshold": 6,
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "key", "mountPath": KEY_DIR, "readOnly": True},
            {"name": "http-auth", "mountPath": HTTP_AUTH_DIR, "readOnly": True},
            # The root filesystem is read-only; SQLite may need a temp dir.
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},  # it binds ports above 1024 only
        },
    }
    if s.get("resources"):
        container["resources"] = s["resources"]
    tls = (s.get("tls") or {}).get("secretName")
    if tls:
        # TLS on the TCP paths (peer sessions, clients' large requests), with
        # the CA: each member's certificate must name its own DNS name
        # (<pod>.<name>-peers.<ns>.svc.cluster.local; a wildcard does).
        container["env"] += [
            {"name": "PAXOS_TLS_CERT", "value": f"{TLS_DIR}/tls.crt"},
            {"name": "PAXOS_TLS_KEY", "value": f"{TLS_DIR}/tls.key"},
            {"name": "PAXOS_TLS_CA", "value": f"{TLS_DIR}/ca.crt"},
        ]
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    sync_sc: Obj = {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    sync_mounts = [
        {"name": "node-keys", "mountPath": NODE_KEYS_DIR, "readOnly": True},
        {"name": "key", "mountPath": KEY_DIR},
    ]
    sync_env = [{"name": "PAXOS_ORDINAL_OFFSET", "value": str(offset)}]
    key_init: Obj = {
        "name": "node-key",
        "image": s["image"],
        "imagePullPolicy": s["imagePullPolicy"],
        "command": ["sh", "-c", key_sync_script(False)],
        "env": sync_env,
        "securityContext": sync_sc,
        "volumeMounts": sync_mounts,
    }
    key_sync: Obj = {
        **key_init,
        "name": "key-sync",
        "command": ["sh", "-c", key_sync_script(True)],
        "resources": {
            "requests": {"cpu": "5m", "memory": "8Mi"},
            "limits": {"memory": "32Mi"},
        },
    }
    inits: list[Obj] = [chown_container(s, DATA_DIR, "data")] if chown else []
    inits.append(key_init)
    if restore is not None:
        inits.append(backups.restore_container(cr, restore, offset))
    pod_spec: Obj = {
        # The "restricted" Pod Security Standard (with chown=False).
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # A node stops within STOP_DEADLINE (6 s, paxosrsm.net.main) of
        # SIGTERM. The grace period bounds the rest: the 1.20 kubelet at
        # times deletes a pod whose containers exited at once only when its
        # grace period ends, which held a StatefulSet's replacement back by
        # the whole period (issue 10: a pod healed after 54 s).
        "terminationGracePeriodSeconds": TERMINATION_GRACE,
        "initContainers": inits,
        "containers": [container, key_sync],
        # The node needs no Kubernetes API: no token in its pod.
        "automountServiceAccountToken": False,
        "volumes": [
            # Every node's key file: mounted in the key-sync containers only.
            {"name": "node-keys", "secret": {"secretName": n["node_keys"], "defaultMode": 0o400}},
            # This node's own key file, in memory.
            {"name": "key", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {
                "name": "http-auth",
                "secret": {"secretName": http_auth_secret_name(cr), "defaultMode": 0o400},
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if tls:
        pod_spec["volumes"].append(
            {"name": "tls", "secret": {"secretName": tls, "defaultMode": 0o400}}
        )
    if restore is not None and restore.get("claimName"):
        pod_spec["volumes"].append(
            {"name": "restore",
             "persistentVolumeClaim": {"claimName": restore["claimName"], "readOnly": True}}
        )  # fmt: skip
    for k in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints"):
        if pt.get(k):
            pod_spec[k] = pt[k]
    pvc: Obj = {
        "metadata": {"name": "data", "labels": labels(md["name"], role)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": s["storage"]["size"]}},
        },
    }
    if s["storage"].get("storageClassName"):
        pvc["spec"]["storageClassName"] = s["storage"]["storageClassName"]
    extra: Obj = {}
    if level is not None and level.pvc_retention:
        # Kubernetes itself keeps or deletes the claims as reclaimPolicy says
        # (the operator's delete handler does the same on older servers); a
        # learner scaled down keeps its claim, to come back with its log.
        when = "Delete" if s["storage"]["reclaimPolicy"] == "Delete" else "Retain"
        extra["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": when,
            "whenScaled": "Retain",
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(cr, sts_name, role),
        "spec": {
            **extra,
            "serviceName": n["peers"],
            "replicas": replicas,
            # All members start together: a cluster needs a majority to be ready.
            "podManagementPolicy": "Parallel",
            # The operator restarts members one at a time, quorum-aware.
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": labels(md["name"], role)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(pt.get("annotations", {}))},
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [pvc],
        },
    }


def network_policy(cr: Obj) -> Obj:
    """The peer port takes traffic from this cluster's members only; the
    client port and HTTP from anywhere (tokens and keys guard those). Needs
    a network plugin that enforces policies; without one it is inert."""
    md = cr["metadata"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(cr, f"{md['name']}-peers", "network"),
        "spec": {
            "podSelector": {"matchLabels": labels(md["name"])},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": labels(md["name"])}}],
                    "ports": [
                        {"port": PEER_PORT, "protocol": "UDP"},
                        {"port": PEER_PORT, "protocol": "TCP"},
                    ],
                },
                {
                    "ports": [
                        {"port": CLIENT_PORT, "protocol": "UDP"},
                        {"port": CLIENT_PORT, "protocol": "TCP"},
                        {"port": HTTP_PORT, "protocol": "TCP"},
                        {"port": GRPC_PORT, "protocol": "TCP"},
                    ]
                },
            ],
        },
    }


def pdb(cr: Obj, api_version: str | ApiLevel) -> Obj:
    """Never let voluntary disruptions take the acceptors below a majority.
    ``api_version``: "policy/v1" where the server offers it, else
    "policy/v1beta1" (or the server's ApiLevel)."""
    level = api_version if isinstance(api_version, ApiLevel) else None
    version = level.pdb if level is not None else api_version
    if version not in ("policy/v1", "policy/v1beta1"):
        raise ValueError(version)
    md = cr["metadata"]
    n = cr["spec"]["acceptors"]
    spec: Obj = {
        "minAvailable": n // 2 + 1,
        "selector": {"matchLabels": labels(md["name"], "acceptor")},
    }
    if level is not None and level.unhealthy_eviction:
        # A member that is not Ready (crash-looping, stuck) may be evicted
        # even when the budget is spent: it is not part of the quorum the
        # budget protects, and keeping it blocks node drains for nothing.
        spec["unhealthyPodEvictionPolicy"] = "AlwaysAllow"
    return {
        "apiVersion": version,
        "kind": "PodDisruptionBudget",
        "metadata": _meta(cr, names(md["name"])["pdb"], "acceptor"),
        "spec": spec,
    }


def covers(want: Any, have: Any) -> bool:
    """Whether the live object ``have`` already holds every field of ``want``
    (the server adds defaults, so extra fields in ``have`` are fine; lists
    must match item by item). The operator skips a patch that would change
    nothing."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(covers(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(covers(a, b) for a, b in zip(want, have, strict=True))
        )
    return bool(want == have)
