"""E2E fixtures: a real Kubernetes API given by $KUBECONFIG (k8s-local here, kind
or any cluster for users). Images must already be on the nodes (make e2e
builds them; with kind: `kind load docker-image`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GROUP, VERSION, PLURAL = "paxosrsm.dev", "v1alpha1", "paxosclusters"
TAG = os.environ.get("E2E_TAG", "e2e")
NODE_IMAGE = os.environ.get("E2E_NODE_IMAGE", f"paxosrsm/node:{TAG}")
OPERATOR_IMAGE = os.environ.get("E2E_OPERATOR_IMAGE", f"paxosrsm/operator:{TAG}")


def _k8s() -> Any:
    import kubernetes

    if not os.environ.get("KUBECONFIG"):
        pytest.fail("e2e needs KUBECONFIG (make e2e starts a local cluster and sets it)")
    kubernetes.config.load_kube_config()
    return kubernetes


@pytest.fixture(scope="session")
def k8s() -> Any:
    return _k8s()


def helm(*args: str) -> None:
    py = ROOT / ".helm-venv" / "bin" / "python"
    subprocess.run([str(py), str(ROOT / "e2e" / "helm_install.py"), *args], check=True,
                   timeout=600)  # fmt: skip


def image_values() -> list[str]:
    """The chart's image values for the images under test."""
    out = []
    for key, ref in (("operator", OPERATOR_IMAGE), ("node", NODE_IMAGE)):
        repo, _, tag = ref.rpartition(":")
        out += [f"image.{key}.repository={repo}", f"image.{key}.tag={tag}"]
    return out


def apply_crds(k8s: Any) -> None:
    """Create or replace the CRDs from crds/: Helm installs a chart's CRDs
    only when they are absent and never upgrades them (documented for users
    in docs/kubernetes.md), and this cluster may hold an older version."""
    from kubernetes.client.rest import ApiException

    ext = k8s.client.ApiextensionsV1Api()
    for f in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        try:
            live = ext.read_custom_resource_definition(crd["metadata"]["name"])
        except ApiException as e:
            if e.status != 404:
                raise
            ext.create_custom_resource_definition(crd)
            continue
        crd["metadata"]["resourceVersion"] = live.metadata.resource_version
        ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)


@pytest.fixture(scope="session")
def operator(k8s: Any) -> Iterator[str]:
    """The chart's operator (and CRD), installed once for the session by Helm."""
    ns = f"paxos-system-{uuid.uuid4().hex[:6]}"
    k8s.client.CoreV1Api().create_namespace({"metadata": {"name": ns}})
    try:
        # One operator per cluster: a second session's install fails here
        # (its ClusterRole exists), rather than two operators fighting.
        apply_crds(k8s)
        helm("install", "op", ns, *image_values())
    except BaseException:
        k8s.client.CoreV1Api().delete_namespace(ns)
        raise
    yield ns
    helm("uninstall", "op", ns)
    k8s.client.CoreV1Api().delete_namespace(ns)


@pytest.fixture
def namespace(k8s: Any, operator: str) -> Iterator[str]:
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    k8s.client.CoreV1Api().create_namespace({"metadata": {"name": ns}})
    yield ns
    delete_paxosclusters(k8s, ns)
    k8s.client.CoreV1Api().delete_namespace(ns)


def delete_paxosclusters(k8s: Any, ns: str, timeout: float = 120) -> None:
    """Delete the namespace's PaxosClusters and wait while the operator still
    runs: each holds the operator's finalizer, and a namespace deleted after
    the session's operator is gone would stay Terminating for ever."""
    c = custom(k8s)
    from kubernetes.client.rest import ApiException

    for obj in c.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
        try:
            c.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj["metadata"]["name"])
        except ApiException as e:
            if e.status != 404:  # deleted meanwhile (by the test, or its finalizer ran)
                raise
    try:
        wait_for(lambda: not c.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"],
                 timeout, f"the PaxosClusters of {ns} deleted", every=1.0)  # fmt: skip
    except TimeoutError as e:
        print(f"warning: {e}", file=sys.stderr)


