"""Day 2 on a real cluster (issue 14): backups under load and a restore into a
new cluster, scheduled backups rotating as their retention says, and a
quorum loss (2 of 3 PVCs deleted) brought back by the audited forced new
cluster. Run with `make e2e`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    GROUP,
    PLURAL,
    VERSION,
    cluster_status,
    create_cluster,
    custom,
    exec_http,
    healthy,
    paxoscluster,
    wait_for,
)
from load import LoadGen, assert_all_readable

BACKUPS = "paxosbackups"


@pytest.fixture(autouse=True)
def _settle_after(k8s: Any, namespace: str) -> Iterator[None]:
    """After each test here, delete its clusters and backups and wait until
    their pods are gone: these tests make many pods, Jobs and volumes, and
    their teardown slowed the kubelet in the next test, whose pod deletions
    are timed (a CI run: one member healthy again after 20.7 s of a 20 s
    limit, its volume mounted 13 s late)."""
    yield
    c = custom(k8s)
    for plural in (BACKUPS, PLURAL):
        for obj in c.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]:
            with contextlib.suppress(Exception):
                c.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                  obj["metadata"]["name"])  # fmt: skip
    core = k8s.client.CoreV1Api()
    # The test's own pods (the load generator, the S3 server) belong to no
    # controller: nothing else deletes them, and a Completed one stays.
    for pod in core.list_namespaced_pod(namespace).items:
        if not pod.metadata.owner_references:
            with contextlib.suppress(Exception):
                core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
    t0 = time.monotonic()
    try:
        wait_for(lambda: not core.list_namespaced_pod(namespace).items, 180,
                 f"the pods of {namespace} gone", every=2.0)  # fmt: skip
    except TimeoutError as e:
        print(f"warning: {e}")
    print(f"{namespace}: torn down in {time.monotonic() - t0:.1f}s")


def backup(name: str, cluster: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PaxosBackup",
            "metadata": {"name": name}, "spec": {"cluster": cluster, **spec}}  # fmt: skip


def backup_status(k8s: Any, ns: str, name: str) -> dict[str, Any]:
    obj = custom(k8s).get_namespaced_custom_object(GROUP, VERSION, ns, BACKUPS, name)
    return obj.get("status") or {}


def events(k8s: Any, ns: str, name: str) -> list[tuple[str, str]]:
    evs = (
        k8s.client.CoreV1Api()
        .list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
        .items
    )
    return [(e.reason, e.message) for e in sorted(evs, key=lambda e: e.metadata.creation_timestamp)]


def service_answers(k8s: Any, ns: str, cluster: str) -> None:
    """Wait until the client Service answers from inside the cluster. Right
    after a cluster becomes Available, the first connection to a new
    Service's ClusterIP can hang for 10 s on the local Kubernetes 1.20 (seen
    while kube-proxy programs its rules: a PUT to localhost in the same pod
    answered in 10 ms), which is the test cluster's plumbing, not the
    members'; the wait is printed."""
    t0 = time.monotonic()
    url = f"http://{cluster}.{ns}.svc.cluster.local:8080/v1/kv/service-check"

    def answers() -> bool:
        try:
            code, _ = exec_http(k8s, ns, f"{cluster}-acceptor-0", "GET", url)
        except ValueError:  # the request timed out inside the pod
            return False
        return code in (200, 404)

    wait_for(answers, 90, f"the {cluster} Service answering", every=1.0)
    print(f"{cluster}: the client Service answered {time.monotonic() - t0:.1f}s after Available")


def _wait_acks(load: LoadGen, n: int, timeout: float) -> None:
    wait_for(lambda: len(load.snapshot().acked) >= n, timeout, f"{n} writes acknowledged", every=1)


