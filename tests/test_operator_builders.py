"""The operator's pure builders, without a cluster."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

from paxos_operator import builders as b
from paxosrsm.net.httpauth import load_grants
from paxosrsm.net.options import OptionsError, from_sources

ROOT = Path(__file__).resolve().parent.parent


def cr(acceptors: int = 3, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "paxosrsm.dev/v1alpha1",
        "kind": "PaxosCluster",
        "metadata": {"name": "px", "namespace": "ns", "uid": "u-1"},
        "spec": {"acceptors": acceptors, "image": "paxosrsm/node:1", **spec},
    }


def test_acceptor_statefulset_ordinals_are_acceptor_ids() -> None:
    sts = b.statefulset(cr(5), "acceptor")
    s = sts["spec"]
    assert s["replicas"] == 5 and s["podManagementPolicy"] == "Parallel"
    assert s["updateStrategy"] == {"type": "OnDelete"}
    assert s["serviceName"] == "px-peers"
    env = {e["name"]: e["value"] for e in s["template"]["spec"]["containers"][0]["env"]}
    assert env["PAXOS_ORDINAL_OFFSET"] == "0"
    assert s["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    ref = sts["metadata"]["ownerReferences"][0]
    assert ref["uid"] == "u-1" and ref["controller"] is True
    c = s["template"]["spec"]["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_learners_get_ids_after_the_acceptors() -> None:
    sts = b.statefulset(cr(3, learners=2), "learner")
    env = {e["name"]: e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PAXOS_ORDINAL_OFFSET"] == "3" and sts["spec"]["replicas"] == 2
    cm = b.configmap(cr(3, learners=2), "new")
    assert cm["data"]["PAXOS_ACCEPTORS"].count(",") == 2
    assert cm["data"]["PAXOS_LEARNERS"].startswith("px-learner-0.px-peers.ns.svc")
    # Every slot is listed whatever spec.learners says: scaling learners
    # changes the StatefulSet only, never the members' configuration.
    assert cm["data"] == b.configmap(cr(3, learners=0), "new")["data"]
    assert cm["data"]["PAXOS_LEARNERS"].count(",") == b.MAX_LEARNERS - 1


def test_learner_slots_match_the_crd_maximum() -> None:
    import yaml

    crd = yaml.safe_load((ROOT / "crds" / "paxoscluster.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["learners"]["maximum"] == b.MAX_LEARNERS


def test_headless_service_publishes_not_ready_addresses() -> None:
    svc = b.headless_service(cr())
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert {p["protocol"] for p in svc["spec"]["ports"]} == {"UDP", "TCP"}


@pytest.mark.parametrize(("n", "quorum"), [(1, 1), (3, 2), (5, 3), (9, 5)])
def test_pdb_keeps_a_majority(n: int, quorum: int) -> None:
    assert b.pdb(cr(n), "policy/v1")["spec"]["minAvailable"] == quorum
    assert b.pdb(cr(n), "policy/v1beta1")["apiVersion"] == "policy/v1beta1"


def test_initial_state_is_in_the_configmap() -> None:
    assert b.configmap(cr(), "new")["data"]["PAXOS_INITIAL_CLUSTER_STATE"] == "new"
    assert b.configmap(cr(), "existing")["data"]["PAXOS_INITIAL_CLUSTER_STATE"] == "existing"
    with pytest.raises(ValueError):
        b.configmap(cr(), "old")


def test_pod_template_overrides() -> None:
    pt = {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "annotations": {"a": "1"},
        "labels": {"team": "x", "app.kubernetes.io/instance": "hijack"},
    }
    sts = b.statefulset(cr(podTemplate=pt), "acceptor")
    tpl = sts["spec"]["template"]
    assert tpl["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert tpl["metadata"]["annotations"] == {"a": "1"}
    # Our selector labels win over the user's: the StatefulSet must select its pods.
    assert tpl["metadata"]["labels"]["app.kubernetes.io/instance"] == "px"
    assert tpl["metadata"]["labels"]["team"] == "x"


@pytest.mark.parametrize(
    ("spec", "old", "msg"),
    [
        ({"acceptors": 4, "image": "i"}, None, "odd number from 1 to 9"),
        ({"acceptors": 11, "image": "i"}, None, "odd number from 1 to 9"),
        ({"acceptors": 3, "image": "i"}, {"acceptors": 5}, "immutable"),
        ({"acceptors": 3, "image": "i", "storage": {"size": "-1Gi"}}, None, "non-negative"),
        ({"acceptors": 3}, None, "image is required"),
        ({"acceptors": 3, "image": "i", "learners": -1}, None, "learners"),
    ],
)
def test_validation_messages(
    spec: dict[str, object], old: dict[str, object] | None, msg: str
) -> None:
    errs = b.validate(spec, old)
    assert any(msg in e for e in errs), errs


def test_valid_specs_pass_and_builders_do_not_mutate_input() -> None:
    c = cr(3, learners=1)
    before = copy.deepcopy(c)
    assert b.validate(c["spec"]) == []  # type: ignore[arg-type]
    for role in ("acceptor", "learner"):
        b.statefulset(c, role)
    b.configmap(c, "new")
    assert c == before


def test_covers_skips_patches_that_change_nothing() -> None:
    sts = b.statefulset(cr(3), "acceptor")
    live = copy.deepcopy(sts)
    # The server adds defaults; they do not count as a difference.
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/x"
    live["metadata"]["resourceVersion"] = "7"
    assert b.covers(sts["spec"], live["spec"])
    changed = copy.deepcopy(live)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "other:1"
    assert not b.covers(sts["spec"], changed["spec"])
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    assert not b.covers(sts["spec"], scaled["spec"])
    fewer = copy.deepcopy(live)
    fewer["spec"]["template"]["spec"]["containers"][0]["env"].pop()
    assert not b.covers(sts["spec"], fewer["spec"])


def _pod_env(c: dict[str, object], role: str = "acceptor") -> dict[str, str]:
    """What a member's process sees: the ConfigMap, then the container's env."""
    env = dict(b.configmap(c, "new")["data"])
    pod = b.statefulset(c, role)["spec"]["template"]["spec"]
    env.update({e["name"]: e["value"] for e in pod["containers"][0]["env"]})
    return env


def test_members_serve_http_only_with_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: in Kubernetes the HTTP API is never anonymous. The member's
    settings pass the node's own validation (which refuses anonymous HTTP
    off loopback), name the mounted tokens file, and the generated Secret
    holds an admin token the node's parser accepts."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "px-acceptor-1")
    c = cr()
    env = _pod_env(c)
    assert env["PAXOS_HTTP_LISTEN"] == "0.0.0.0"
    assert env["PAXOS_HTTP_AUTH_FILE"] == f"{b.HTTP_AUTH_DIR}/tokens"
    pod = b.statefulset(c, "acceptor")["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["http-auth"]["secret"]["secretName"] == "px-http-auth"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["http-auth"]["mountPath"] == b.HTTP_AUTH_DIR and mounts["http-auth"]["readOnly"]
    opts = from_sources(None, {**env, "PAXOS_KEY_FILE": "k"})
    assert opts.http_auth_file and not opts.http_anonymous
    # The client Service's names pass the DNS-rebinding guard (net/browser.py).
    assert "px.ns.svc.cluster.local" in opts.http_allowed_hosts.split(",")
    without = {k: v for k, v in env.items() if k != "PAXOS_HTTP_AUTH_FILE"}
    with pytest.raises(OptionsError, match="--http-auth-file"):
        from_sources(None, {**without, "PAXOS_KEY_FILE": "k"})

    sec = b.http_auth_secret(c, "t" * 43)
    assert sec["metadata"]["name"] == "px-http-auth"
    tokens = tmp_path / "tokens"
    tokens.write_bytes(base64.b64decode(sec["data"]["tokens"]))
    grants = load_grants(tokens)
    assert [(g.name, g.role, g.prefix) for g in grants.values()] == [("admin", "admin", "")]
    assert base64.b64decode(sec["data"]["admin-token"]) == b"t" * 43
    with pytest.raises(ValueError):
        b.http_auth_secret(c, "short")

    own = cr(auth={"httpTokensSecret": "my-tokens"})
    pod = b.statefulset(own, "learner")["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["http-auth"]["secret"]["secretName"] == "my-tokens"
    assert b.validate(cr(auth={"httpTokensSecret": "Bad_Name"}))


def test_the_client_service_does_not_expose_the_peer_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: peer traffic on its own port, which the client Service does
    not expose; the NetworkPolicy admits only the cluster's own pods to it."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "px-acceptor-0")
    c = cr()
    svc_ports = {(p["port"], p["protocol"]) for p in b.client_service(c)["spec"]["ports"]}
    assert (b.PEER_PORT, "UDP") not in svc_ports and (b.PEER_PORT, "TCP") not in svc_ports
    assert {(b.CLIENT_PORT, "UDP"), (b.CLIENT_PORT, "TCP"), (b.HTTP_PORT, "TCP")} <= svc_ports
    assert (b.GRPC_PORT, "TCP") in svc_ports  # etcd's v3 API (issue 13)
    opts = from_sources(None, {**_pod_env(c), "PAXOS_KEY_FILE": "k"})
    assert opts.port == b.PEER_PORT and opts.client_port == b.CLIENT_PORT
    assert opts.grpc_port == b.GRPC_PORT and opts.http_auth_file  # gRPC under the tokens
    np = b.network_policy(c)
    peer_rule, open_rule = np["spec"]["ingress"]
    assert peer_rule["from"] == [{"podSelector": {"matchLabels": b.labels("px")}}]
    assert {p["port"] for p in peer_rule["ports"]} == {b.PEER_PORT}
    assert "from" not in open_rule and b.PEER_PORT not in {p["port"] for p in open_rule["ports"]}
    rbac = (ROOT / "charts/paxosrsm-operator/templates/_helpers.tpl").read_text()
    assert "networkpolicies" in rbac


def test_each_member_gets_its_own_key_file_and_sees_no_other(tmp_path: Path) -> None:
    """Issue 12, node identities: the operator makes every member's key file
    from the cluster key and an identity secret no pod mounts; the node
    container mounts only an in-memory directory that the key-sync
    containers fill with its own file (by ordinal), so a compromised node
    holds its own pair keys only. The sync script is run here for real."""
    import subprocess

    from paxosrsm.net import auth

    c = cr(acceptors=3, learners=1)
    ckey = "2 " + "n" * 32 + "\n1 " + "o" * 32 + "\n"
    sec = b.node_keys_secret(c, ckey, "i" * 64)
    assert sec["metadata"]["name"] == "px-node-keys"
    files = {k: base64.b64decode(v).decode() for k, v in sec["data"].items()}
    # Every learner slot has its file and pairs already: scaling learners up
    # changes no running member's file.
    n = 3 + b.MAX_LEARNERS
    assert sorted(files) == sorted(f"node-{i}" for i in range(n))
    assert sum(len(v) for v in sec["data"].values()) < 512 << 10  # far below a Secret's 1 MiB
    rings = {int(k[5:]): auth.Keyring.parse(v) for k, v in files.items()}
    for i, r in rings.items():
        assert r.identity and r.primary == 2 and sorted(r.masters) == [1, 2]
        assert sorted(r.pairs[2]) == [j for j in range(n) if j != i]
    # Pair keys agree between the two ends, and differ between pairs.
    assert rings[0].key(2, auth.PEER, 3) == rings[3].key(2, auth.PEER, 0)
    assert rings[0].key(2, auth.PEER, 1) != rings[0].key(2, auth.PEER, 3)
    # Another identity secret: other pair keys.
    other = b.node_keys_secret(c, ckey, "j" * 64)
    assert other["data"]["node-0"] != sec["data"]["node-0"]
    with pytest.raises(ValueError):
        b.node_keys_secret(c, ckey, "short")
    assert b.identity_secret(c, "a" * 64)["metadata"]["name"] == "px-identity"

    for role, offset in (("acceptor", 0), ("learner", 3)):
        pod = b.statefulset(c, role, chown=True)["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["node-keys"]["secret"]["secretName"] == "px-node-keys"
        assert vols["key"]["emptyDir"]["medium"] == "Memory"
        assert "px-key" not in json.dumps(vols) and "px-identity" not in json.dumps(vols)
        node = pod["containers"][0]
        assert {m["name"] for m in node["volumeMounts"]} == {"data", "key", "http-auth", "tmp"}
        env = {e["name"]: e["value"] for e in node["env"]}
        assert env["PAXOS_KEY_FILE"] == f"{b.KEY_DIR}/node.key"
        sync = [x for x in pod["initContainers"] + pod["containers"][1:]]
        assert [x["name"] for x in sync] == ["data-owner", "node-key", "key-sync"]
        for x in sync[1:]:
            assert {m["name"] for m in x["volumeMounts"]} == {"node-keys", "key"}
            assert x["securityContext"]["runAsNonRoot"]
            assert {"name": "PAXOS_ORDINAL_OFFSET", "value": str(offset)} in x["env"]
        assert pod["automountServiceAccountToken"] is False

    # The script, on real directories: it copies member 3's file (learner
    # ordinal 0), keeps it when unchanged (same inode: no reload), replaces
    # it atomically when the Secret changes.
    keys, key = tmp_path / "keys", tmp_path / "key"
    keys.mkdir()
    key.mkdir()
    for k, v in files.items():
        (keys / k).write_text(v)
    script = b._KEY_SYNC.format(keys=keys, key=key) + 'test -f "$src" && sync'
    env = {"HOSTNAME": "px-learner-0", "PAXOS_ORDINAL_OFFSET": "3", "PATH": "/usr/bin:/bin"}
    subprocess.run(["sh", "-c", script], env=env, check=True)
    assert (key / "node.key").read_text() == files["node-3"]
    assert (key / "node.key").stat().st_mode & 0o777 == 0o600
    ino = (key / "node.key").stat().st_ino
    subprocess.run(["sh", "-c", script], env=env, check=True)
    assert (key / "node.key").stat().st_ino == ino
    (keys / "node-3").write_text(files["node-0"])
    subprocess.run(["sh", "-c", script], env=env, check=True)
    assert (key / "node.key").read_text() == files["node-0"]
    assert (key / "node.key").stat().st_ino != ino
    # No file for this member (the Secret not made yet): the init step fails.
    env["HOSTNAME"] = "px-learner-99"
    assert subprocess.run(["sh", "-c", script], env=env).returncode != 0
    assert "sleep 2" in b.key_sync_script(True) and "trap" in b.key_sync_script(True)