def custom(k8s: Any) -> Any:
    return k8s.client.CustomObjectsApi()


def paxoscluster(name: str, acceptors: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PaxosCluster",
        "metadata": {"name": name},
        "spec": {"acceptors": acceptors, "image": NODE_IMAGE, "imagePullPolicy": "IfNotPresent",
                 **spec},
    }  # fmt: skip


def wait_for(pred: Any, timeout: float, what: str, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"{what} not reached in {timeout:.0f}s (last: {last!r})")


def cluster_status(k8s: Any, ns: str, name: str) -> dict[str, Any]:
    obj = custom(k8s).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return obj.get("status") or {}


def healthy(k8s: Any, ns: str, name: str, acceptors: int = 3) -> dict[str, Any] | None:
    """The status if every acceptor is ready and the phase is Available, else None."""
    st = cluster_status(k8s, ns, name)
    ok = st.get("readyAcceptors") == acceptors and st.get("phase") == "Available"
    return st if ok else None


def create_cluster(k8s: Any, ns: str, name: str, timeout: float = 300, **spec: Any) -> float:
    """Create a PaxosCluster and wait until it is healthy; the seconds it took."""
    t0 = time.monotonic()
    custom(k8s).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                paxoscluster(name, **spec))  # fmt: skip
    wait_for(lambda: healthy(k8s, ns, name), timeout, f"{name} Available, 3 acceptors ready",
             every=1.0)  # fmt: skip
    took = time.monotonic() - t0
    print(f"{name}: apply -> Available (3/3 ready) in {took:.1f}s")
    return took


def pod_ready(p: Any) -> bool:
    if p is None or p.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])


#: Where a member pod (and the load generator) has the cluster's admin token:
#: the operator's <name>-http-auth Secret, mounted by the StatefulSets. The
#: HTTP API is never anonymous in Kubernetes (issue 12).
TOKEN_FILE = "/etc/paxosrsm/http-auth/admin-token"
AUTH_HEADER = f"{{'Authorization': 'Bearer ' + open({TOKEN_FILE!r}).read().strip()}}"


def exec_http(k8s: Any, ns: str, pod: str, method: str, url: str, body: str | None = None,
              token: bool = True) -> Any:  # fmt: skip
    """An HTTP call from inside the cluster (works on any cluster: no
    port-forward), with the cluster's admin token unless ``token`` is False."""
    from kubernetes.stream import stream

    data = body.encode() if body is not None else None
    headers = AUTH_HEADER if token else "{}"
    code = (
        "import json,sys,urllib.request as u;"
        f"r=u.Request({url!r},data={data!r},method={method!r},headers={headers});"
        "\ntry:\n r=u.urlopen(r,timeout=10);print(json.dumps([r.status,r.read().decode()]))"
        "\nexcept u.HTTPError as e:\n print(json.dumps([e.code,e.read().decode()]))"
    )
    out = stream(
        k8s.client.CoreV1Api().connect_get_namespaced_pod_exec, pod, ns,
        command=["python3", "-c", code], stderr=True, stdin=False, stdout=True, tty=False,
        container=member_container(pod),
    )  # fmt: skip
    status, text = json.loads(out.strip().splitlines()[-1])
    return status, (json.loads(text) if text.startswith("{") else text)


def member_container(pod: str) -> str | None:
    """The container to exec in: a member pod also runs its key-sync sidecar."""
    return "node" if "-acceptor-" in pod or "-learner-" in pod else None


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


__all__ = [
    "AUTH_HEADER",
    "TOKEN_FILE",
    "cluster_status",
    "create_cluster",
    "custom",
    "exec_http",
    "healthy",
    "paxoscluster",
    "pod_ready",
    "sys",
    "wait_for",
]
