"""Scenario 5: learners scale up and down at any time, under a light write
load, without restarting an acceptor (their configuration lists every learner
slot; docs/design.md, "Learners come and go")."""

from __future__ import annotations

import time
from typing import Any

from conftest import GROUP, PLURAL, VERSION, custom, paxoscluster, wait_for
from load import LoadGen, assert_all_readable, read_keys


def _status(k8s: Any, ns: str, name: str) -> dict[str, Any]:
    obj = custom(k8s).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return obj.get("status") or {}


def _pods(k8s: Any, ns: str, component: str) -> dict[str, Any]:
    sel = f"app.kubernetes.io/instance=lrn,app.kubernetes.io/component={component}"
    pods = k8s.client.CoreV1Api().list_namespaced_pod(ns, label_selector=sel).items
    return {p.metadata.name: p for p in pods if p.metadata.deletion_timestamp is None}


def _ready(p: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])


def _stale_reads_match(k8s: Any, ns: str, pod: str, acked: dict[str, str]) -> bool:
    """The learner's own replica (stale reads, served locally) has every
    write acknowledged so far."""
    base = "http://127.0.0.1:8080/v1/kv"
    got = read_keys(k8s, ns, pod, base, [f"{k}?stale=true" for k in sorted(acked)])
    return all(got.get(f"{k}?stale=true") == [200, v] for k, v in acked.items())


def test_scale_learners_up_and_down(k8s: Any, namespace: str) -> None:
    c = custom(k8s)
    c.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, paxoscluster("lrn"))
    wait_for(lambda: _status(k8s, namespace, "lrn").get("readyAcceptors") == 3, 300,
             "all three acceptors ready")  # fmt: skip
    acceptors = {n: p.metadata.uid for n, p in _pods(k8s, namespace, "acceptor").items()}
    assert len(acceptors) == 3
    with LoadGen(k8s, namespace, "lrn", rate=10) as load:
        for want in (2, 1, 3, 0):
            t0 = time.monotonic()
            c.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "lrn",
                                             {"spec": {"learners": want}})  # fmt: skip

            def settled(want: int = want) -> bool:
                pods = _pods(k8s, namespace, "learner")
                st = _status(k8s, namespace, "lrn")
                return (
                    sorted(pods) == [f"lrn-learner-{i}" for i in range(want)]
                    and all(_ready(p) for p in pods.values())
                    and st.get("readyLearners") == want
                    and st.get("phase") == "Available"
                )

            wait_for(settled, 240, f"{want} learners ready", every=1.0)
            print(f"learners -> {want}: ready in {time.monotonic() - t0:.1f}s "
                  f"({load.snapshot().summary()})")  # fmt: skip
            for name, p in sorted(_pods(k8s, namespace, "learner").items()):
                rdy = next(c.last_transition_time for c in p.status.conditions
                           if c.type == "Ready")  # fmt: skip
                print(f"  {name}: created {p.metadata.creation_timestamp:%H:%M:%S}, "
                      f"ready {rdy:%H:%M:%S}")  # fmt: skip
            for pod in _pods(k8s, namespace, "learner"):
                acked = load.snapshot().acked
                assert acked
                # A learner applies what the leader decided; give it a moment
                # to apply the last few writes of the snapshot.
                wait_for(lambda pod=pod, acked=acked: _stale_reads_match(k8s, namespace, pod,
                                                                          acked),
                         30, f"{pod} has every acknowledged write", every=1.0)  # fmt: skip
        res = load.stop()
    print(f"load during scaling: {res.summary()}")
    assert len(res.acked) > 0
    # The acceptors never restarted: scaling learners touches only their StatefulSet.
    now = {n: p.metadata.uid for n, p in _pods(k8s, namespace, "acceptor").items()}
    assert now == acceptors
    assert_all_readable(k8s, namespace, "lrn-acceptor-0", "lrn", res.acked)
    assert _status(k8s, namespace, "lrn").get("phase") == "Available"