def test_backup_under_load_restore_and_scheduled_rotation(k8s: Any, namespace: str) -> None:
    ns = namespace
    create_cluster(k8s, ns, "bk")
    c = custom(k8s)
    with LoadGen(k8s, ns, "bk", rate=20) as load:
        _wait_acks(load, 100, 120)
        before = dict(load.snapshot().acked)  # acknowledged before the backup is asked for
        t0 = time.monotonic()
        c.create_namespaced_custom_object(GROUP, VERSION, ns, BACKUPS, backup("once", "bk"))

        def finished() -> dict[str, Any] | None:
            s = backup_status(k8s, ns, "once")
            return s if s.get("phase") in ("Succeeded", "Failed") else None

        st = wait_for(finished, 240, "the backup Job done", every=1.0)
        took = time.monotonic() - t0
        assert st["phase"] == "Succeeded", st
        _wait_acks(load, len(before) + 50, 120)  # the load went on during and after it
    res = load.stop()
    entry = st["backups"][0]
    print(f"backup under load: {took:.1f}s, {entry['file']} slot {entry['slot']} revision "
          f"{entry['revision']} {entry['size']} bytes sha256 {entry['sha256'][:16]}...; load: "
          f"{res.summary()}, {len(before)} acked before it")  # fmt: skip
    assert entry["readIndex"] is not None and entry["revision"] >= len(before)
    assert ("BackupSucceeded", st["message"]) in events(k8s, ns, "once")
    assert st["lastSuccessTime"] and not st.get("active")
    code, st_bk = exec_http(k8s, ns, "bk-acceptor-0", "GET", "http://localhost:8080/v1/status")
    assert code == 200

    # The cluster deleted, a new one from that file: every write acknowledged
    # before the backup reads back from it.
    c.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "bk")
    wait_for(lambda: not c.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"],
             120, "bk deleted", every=1.0)  # fmt: skip
    t1 = time.monotonic()
    spec = paxoscluster("rs", bootstrap={"fromBackup": {"claimName": "once-backups",
                                                        "file": entry["file"]}})  # fmt: skip
    c.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, spec)
    wait_for(lambda: healthy(k8s, ns, "rs"), 300, "rs Available, 3/3 ready", every=1.0)
    print(f"restore: apply -> Available in {time.monotonic() - t1:.1f}s")
    assert_all_readable(k8s, ns, "rs-acceptor-0", "rs", before)
    code, st_rs = exec_http(k8s, ns, "rs-acceptor-0", "GET", "http://localhost:8080/v1/status")
    assert code == 200 and st_rs["cluster_id"] != st_bk["cluster_id"]
    url = f"http://rs.{ns}.svc.cluster.local:8080/v1/kv/after-restore"
    code, out = exec_http(k8s, ns, "rs-acceptor-0", "PUT", url, "yes")
    assert code == 200, out

    # Scheduled backups of the new cluster, every minute, keep 2: after the
    # third run the first file is gone.
    t_sched = time.monotonic()
    every = backup("every-minute", "rs", schedule="* * * * *", keep=2)
    c.create_namespaced_custom_object(GROUP, VERSION, ns, BACKUPS, every)

    def rotated() -> dict[str, Any] | None:
        s = backup_status(k8s, ns, "every-minute")
        ok = [e for e in events(k8s, ns, "every-minute") if e[0] == "BackupSucceeded"]
        return s if len(ok) >= 3 and len(s.get("backups", [])) == 2 else None

    sched = wait_for(rotated, 300, "three scheduled runs, two files kept", every=2.0)
    runs = [m for r, m in events(k8s, ns, "every-minute") if r == "BackupSucceeded"]
    print(f"scheduled: {len(runs)} runs in {time.monotonic() - t_sched:.0f}s; kept "
          f"{[e['file'] for e in sched['backups']]}; last event: {runs[-1]}")  # fmt: skip
    assert any("deleted 1 older (keep 2)" in m for m in runs[2:])
    files = [e["file"] for e in sched["backups"]]
    assert files == sorted(files, reverse=True) and sched["nextScheduleTime"]


