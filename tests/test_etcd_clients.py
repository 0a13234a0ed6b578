"""Python etcd clients from PyPI, through their own documented usage
(issue 13), against paxosrsm and against a real etcd 3.4, side by side: KV,
a lock recipe, a lease, a watch. ``etcd3gw`` speaks the JSON gateway;
``aetcd`` (asyncio) and ``etcd-sdk-python`` (``pyetcd``, the maintained
successor of ``etcd3``) speak gRPC, each in a process of its own
(``grpc_client_scenarios.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import etcd3gw
import pytest
from netcluster import ProcCluster
from test_etcd_compat import Etcd


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("etcd3gw")
    etcd = Etcd(root / "etcd")
    cluster = ProcCluster(root / "paxos", 3).start_all()
    try:
        cluster.wait_ready()
        h, p = cluster.http(0).removeprefix("http://").rsplit(":", 1)
        eh, ep = etcd.endpoint.rsplit(":", 1)
        yield {"etcd": (eh, int(ep)), "paxosrsm": (h, int(p)),
               "grpc": {"etcd": etcd.endpoint, "paxosrsm": cluster.grpc(1)}}  # fmt: skip
    finally:
        cluster.close()
        etcd.close()


def scenario(host: str, port: int) -> list[Any]:
    c = etcd3gw.Etcd3Client(host=host, port=port, timeout=10)
    out: list[Any] = []
    out.append(c.put("gw/a", "1"))
    out.append(c.put("gw/b", "2"))
    out.append(c.get("gw/a"))
    out.append(sorted((v, m["key"]) for v, m in c.get_prefix("gw/")))
    out.append(c.replace("gw/a", "1", "11"))
    out.append(c.replace("gw/a", "1", "12"))
    out.append(c.get("gw/a"))
    out.append(c.create("gw/new", "x"))
    out.append(c.create("gw/new", "y"))
    out.append(c.delete("gw/b"))
    out.append(c.delete("gw/b"))
    # A lock (etcd3gw's recipe: a txn on the key's create revision, a lease).
    first = c.lock("gw-lock", ttl=30)
    second = c.lock("gw-lock", ttl=30)
    out.append(("first", first.acquire()))
    out.append(("second", second.acquire()))
    out.append(("held", first.is_acquired()))
    out.append(("release", first.release()))
    out.append(("second again", second.acquire()))
    second.release()
    # A lease with a key, refreshed, then revoked.
    lease = c.lease(ttl=60)
    c.put("gw/leased", "v", lease=lease)
    out.append(("refresh", lease.refresh()))
    out.append(("keys", lease.keys()))
    out.append(("revoke", lease.revoke()))
    out.append(("after revoke", c.get("gw/leased")))
    # A watch on a prefix while a thread writes.
    events, cancel = c.watch_prefix("gw/w/")
    time.sleep(0.5)

    def writer() -> None:
        for i in range(3):
            c.put(f"gw/w/{i}", str(i))
        c.delete("gw/w/0")

    threading.Thread(target=writer).start()
    seen = []
    for ev in events:
        seen.append((ev.get("type", "PUT"), ev["kv"]["key"], ev["kv"].get("value")))
        if len(seen) == 4:
            break
    cancel()
    out.append(("watch", seen))
    out.append(c.status()["version"][:4])  # "3.4." (the patch level is etcd's own)
    return out


def test_etcd3gw_does_the_same_on_both(both: dict[str, Any]) -> None:
    want = scenario(*both["etcd"])
    got = scenario(*both["paxosrsm"])
    assert got == want
    assert ("second", False) in got and ("second again", True) in got
    assert got[-2][1][-1][0] == "DELETE"


def grpc_scenario(client: str, endpoint: str) -> list[Any]:
    script = Path(__file__).with_name("grpc_client_scenarios.py")
    r = subprocess.run([sys.executable, str(script), client, endpoint],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, f"{client} against {endpoint}: {r.stderr[-3000:]}"
    out: list[Any] = json.loads(r.stdout)
    return out


@pytest.mark.parametrize("client", ["aetcd", "pyetcd"])
def test_grpc_clients_from_pypi_do_the_same_on_both(both: dict[str, Any], client: str) -> None:
    want = grpc_scenario(client, both["grpc"]["etcd"])
    got = grpc_scenario(client, both["grpc"]["paxosrsm"])
    assert got == want
    steps = {step[0]: step[1:] for step in got}
    assert steps["watch"][0][-1][0] in ("DELETE", "DeleteEvent")
    assert steps["after revoke"] == [None]
