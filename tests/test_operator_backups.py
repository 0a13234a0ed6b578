"""The operator's backup, restore and pod-security builders, pure (no cluster)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_operator_builders import cr

from paxos_operator import backups as bk
from paxos_operator import builders as b

NOW = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)


def backup(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "paxosrsm.dev/v1alpha1",
        "kind": "PaxosBackup",
        "metadata": {
            "name": "nightly",
            "namespace": "ns",
            "uid": "b-1",
            "creationTimestamp": "2026-12-07T09:00:00Z",
        },
        "spec": {"cluster": "px", **spec},
    }


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def restricted(pod: dict[str, Any]) -> list[str]:
    """What breaks the "restricted" Pod Security Standard (the checks of
    its published rules that apply to these pods)."""
    bad = []
    psc = pod.get("securityContext", {})
    if psc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        bad.append("pod seccompProfile")
    for c in _containers(pod):
        sc = {**psc, **c.get("securityContext", {})}
        if not sc.get("runAsNonRoot") or sc.get("runAsUser") == 0:
            bad.append(f"{c['name']} may run as root")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{c['name']} allowPrivilegeEscalation")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{c['name']} capabilities")
    for v in pod.get("volumes", []):
        if not {"persistentVolumeClaim", "secret", "emptyDir", "configMap"} & set(v):
            bad.append(f"volume {v['name']}")
    return bad


def test_member_pods_meet_the_restricted_standard_unless_a_volume_needs_chown() -> None:
    for role in ("acceptor", "learner"):
        pod = b.statefulset(cr(3, learners=1), role)["spec"]["template"]["spec"]
        assert restricted(pod) == []
        assert pod["automountServiceAccountToken"] is False
        for v in pod["volumes"]:
            if "secret" in v:
                assert v["secret"]["defaultMode"] == 0o400
        chowned = b.statefulset(cr(3), role, chown=True)["spec"]["template"]["spec"]
        assert restricted(chowned) == ["data-owner may run as root", "data-owner capabilities"]


def test_volume_ownership_is_chown_only_where_fsgroup_is_ignored() -> None:
    assert b.needs_chown({}, "kubernetes.io/host-path") is True
    assert b.needs_chown({}, "ebs.csi.aws.com") is False
    assert b.needs_chown({}, None) is False
    assert b.needs_chown({"storage": {"volumeOwnership": "Chown"}}, "x") is True
    assert (
        b.needs_chown({"storage": {"volumeOwnership": "FSGroup"}}, "kubernetes.io/host-path")
        is False
    )


def test_backup_job_runs_paxosctl_against_every_member_with_the_admin_token() -> None:
    c = cr(3, learners=1)
    job = bk.backup_job(backup(keep=3), c, NOW)
    assert job["metadata"]["name"] == "nightly-20261207-093000"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "PaxosBackup"
    pod = job["spec"]["template"]["spec"]
    assert restricted(pod) == [] and pod["restartPolicy"] == "Never"
    ctr = pod["containers"][0]
    cmd = ctr["command"]
    assert cmd[:5] == ["python3", "-m", "paxosrsm.cli", "snapshot", "save"]
    assert cmd[cmd.index("--keep") + 1] == "3" and cmd[cmd.index("--prefix") + 1] == "nightly"
    urls = cmd[cmd.index("--endpoints") + 1].split(",")
    assert urls == [
        "http://px-acceptor-0.px-peers.ns.svc.cluster.local:8080", "http://px-acceptor-1.px-peers.ns.svc.cluster.local:8080",
        "http://px-acceptor-2.px-peers.ns.svc.cluster.local:8080", "http://px-learner-0.px-peers.ns.svc.cluster.local:8080",
    ]  # fmt: skip
    assert ctr["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "px-http-auth",
                                                          "key": "admin-token"}  # fmt: skip
    assert ctr["terminationMessagePolicy"] == "FallbackToLogsOnError"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["backups"]["persistentVolumeClaim"]["claimName"] == "nightly-backups"
    own = bk.backup_job(backup(tokenSecret={"name": "t", "key": "k"}), c, NOW, chown=True)
    opod = own["spec"]["template"]["spec"]
    assert opod["initContainers"][0]["name"] == "backups-owner"
    assert opod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "t", "key": "k"}
    local = bk.backup_job(backup(), c, NOW, local_from="http://m:8080")["spec"]["template"]
    assert local["spec"]["containers"][0]["command"][-3:] == ["--endpoints", "http://m:8080",
                                                              "--local"]  # fmt: skip


def test_the_backup_volume_is_never_owned_by_the_backup() -> None:
    pvc = bk.backup_pvc(backup(volume={"size": "5Gi", "storageClassName": "fast"}))
    assert "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert bk.claim_name(backup(volume={"claimName": "mine"})) == "mine"
    assert not bk.owns_claim(backup(volume={"claimName": "mine"}))


def test_when_backups_are_due() -> None:
    once = backup()
    assert bk.due(once, {}, NOW) == NOW
    assert bk.due(once, {"lastScheduleTime": NOW.isoformat()}, NOW) is None
    every5 = backup(schedule="*/5 * * * *")
    assert bk.due(every5, {}, NOW) == dt.datetime(2026, 12, 7, 9, 5, tzinfo=dt.UTC)
    st = {"lastScheduleTime": "2026-12-07T09:25:00+00:00"}
    assert bk.due(every5, st, NOW) == NOW
    assert bk.due(every5, st, NOW - dt.timedelta(seconds=1)) is None
    assert bk.next_run(every5, st, NOW) == dt.datetime(2026, 12, 7, 9, 35, tzinfo=dt.UTC)
    assert bk.max_age(every5, NOW) == 600.0 and bk.max_age(once, NOW) is None


@pytest.mark.parametrize(
    "spec, bad",
    [
        ({"cluster": "px"}, []),
        ({"cluster": "Px"}, ["spec.cluster"]),
        ({"cluster": "px", "schedule": "61 * * * *"}, ["spec.schedule"]),
        ({"cluster": "px", "keep": 0}, ["spec.keep"]),
        ({"cluster": "px", "keep": 101}, ["spec.keep"]),
        ({"cluster": "px", "volume": {"claimName": "a b"}}, ["spec.volume.claimName"]),
        ({"cluster": "px", "volume": {"size": "lots"}}, ["spec.volume.size"]),
        ({"cluster": "px", "tokenSecret": {"name": "x"}}, ["spec.tokenSecret"]),
    ],
)
def test_backup_specs_are_validated(spec: dict[str, Any], bad: list[str]) -> None:
    errs = bk.validate(spec)
    assert [e.split(" ")[0].rstrip(":") for e in errs] == bad


def test_a_run_s_report_becomes_the_status_list() -> None:
    old = [{"file": "nightly-20261206-030000.pxb"}, {"file": "nightly-20261205-030000.pxb"}]
    rep = bk.parse_report(json.dumps({
        "file": "nightly-20261207-030000.pxb", "size": 1024, "slot": 9, "revision": 7,
        "file_sha256": "ab", "read_index": 9,
        "kept": ["nightly-20261207-030000.pxb", "nightly-20261206-030000.pxb"],
        "deleted": ["nightly-20261205-030000.pxb"],
    }))  # fmt: skip
    assert rep is not None
    out = bk.record(old, rep, "2026-12-07T03:00:09Z")
    assert [e["file"] for e in out] == ["nightly-20261207-030000.pxb",
                                        "nightly-20261206-030000.pxb"]  # fmt: skip
    assert out[0] == {
        "file": "nightly-20261207-030000.pxb", "time": "2026-12-07T03:00:09Z",
        "size": 1024, "slot": 9, "revision": 7, "sha256": "ab", "readIndex": 9,
    }  # fmt: skip
    for junk in (None, "", "Traceback ...", "[]", '{"file": "../etc/passwd"}'):
        assert bk.parse_report(junk) is None


def test_restore_seeds_members_only_while_the_cluster_bootstraps(tmp_path: Path) -> None:
    src = {"claimName": "nightly-backups", "file": "nightly-20261207-030000.pxb"}
    c = cr(3, bootstrap={"fromBackup": src})
    assert bk.validate_restore(c["spec"]) == []  # type: ignore[arg-type]
    assert bk.validate_restore({"bootstrap": {"fromBackup": {"claimName": "x", "file": "a"}}})
    assert bk.restore_source(c) == src
    pod = b.statefulset(c, "acceptor", restore=src)["spec"]["template"]["spec"]
    assert [x["name"] for x in pod["initContainers"]] == ["node-key", "restore"]
    vol = next(v for v in pod["volumes"] if v["name"] == "restore")
    assert vol["persistentVolumeClaim"] == {"claimName": "nightly-backups", "readOnly": True}
    assert restricted(pod) == []
    # The script itself, by sh, with paxosctl replaced by an echo.
    script = bk.RESTORE_SCRIPT.replace("exec python3 -m paxosrsm.cli", "echo")
    env = {
        "PAXOS_DATA_DIR": str(tmp_path), "PAXOS_ORDINAL_OFFSET": "3",
        "PAXOS_CLUSTER_ID": "ns/px/u-2", "PAXOS_ACCEPTOR_COUNT": "3",
        "RESTORE_FILE": "/restore/f.pxb", "HOSTNAME": "px-learner-1", "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    run = lambda **e: subprocess.run(["sh", "-c", script], env={**env, **e},  # noqa: E731
                                     capture_output=True, text=True).stdout  # fmt: skip
    assert run(PAXOS_INITIAL_CLUSTER_STATE="new").split() == [
        "snapshot", "restore", "/restore/f.pxb", "--member-dir", str(tmp_path), "--cluster-id",
        "ns/px/u-2", "--node-id", "4", "--acceptors", "3"]  # fmt: skip
    assert "nothing to restore" in run(PAXOS_INITIAL_CLUSTER_STATE="existing")
    (tmp_path / "IDENTITY").write_text("x")
    assert "in use" in run(PAXOS_INITIAL_CLUSTER_STATE="new")


def test_manifests_for_a_current_api_level_and_for_1_20() -> None:
    """What differs by Kubernetes version, rendered for both (docs/kubernetes.md)."""
    old = b.ApiLevel(minor=20, pdb="policy/v1beta1")
    for reclaim, when in (("Retain", "Retain"), ("Delete", "Delete")):
        c = cr(3, storage={"reclaimPolicy": reclaim})
        sts = b.statefulset(c, "learner", level=b.CURRENT)["spec"]
        assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": when,
                                                               "whenScaled": "Retain"}  # fmt: skip
        old_sts = b.statefulset(c, "learner", level=old)["spec"]
        assert "persistentVolumeClaimRetentionPolicy" not in old_sts
    new_pdb = b.pdb(cr(5), b.CURRENT)
    assert new_pdb["apiVersion"] == "policy/v1"
    assert new_pdb["spec"] == {
        "minAvailable": 3,
        "selector": {"matchLabels": b.labels("px", "acceptor")},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    old_pdb = b.pdb(cr(5), old)
    assert old_pdb["apiVersion"] == "policy/v1beta1"
    assert "unhealthyPodEvictionPolicy" not in old_pdb["spec"]
    assert b.pdb(cr(3), "policy/v1")["spec"]["minAvailable"] == 2
    # Both CRDs carry CEL rules (ignored by 1.20, enforced by current servers).
    import yaml

    root = Path(__file__).resolve().parent.parent
    for f in ("paxoscluster.yaml", "paxosbackup.yaml"):
        crd = yaml.safe_load((root / "crds" / f).read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert "size() <= 40" in schema["x-kubernetes-validations"][0]["rule"]
        # Every field has a description (kubectl explain).
        missing = [p for p in _undescribed(schema["properties"]["spec"], "spec")]
        assert not missing, missing


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    out = [] if node.get("description") else [path]
    for k, v in (node.get("properties") or {}).items():
        out += _undescribed(v, f"{path}.{k}")
    return out


S3 = {"endpoint": "https://s3.example.com", "bucket": "paxos-backups", "path": "team/px",
      "credentialsSecret": "s3-keys", "region": "eu-west-1"}  # fmt: skip


def test_backups_to_an_s3_store_need_no_volume_and_take_keys_from_a_secret() -> None:
    b3 = backup(s3=S3, keep=3)
    assert bk.validate(b3["spec"]) == [] and not bk.owns_claim(b3)
    pod = bk.backup_job(b3, cr(3), NOW, chown=True)["spec"]["template"]["spec"]
    assert restricted(pod) == [] and "initContainers" not in pod  # no volume to chown
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    ctr = pod["containers"][0]
    cmd = ctr["command"]
    assert cmd[cmd.index("--dir") + 1] == "s3://paxos-backups/team/px"
    env = {e["name"]: e for e in ctr["env"]}
    assert env["PAXOS_S3_ENDPOINT"]["value"] == "https://s3.example.com"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    assert "paxos-backups" not in str(env["AWS_ACCESS_KEY_ID"])  # keys only from the Secret
    cases = [
        ({**S3, "endpoint": "ftp://x"}, "endpoint"),
        ({**S3, "bucket": "A"}, "bucket"),
        ({**S3, "path": "../x"}, "path"),
        ({**S3, "credentialsSecret": None}, "credentialsSecret"),
    ]
    for bad, field in cases:
        errs = bk.validate(backup(s3=bad)["spec"])
        assert len(errs) == 1 and f"spec.s3.{field}" in errs[0], errs
    rep = {"file": "nightly-20261207-030000.pxb", "url": "s3://paxos-backups/team/px/x.pxb"}
    assert bk.record([], rep, "t")[0]["url"] == rep["url"]


def test_a_restore_from_s3_downloads_in_the_init_container() -> None:
    url = "s3://paxos-backups/team/px/nightly-20261207-030000.pxb"
    src = {"s3": {k: v for k, v in S3.items() if k != "bucket"}, "url": url}
    c = cr(3, bootstrap={"fromBackup": src})
    assert bk.validate_restore(c["spec"]) == []  # type: ignore[arg-type]
    bad = {"bootstrap": {"fromBackup": {**src, "url": "s3://x"}}}
    assert bk.validate_restore(bad) != []
    source = bk.restore_source(c)
    assert source == src
    pod = b.statefulset(c, "acceptor", restore=source)["spec"]["template"]["spec"]
    assert "restore" not in {v["name"] for v in pod["volumes"]}
    init = next(x for x in pod["initContainers"] if x["name"] == "restore")
    env = {e["name"]: e for e in init["env"]}
    assert env["RESTORE_FILE"]["value"] == url
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-keys"
    assert restricted(pod) == []