def test_quorum_loss_is_reported_and_the_forced_new_cluster_brings_it_back(
    k8s: Any, namespace: str
) -> None:
    ns, name = namespace, "ql"
    core = k8s.client.CoreV1Api()
    create_cluster(k8s, ns, name)
    wait_for(lambda: core.read_namespaced_config_map(f"{name}-config", ns)
             .data["PAXOS_INITIAL_CLUSTER_STATE"] == "existing", 60, "bootstrapped")  # fmt: skip
    service_answers(k8s, ns, name)
    base = f"http://{name}.{ns}.svc.cluster.local:8080/v1/kv"
    written = {}
    for i in range(30):
        code, _ = exec_http(k8s, ns, f"{name}-acceptor-0", "PUT", f"{base}/q{i}", f"v{i}")
        assert code == 200
        written[f"q{i}"] = f"v{i}"
    # Every member caught up, then two of the three lose their disks.
    wait_for(lambda: all(m.get("lag") == 0 for m in cluster_status(k8s, ns, name)["members"]),
             60, "every member caught up")  # fmt: skip
    survivor = f"{name}-acceptor-2"
    t0 = time.monotonic()
    for pod in (f"{name}-acceptor-0", f"{name}-acceptor-1"):
        core.delete_namespaced_persistent_volume_claim(f"data-{pod}", ns)
        core.delete_namespaced_pod(pod, ns, grace_period_seconds=0)

    def lost() -> dict[str, Any] | None:
        st = cluster_status(k8s, ns, name)
        cond = next((c for c in st.get("conditions", []) if c["type"] == "QuorumLost"), {})
        return st if st.get("phase") == "QuorumLost" and cond.get("status") == "True" else None

    st = wait_for(lost, 300, "phase QuorumLost", every=2.0)
    cond = next(c for c in st["conditions"] if c["type"] == "QuorumLost")
    avail = next(c for c in st["conditions"] if c["type"] == "Available")
    print(f"quorum lost, reported after {time.monotonic() - t0:.1f}s: {cond['message']}")
    assert avail["status"] == "False"
    assert "force-new-cluster" in cond["message"] and survivor in cond["message"]
    assert ("QuorumLost", cond["message"]) in events(k8s, ns, name)

    # The wrong name typed back is refused; the right one starts the recovery.
    patch = {"metadata": {"annotations": {"paxosrsm.dev/force-new-cluster": "yes"}}}
    custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)
    wait_for(lambda: any(r == "RecoveryRefused" for r, _ in events(k8s, ns, name)), 60,
             "the wrong confirmation refused")  # fmt: skip
    t1 = time.monotonic()
    patch = {"metadata": {"annotations": {"paxosrsm.dev/force-new-cluster": name}}}
    custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)

    def recovered() -> dict[str, Any] | None:
        st = cluster_status(k8s, ns, name)
        return st if (st.get("recovery") or {}).get("phase") == "Done" and healthy(
            k8s, ns, name) else None  # fmt: skip

    st = wait_for(recovered, 420, "the forced new cluster Available", every=2.0)
    rec = st["recovery"]
    print(f"recovered in {time.monotonic() - t1:.1f}s from {rec['from']}: {rec['message']}")
    assert rec["from"] == f"member {survivor}" and "after slot" in rec["mayBeLost"]
    reasons = [r for r, _ in events(k8s, ns, name)]
    for r in ("RecoveryStarted", "RecoveryRebuilding", "RecoveryDone"):
        assert r in reasons, reasons
    obj = custom(k8s).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    assert "paxosrsm.dev/force-new-cluster" not in (obj["metadata"].get("annotations") or {})
    assert_all_readable(k8s, ns, f"{name}-acceptor-0", name, written)
    code, out = exec_http(k8s, ns, f"{name}-acceptor-1", "PUT", f"{base}/after", "yes")
    assert code == 200, out


def _s3_server(k8s: Any, ns: str) -> str:
    """An S3-compatible server in the namespace (moto's, image paxosrsm/s3test,
    built by make images), with a bucket and a Secret holding its keys."""
    from conftest import TAG
    from kubernetes.stream import stream

    core = k8s.client.CoreV1Api()
    labels = {"app.kubernetes.io/name": "e2e-s3"}
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s3", "labels": labels},
        "spec": {"automountServiceAccountToken": False,
                 "containers": [{"name": "s3", "image": f"paxosrsm/s3test:{TAG}",
                                 "imagePullPolicy": "IfNotPresent",
                                 "ports": [{"containerPort": 5000}]}]},
    }  # fmt: skip

    def created() -> bool:
        from kubernetes.client.rest import ApiException

        try:
            core.create_namespaced_pod(ns, pod)
            return True
        except ApiException as e:  # a new namespace's service account is not there yet
            if e.status != 500:
                raise
            return False

    wait_for(created, 60, "the S3 pod created", every=1.0)
    core.create_namespaced_service(ns, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s3"},
        "spec": {"selector": labels, "ports": [{"port": 5000, "targetPort": 5000}]},
    })  # fmt: skip
    keys = {"AWS_ACCESS_KEY_ID": "e2e-key", "AWS_SECRET_ACCESS_KEY": "e2e-secret-key"}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-keys"},
              "stringData": keys}  # fmt: skip
    core.create_namespaced_secret(ns, secret)

    def bucket() -> bool:
        code = (
            "import boto3;boto3.client('s3',endpoint_url='http://localhost:5000',"
            "aws_access_key_id='e2e-key',aws_secret_access_key='e2e-secret-key',"
            "region_name='us-east-1').create_bucket(Bucket='paxos-e2e');print('OK')"
        )
        try:
            out = stream(core.connect_get_namespaced_pod_exec, "s3", ns,
                         command=["python3", "-c", code], stderr=True, stdin=False, stdout=True,
                         tty=False)  # fmt: skip
        except Exception:
            return False
        return "OK" in out

    wait_for(bucket, 120, "the S3 server up, with its bucket", every=2.0)
    return f"http://s3.{ns}.svc.cluster.local:5000"


