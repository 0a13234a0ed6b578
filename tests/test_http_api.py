"""The HTTP API of a node, against a real three-node cluster on loopback.

One cluster serves the whole module; the no-quorum test, which kills nodes,
runs its own.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from netcluster import ProcCluster
from prometheus_client.parser import text_string_to_metric_families

STATUS_FIELDS = {
    "node_id", "cluster_id", "address", "roles", "leader", "is_leader", "ballot", "promised",
    "decided", "applied", "lag", "snapshot_slot", "recovering", "incarnation", "ready",
    "uptime_s", "fsync_p50_ms", "counters",
}  # fmt: skip


class Resp:
    def __init__(self, status: int, ctype: str, body: bytes, seconds: float) -> None:
        self.status = status
        self.ctype = ctype
        self.body = body
        self.seconds = seconds

    def json(self) -> Any:
        assert self.ctype.startswith("application/json"), (self.status, self.ctype, self.body)
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.ctype} {self.body[:200]!r} in {self.seconds:.2f}s>"


def call(
    method: str,
    url: str,
    data: bytes | None = None,
    timeout: float = 15.0,
    headers: dict[str, str] | None = None,
) -> Resp:
    h = {"Content-Type": "application/json"} if method == "POST" else {}
    req = urllib.request.Request(url, data=data, method=method, headers={**h, **(headers or {})})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Resp(
                r.status, r.headers.get("Content-Type", ""), r.read(), time.monotonic() - t0
            )
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers.get("Content-Type", ""), e.read(), time.monotonic() - t0)


def fields(d: dict[str, Any], *names: str) -> dict[str, Any]:
    """The answer's fields from before issue 13 (revisions came on top)."""
    return {k: d[k] for k in names if k in d}


def kv(key: str) -> str:
    return "/v1/kv/" + urllib.parse.quote(key, safe="")


def error_of(r: Resp, status: int) -> str:
    assert r.status == status, r
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], r
    return str(body["error"])


def stale_get(base: str, key: str, timeout: float = 5.0) -> Resp:
    """A stale read, retried while the node's replica has not applied the key yet."""
    deadline = time.monotonic() + timeout
    while True:
        r = call("GET", base + kv(key) + "?stale=true")
        if r.status != 404 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def statuses(c: ProcCluster) -> list[dict[str, Any]]:
    out = []
    for nid in range(c.n):
        st = c.status(nid)
        assert st is not None, c.logs()
        out.append(st)
    return out


