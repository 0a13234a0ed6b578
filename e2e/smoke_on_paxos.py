"""The CI smoke of Kubernetes on paxosrsm (e2e/on-paxos.sh smoke): create,
list, watch and delete a namespace, a ConfigMap and a Deployment through
kube-apiserver, and see each object in the paxosrsm cluster (etcdctl).
Exits non-zero on the first failure."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

from kubernetes import client, config, watch


def etcd_keys(prefix: str) -> list[str]:
    out = subprocess.run(
        ["etcdctl", "--endpoints", os.environ["PAXOS_K8S_ENDPOINTS"], "get", "--prefix",
         prefix, "--keys-only"],
        capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, check=True,
    ).stdout  # fmt: skip
    return [k for k in out.splitlines() if k]


def wait(what: str, cond: Any, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            sys.exit(f"smoke: timed out waiting for {what}")
        time.sleep(0.5)
    print(f"smoke: {what} ({time.monotonic() - t0:.1f} s)")


def main() -> None:
    config.load_kube_config()
    core, apps = client.CoreV1Api(), client.AppsV1Api()
    ns = f"smoke-{os.getpid()}"
    t0 = time.monotonic()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    assert f"/registry/namespaces/{ns}" in etcd_keys("/registry/namespaces/"), "not in paxosrsm"
    seen: list[str] = []

    def watcher() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=60):
            if ev["object"].metadata.name == "cm":
                seen.append(ev["type"])
                if ev["type"] == "DELETED":
                    w.stop()

    th = threading.Thread(target=watcher, daemon=True)
    th.start()
    time.sleep(1)
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"a": "1"})
    core.create_namespaced_config_map(ns, cm)
    core.patch_namespaced_config_map("cm", ns, {"data": {"a": "2"}})
    names = [c.metadata.name for c in core.list_namespaced_config_map(ns).items]
    assert "cm" in names, names
    assert f"/registry/configmaps/{ns}/cm" in etcd_keys(f"/registry/configmaps/{ns}/")
    assert core.read_namespaced_config_map("cm", ns).data == {"a": "2"}
    core.delete_namespaced_config_map("cm", ns)
    th.join(30)
    assert seen == ["ADDED", "MODIFIED", "DELETED"], seen
    print(f"smoke: ConfigMap created, listed, patched, deleted; the watch saw {seen}")
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="pause", image="k8s-local/pause:3.2", image_pull_policy="Never")]),
            ),
        ),
    )  # fmt: skip
    apps.create_namespaced_deployment(ns, dep)

    def ready() -> bool:
        return (apps.read_namespaced_deployment("web", ns).status.ready_replicas or 0) == 2

    wait("Deployment web: 2 replicas ready", ready)
    pods = etcd_keys(f"/registry/pods/{ns}/")
    assert len(pods) == 2, pods
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Foreground")
    wait("Deployment and its pods deleted", lambda: not etcd_keys(f"/registry/pods/{ns}/"))
    core.delete_namespace(ns)
    wait(f"namespace {ns} deleted", lambda: not etcd_keys(f"/registry/namespaces/{ns}"))
    print(f"smoke: Kubernetes on paxosrsm passed in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