def test_backup_to_s3_and_restore_from_it(k8s: Any, namespace: str) -> None:
    ns = namespace
    endpoint = _s3_server(k8s, ns)
    create_cluster(k8s, ns, "sx")
    service_answers(k8s, ns, "sx")
    base = f"http://sx.{ns}.svc.cluster.local:8080/v1/kv"
    written = {}
    for i in range(20):
        code, _ = exec_http(k8s, ns, "sx-acceptor-0", "PUT", f"{base}/s{i}", f"v{i}")
        assert code == 200
        written[f"s{i}"] = f"v{i}"
    c = custom(k8s)
    s3 = {"endpoint": endpoint, "bucket": "paxos-e2e", "path": "nightly",
          "credentialsSecret": "s3-keys"}  # fmt: skip
    t0 = time.monotonic()
    c.create_namespaced_custom_object(GROUP, VERSION, ns, BACKUPS, backup("to-s3", "sx", s3=s3))

    def finished() -> dict[str, Any] | None:
        s = backup_status(k8s, ns, "to-s3")
        return s if s.get("phase") in ("Succeeded", "Failed") else None

    st = wait_for(finished, 240, "the S3 backup done", every=1.0)
    assert st["phase"] == "Succeeded", st
    entry = st["backups"][0]
    assert entry["url"] == f"s3://paxos-e2e/nightly/{entry['file']}"
    print(f"backup to S3 in {time.monotonic() - t0:.1f}s: {entry['url']}, {entry['size']} bytes")
    t1 = time.monotonic()
    src = {"s3": {"endpoint": endpoint, "credentialsSecret": "s3-keys"}, "url": entry["url"]}
    restored = paxoscluster("sr", bootstrap={"fromBackup": src})
    c.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, restored)
    wait_for(lambda: healthy(k8s, ns, "sr"), 300, "sr Available, 3/3 ready", every=1.0)
    print(f"restore from S3: apply -> Available in {time.monotonic() - t1:.1f}s")
    assert_all_readable(k8s, ns, "sr-acceptor-0", "sr", written)


def test_a_namespace_scoped_install_gets_only_its_namespaces(k8s: Any, namespace: str) -> None:
    """rbac.scope=namespace: a Role in the release's namespace only, and an
    operator that starts and watches it without a refusal. (No PaxosCluster
    is created there: the session's cluster-wide operator watches it too,
    and two operators must never share one.)"""
    from conftest import helm, image_values

    ns = namespace
    helm("install", "nsop", ns, "rbac.scope=namespace", *image_values())
    try:
        core = k8s.client.CoreV1Api()
        sa = f"system:serviceaccount:{ns}:nsop-paxos-operator"
        authz = k8s.client.AuthorizationV1Api()

        def can(verb: str, resource: str, where: str | None, group: str = "") -> bool:
            attrs = {"verb": verb, "resource": resource, "group": group}
            if where is not None:
                attrs["namespace"] = where
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                      "spec": {"user": sa, "groups": ["system:serviceaccounts"],
                               "resourceAttributes": attrs}}  # fmt: skip
            return bool(authz.create_subject_access_review(review).status.allowed)

        assert can("list", "paxosclusters", ns, "paxosrsm.dev")
        assert can("create", "jobs", ns, "batch") and can("create", "statefulsets", ns, "apps")
        assert can("delete", "persistentvolumeclaims", ns)
        assert not can("deletecollection", "persistentvolumeclaims", ns)
        assert not can("list", "secrets", ns)
        assert not can("list", "pods", "default") and not can("list", "paxosclusters", None,
                                                               "paxosrsm.dev")  # fmt: skip
        assert can("get", "nodes", None) and can("list", "storageclasses", None, "storage.k8s.io")

        def running() -> Any:
            pods = core.list_namespaced_pod(
                ns, label_selector="app.kubernetes.io/name=paxos-operator"
            ).items
            return pods and pods[0].status.phase == "Running" and pods[0]

        pod = wait_for(running, 120, "the namespace-scoped operator running", every=1.0)
        time.sleep(15)  # kopf has listed and watched its resources by now
        log = core.read_namespaced_pod_log(pod.metadata.name, ns)
        assert "403" not in log and "Forbidden" not in log, log[-2000:]
        assert "--namespace" in " ".join(pod.spec.containers[0].command or [])
        print(f"namespace-scoped operator in {ns}: running, no refusal in its log")
    finally:
        helm("uninstall", "nsop", ns)