def wait_leader(c: ProcCluster, timeout: float = 15.0) -> int:
    """The leader every node agrees on (and that claims to be it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = [c.status(n) for n in range(c.n)]
        if all(s is not None for s in sts):
            leaders = {s["leader"] for s in sts if s is not None}
            claim = [s["node_id"] for s in sts if s is not None and s["is_leader"]]
            if len(leaders) == 1 and claim and leaders == {claim[0]}:
                return claim[0]
        time.sleep(0.05)
    raise AssertionError(f"no agreed leader: {[c.status(n) for n in range(c.n)]}\n{c.logs()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    c = ProcCluster(
        tmp_path_factory.mktemp("http-api"),
        replicas=3,
        extra=["--http-cors-origins", "https://dash.example"],
    )
    try:
        c.start_all()
        c.wait_ready()
        wait_leader(c)
        yield c
    finally:
        c.close()


# ------------------------------------------------------------------ browsers


def test_browser_safety(cluster: ProcCluster) -> None:
    """Issue 12: a forged Host (DNS rebinding against local up or a
    port-forward) and a foreign Origin are refused before anything runs; a
    CAS must be JSON (a text/plain POST needs no CORS preflight); CORS
    preflights are answered for the configured origins only."""
    b = cluster.http(0)
    port = b.rsplit(":", 1)[1]
    evil = {"Host": f"rebind.evil.example:{port}"}
    assert call("PUT", b + kv("br"), b"x", headers=evil).status == 403
    assert call("GET", b + kv("br"), headers=evil).status == 403
    assert call("GET", b + "/v1/status", headers=evil).status == 403
    assert call("GET", b + kv("br")).status == 404  # nothing was written
    assert call("PUT", b + kv("br"), b"1", headers={"Host": f"localhost:{port}"}).status == 200
    cas = json.dumps({"expected": "1", "new": "2"}).encode()
    plain = {"Content-Type": "text/plain"}
    assert call("POST", b + "/v1/cas/br", cas, headers=plain).status == 415
    foreign = {"Origin": "https://evil.example"}
    assert call("POST", b + "/v1/cas/br", cas, headers=foreign).status == 403
    assert call("DELETE", b + kv("br"), headers=foreign).status == 403
    assert call("GET", b + kv("br"), headers=foreign).status == 403
    # An Origin that does not parse as a URL (the 1M fuzz campaign's one
    # finding: urlsplit raised, a 500) is refused like any foreign one.
    for bad in ("http://[abc", "https://a]b:1", "http://[::1"):
        assert call("DELETE", b + kv("br"), headers={"Origin": bad}).status == 403, bad
    assert json.loads(call("GET", b + kv("br")).body)["value"] == "1"  # unchanged
    same = {"Origin": f"http://127.0.0.1:{port}"}  # the status page's own origin
    assert call("POST", b + "/v1/cas/br", cas, headers=same).status == 200
    pre = {
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization",
    }
    assert call("OPTIONS", b + kv("br"), headers={**pre, **foreign}).status == 403
    dash = {"Origin": "https://dash.example"}
    req = urllib.request.Request(b + kv("br"), method="OPTIONS", headers={**pre, **dash})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://dash.example"
        assert "PUT" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    req = urllib.request.Request(b + kv("br"), data=b"3", method="PUT", headers=dash)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert (
            r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://dash.example"
        )
    st = cluster.status(0)
    assert st is not None
    for reason in ("http_bad_host", "http_bad_origin", "http_bad_content_type"):
        assert st["counters"].get(f"dropped_{reason}", 0) >= 1, reason


# ------------------------------------------------------------------ KV


def test_put_get_delete_roundtrip(cluster: ProcCluster) -> None:
    b = cluster.http(0)
    r = call("PUT", b + kv("fruit"), b"apple")
    assert r.status == 200 and fields(r.json(), "key", "ok") == {"key": "fruit", "ok": True}, r
    assert fields(call("GET", b + kv("fruit")).json(), "key", "value") == {
        "key": "fruit",
        "value": "apple",
    }
    # Overwrite; an empty value is a value, not a missing key.
    assert call("PUT", b + kv("fruit"), b"").status == 200
    assert fields(call("GET", b + kv("fruit")).json(), "key", "value") == {
        "key": "fruit",
        "value": "",
    }
    r = call("DELETE", b + kv("fruit"))
    assert r.status == 200 and r.json() == {"key": "fruit", "deleted": True}, r
    error_of(call("GET", b + kv("fruit")), 404)
    r = call("DELETE", b + kv("fruit"))
    assert r.status == 200 and r.json() == {"key": "fruit", "deleted": False}, r


def test_unicode_and_slash_keys_and_values(cluster: ProcCluster) -> None:
    b = cluster.http(1)
    for key, value in [("clé/ñ", "välue ✓"), ("a b?c&d=e#f", "x\ny"), ("k" * 1024, "max key")]:
        assert call("PUT", b + kv(key), value.encode()).status == 200, key
        assert fields(call("GET", b + kv(key)).json(), "key", "value") == {
            "key": key,
            "value": value,
        }


def test_missing_key_is_404_json(cluster: ProcCluster) -> None:
    msg = error_of(call("GET", cluster.http(0) + kv("never-written")), 404)
    assert "never-written" in msg
    error_of(call("GET", cluster.http(0) + kv("never-written") + "?stale=true"), 404)


def test_stale_reads(cluster: ProcCluster) -> None:
    assert call("PUT", cluster.http(0) + kv("st"), b"v1").status == 200
    # Every replica catches up with the write soon; a stale read of it returns it then.
    for nid in range(cluster.n):
        r = stale_get(cluster.http(nid), "st")
        assert fields(r.json(), "key", "value") == {"key": "st", "value": "v1"}, (nid, r)
    for flag in ("1", "TRUE", "false", "0"):
        r = call("GET", cluster.http(2) + kv("st") + "?stale=" + flag)
        assert fields(r.json(), "key", "value") == {"key": "st", "value": "v1"}, (flag, r)


def test_cas_swaps_or_conflicts(cluster: ProcCluster) -> None:
    b = cluster.http(2)

    def cas(expected: str | None, new: str) -> Resp:
        return call(
            "POST", b + "/v1/cas/lock", json.dumps({"expected": expected, "new": new}).encode()
        )

    r = cas(None, "a")  # absent -> a
    assert r.status == 200 and fields(r.json(), "key", "swapped") == {
        "key": "lock",
        "swapped": True,
    }, r
    error_of(cas(None, "b"), 409)  # not absent any more
    error_of(cas("zzz", "b"), 409)  # wrong expectation
    assert call("GET", b + kv("lock")).json()["value"] == "a", "a refused CAS changes nothing"
    r = cas("a", "b")
    assert r.status == 200 and r.json()["swapped"] is True, r
    assert call("GET", cluster.http(0) + kv("lock")).json()["value"] == "b"


def test_writes_via_a_non_leader_are_forwarded(cluster: ProcCluster) -> None:
    leader = wait_leader(cluster)
    for nid in (n for n in range(cluster.n) if n != leader):
        key = f"fwd-{nid}"
        assert call("PUT", cluster.http(nid) + kv(key), b"via-follower").status == 200
        body = json.dumps({"expected": "via-follower", "new": "cas-via-follower"}).encode()
        assert call("POST", cluster.http(nid) + "/v1/cas/" + key, body).status == 200
        # Visible through the leader, with a linearizable read.
        assert call("GET", cluster.http(leader) + kv(key)).json()["value"] == "cas-via-follower"
        assert call("DELETE", cluster.http(nid) + kv(key)).json()["deleted"] is True
        error_of(call("GET", cluster.http(leader) + kv(key)), 404)
    assert wait_leader(cluster) == leader, "forwarding does not move the leadership"


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("POST", "/v1/cas/k", b"{not json", "JSON"),
        ("POST", "/v1/cas/k", b"\xff\xfe", "JSON"),
        ("POST", "/v1/cas/k", b"[1, 2]", "object"),
        ("POST", "/v1/cas/k", b'{"expected": 1, "new": "x"}', "string"),
        ("POST", "/v1/cas/k", b'{"expected": null}', "string"),
        ("GET", "/v1/kv/k?stale=maybe", None, "stale"),
        ("PUT", "/v1/kv/k", b"caf\xe9", "UTF-8"),
        ("PUT", "/v1/kv/k", b"x" * (512 * 1024 + 1), "larger"),
        ("GET", "/v1/kv/" + "k" * 1025, None, "1024"),
        ("PUT", "/v1/kv/" + "k" * 1025, b"v", "1024"),
        ("DELETE", "/v1/kv/" + "k" * 1025, None, "1024"),
        ("POST", "/v1/cas/" + "k" * 1025, b'{"expected": null, "new": "x"}', "1024"),
        ("PUT", "/v1/kv/" + "%E2%82%AC" * 342, b"v", "1024"),  # 342 chars, 1026 bytes
    ],
)
def test_bad_input_is_400_json(
    cluster: ProcCluster, method: str, path: str, body: bytes | None, needle: str
) -> None:
    msg = error_of(call(method, cluster.http(0) + path, body), 400)
    assert needle in msg, msg


def test_bad_input_changes_nothing(cluster: ProcCluster) -> None:
    b = cluster.http(0)
    assert call("PUT", b + kv("keep"), b"orig").status == 200
    error_of(call("PUT", b + kv("keep"), b"\xc3\x28"), 400)
    error_of(call("POST", b + "/v1/cas/keep", b'{"expected": "orig"'), 400)
    assert call("GET", b + kv("keep")).json()["value"] == "orig"


# ------------------------------------------------------------------ health, status, metrics


def test_healthz_and_readyz(cluster: ProcCluster) -> None:
    leader = wait_leader(cluster)
    for nid in range(cluster.n):
        r = call("GET", cluster.http(nid) + "/healthz")
        assert r.status == 200 and r.json()["ok"] is True, r
        r = call("GET", cluster.http(nid) + "/readyz")
        assert r.status == 200 and r.json() == {"ok": True, "leader": leader}, r


def test_status_of_one_node(cluster: ProcCluster) -> None:
    leader = wait_leader(cluster)
    sts = statuses(cluster)
    for nid, st in enumerate(sts):
        assert set(st) >= STATUS_FIELDS, set(st) ^ STATUS_FIELDS
        assert st["node_id"] == nid
        assert st["address"] == cluster.layout["acceptors"][nid]
        assert st["roles"] == ["proposer", "acceptor", "learner"]
        assert st["leader"] == leader and st["is_leader"] == (nid == leader)
        assert st["ready"] is True and st["recovering"] is False
        assert isinstance(st["decided"], int) and isinstance(st["applied"], int)
        assert st["applied"] <= st["decided"] and st["lag"] == st["decided"] - st["applied"]
        assert st["ballot"] is not None and isinstance(st["counters"], dict)
    assert len({st["cluster_id"] for st in sts}) == 1


def test_status_of_the_cluster(cluster: ProcCluster) -> None:
    leader = wait_leader(cluster)
    before = call("GET", cluster.http(1) + "/v1/status?cluster=true").json()
    for i in range(3):
        assert call("PUT", cluster.http(1) + kv(f"cs{i}"), b"x").status == 200
    for nid in range(cluster.n):
        r = call("GET", cluster.http(nid) + "/v1/status?cluster=true")
        s = r.json()
        assert set(s) == {"leader", "decided", "nodes", "time"}, s
        assert s["leader"] == leader
        assert abs(s["time"] - time.time()) < 30
        assert [n["node_id"] for n in s["nodes"]] == [0, 1, 2], s
        assert [n["is_leader"] for n in s["nodes"]].count(True) == 1
        assert all("error" not in n for n in s["nodes"]), s
        assert s["decided"] == max(n["decided"] for n in s["nodes"])
        assert s["decided"] >= before["decided"] + 3, (before["decided"], s["decided"])
        for n in s["nodes"]:
            assert n["lag_behind_cluster"] == s["decided"] - n["applied"] >= 0
    for q in ("", "?cluster=false", "?cluster=0"):
        s = call("GET", cluster.http(2) + "/v1/status" + q).json()
        assert s["node_id"] == 2 and "nodes" not in s, q


def test_metrics_are_prometheus_text(cluster: ProcCluster) -> None:
    assert call("PUT", cluster.http(0) + kv("metered"), b"1").status == 200
    leaders = 0
    for nid in range(cluster.n):
        r = call("GET", cluster.http(nid) + "/metrics")
        assert r.status == 200, r
        assert r.ctype.startswith("text/plain"), r.ctype
        text = r.body.decode()
        assert "# TYPE paxos_slot gauge" in text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("paxos_slot", "paxos_is_leader", "paxos_ready", "paxos_recovering",
                     "paxos_leader_id", "paxos_applied_slots", "paxos_messages_in",
                     "paxos_messages_out", "paxos_events"):  # fmt: skip
            assert name in fams, (name, sorted(fams))
        assert fams["paxos_applied_slots"].type == "counter"

        def value(fam: str, fams: dict[str, Any] = fams, **labels: str) -> float:
            for s in fams[fam].samples:
                if s.labels == labels:
                    return float(s.value)
            raise AssertionError(f"no sample {fam}{labels} in {fams[fam]}")

        st = cluster.status(nid)
        assert st is not None
        assert value("paxos_ready") == 1.0
        assert value("paxos_leader_id") == st["leader"]
        assert value("paxos_slot", kind="decided") >= 0
        assert value("paxos_slot", kind="applied") <= st["applied"]
        assert sum(s.value for s in fams["paxos_messages_in"].samples) > 0
        leaders += int(value("paxos_is_leader"))
    assert leaders == 1


def test_index_serves_the_status_page(cluster: ProcCluster) -> None:
    r = call("GET", cluster.http(0) + "/")
    assert r.status == 200 and r.ctype.startswith("text/html"), r
    assert b"/v1/status?cluster=true" in r.body


# ------------------------------------------------------------------ no quorum


def test_no_quorum_gives_503(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path / "c", replicas=3)
    try:
        c.start_all()
        c.wait_ready()
        leader = wait_leader(c)
        b = c.http(leader)
        assert call("PUT", b + kv("before"), b"1").status == 200
        # Let the write reach the survivor's replica for the stale read below.
        assert stale_get(b, "before").status == 200
        for nid in range(3):
            if nid != leader:
                c.kill(nid)
        # The survivor still believes it leads; it must not answer alone.
        cas_body = json.dumps({"expected": None, "new": "x"}).encode()
        with ThreadPoolExecutor(4) as ex:
            put = ex.submit(call, "PUT", b + kv("after"), b"2")
            get = ex.submit(call, "GET", b + kv("before"))
            delete = ex.submit(call, "DELETE", b + kv("before"))
            cas = ex.submit(call, "POST", b + "/v1/cas/after", cas_body)
            for f in (put, delete, cas):
                r = f.result()
                error_of(r, 503)
                assert r.json()["outcome"] == "unknown", r
                assert r.seconds < 12, r
            r = get.result()
            error_of(r, 503)
            assert r.json()["outcome"] == "not applied", r
        # A stale read is served from the local replica; liveness is fine.
        assert call("GET", b + kv("before") + "?stale=true").json()["value"] == "1"
        assert call("GET", b + "/healthz").status == 200
        error_of(call("GET", b + "/readyz"), 503)
        s = call("GET", b + "/v1/status?cluster=true").json()
        down = [n for n in s["nodes"] if "error" in n]
        assert sorted(n["node_id"] for n in down) == sorted(set(range(3)) - {leader}), s
    finally:
        c.close()


def test_large_value_linearizable_read(cluster: ProcCluster) -> None:
    value = b"v" * 100_000
    assert call("PUT", cluster.http(0) + kv("large"), value).status == 200
    assert stale_get(cluster.http(0), "large").json()["value"] == value.decode()
    r = call("GET", cluster.http(0) + kv("large"))
    assert r.status == 200, r
    assert r.json()["value"] == value.decode()


# ------------------------------------------------------------------ the MVCC store (issue 13)


def test_revisions_listing_and_cas_on_mod_revision(cluster: ProcCluster) -> None:
    b = cluster.http(0)
    r1 = call("PUT", b + kv("ls/a"), b"1").json()["revision"]
    r2 = call("PUT", b + kv("ls/b"), b"2").json()["revision"]
    call("PUT", b + kv("ls/c"), b"3")
    call("PUT", b + kv("lt/x"), b"other prefix")
    assert r2 > r1
    got = call("GET", b + kv("ls/a")).json()
    assert got["value"] == "1" and got["mod_revision"] == r1 and got["version"] == 1
    assert got["revision"] >= r2
    # A listing, a page at a time, at one revision.
    page = call("GET", b + "/v1/kv?prefix=ls/&limit=2").json()
    assert [k["key"] for k in page["kvs"]] == ["ls/a", "ls/b"] and page["more"]
    call("PUT", b + kv("ls/bb"), b"late")  # after the first page: not in this listing
    rest = call("GET", b + f"/v1/kv?prefix=ls/&limit=2&after={page['next']}"
                f"&rev={page['revision']}").json()  # fmt: skip
    assert [k["key"] for k in rest["kvs"]] == ["ls/c"] and not rest["more"]
    assert [k["key"] for k in call("GET", b + "/v1/kv?prefix=ls/").json()["kvs"]] == [
        "ls/a", "ls/b", "ls/bb", "ls/c"]  # fmt: skip
    assert call("GET", b + f"/v1/kv/ls%2Fa?rev={r1 - 1}").status == 404  # before it existed
    # CAS on mod_revision: only from the revision read.
    body = json.dumps({"mod_revision": r1, "new": "2"}).encode()
    ok = call("POST", b + "/v1/cas/ls%2Fa", body).json()
    assert ok["swapped"] and ok["revision"] > r1
    assert call("POST", b + "/v1/cas/ls%2Fa", body).status == 409  # r1 is not current any more
    create = json.dumps({"mod_revision": 0, "new": "fresh"}).encode()
    assert call("POST", b + "/v1/cas/ls%2Fnew", create).status == 200
    assert call("POST", b + "/v1/cas/ls%2Fnew", create).status == 409


def test_watch_as_server_sent_events(cluster: ProcCluster) -> None:
    """An SSE stream from a past revision; a resume by Last-Event-ID re-sends
    nothing seen and misses nothing."""
    b = cluster.http(0)
    start = call("PUT", b + kv("sse/a"), b"1").json()["revision"]
    call("PUT", b + kv("sse/b"), b"2")
    call("DELETE", b + kv("sse/a"))
    call("PUT", b + kv("other"), b"x")

    def read_events(n: int, headers: dict[str, str]) -> list[tuple[int, dict[str, Any]]]:
        req = urllib.request.Request(
            b + f"/v1/watch/sse%2F?prefix=true&rev={start}&prev_kv=true", headers=headers
        )
        out: list[tuple[int, dict[str, Any]]] = []
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            ev_id = 0
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    ev_id = int(line[4:])
                elif line.startswith("data: "):
                    out.append((ev_id, json.loads(line[6:])))
                    if len(out) == n:
                        return out
        return out

    evs = read_events(3, {})
    assert [(e["type"], e["kv"]["key"]) for _, e in evs] == [
        ("PUT", "sse/a"), ("PUT", "sse/b"), ("DELETE", "sse/a")]  # fmt: skip
    assert evs[2][1]["prev_kv"]["value"] == "1" and evs[0][0] == start
    # Resume after the second event: only the third (and a new one).
    call("PUT", b + kv("sse/c"), b"3")
    again = read_events(2, {"Last-Event-ID": str(evs[1][0])})
    assert [(e["type"], e["kv"]["key"]) for _, e in again] == [
        ("DELETE", "sse/a"),
        ("PUT", "sse/c"),
    ]
