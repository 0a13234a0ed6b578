"""E2E scenarios on a real cluster (issue 5). Run with `make e2e`."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import GROUP, PLURAL, VERSION, custom, exec_http, paxoscluster, wait_for


def _status(k8s: Any, ns: str, name: str) -> dict[str, Any]:
    obj = custom(k8s).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return obj.get("status") or {}


def test_apply_becomes_available_and_serves(k8s: Any, namespace: str) -> None:
    t0 = time.monotonic()
    custom(k8s).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                paxoscluster("px"))  # fmt: skip
    st = wait_for(
        lambda: (s := _status(k8s, namespace, "px")).get("phase") == "Available" and s,
        timeout=300, what="PaxosCluster Available",
    )  # fmt: skip
    print(f"apply -> Available in {time.monotonic() - t0:.1f}s")
    assert st["readyAcceptors"] >= 2 and st["leader"]
    url = f"http://px.{namespace}.svc.cluster.local:8080/v1/kv/hello"
    assert exec_http(k8s, namespace, "px-acceptor-0", "PUT", url, "world")[0] == 200
    code, body = exec_http(k8s, namespace, "px-acceptor-1", "GET", url)
    assert code == 200 and body["value"] == "world"


@pytest.mark.parametrize(
    ("spec", "msg"),
    [({"acceptors": 4}, "acceptors"), ({"storage": {"size": "-1Gi"}}, "size")],
)
def test_invalid_crs_are_rejected(k8s: Any, namespace: str, spec: dict[str, Any], msg: str) -> None:
    from kubernetes.client.rest import ApiException

    body = paxoscluster("bad")
    body["spec"].update(spec)
    with pytest.raises(ApiException) as e:
        custom(k8s).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert e.value.status == 422 and msg in e.value.body
