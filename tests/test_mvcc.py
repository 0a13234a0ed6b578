"""The MVCC store (issue 13): etcd's revisions, ranges, transactions,
compaction and leases, as a deterministic state machine.

Expected values follow etcd 3.4's documented behaviour; tests/test_etcd_compat.py
checks the same through etcdctl against a real etcd.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from paxosrsm import mvcc
from paxosrsm.mvcc import MVCCStore, decode_result, encode
from paxosrsm.statemachine import encode_alarm, encode_op


def w(s: MVCCStore, **req: Any) -> dict[str, Any]:
    return decode_result(s.apply(encode(req)))


def r(s: MVCCStore, **req: Any) -> dict[str, Any]:
    return decode_result(s.query(encode({"op": "range", **req})))


def vals(out: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [(kv["key"], kv["value"]) for kv in out["kvs"]]


def test_revisions_versions_and_past_reads() -> None:
    s = MVCCStore()
    assert s.rev == 1
    assert w(s, op="put", key=b"a", value=b"1")["revision"] == 2
    assert w(s, op="put", key=b"a", value=b"2")["revision"] == 3
    assert w(s, op="put", key=b"b", value=b"x")["revision"] == 4
    kv = r(s, key=b"a")["kvs"][0]
    assert (kv["create_revision"], kv["mod_revision"], kv["version"]) == (2, 3, 2)
    assert vals(r(s, key=b"a", revision=2)) == [(b"a", b"1")]
    assert r(s, key=b"b", revision=3)["kvs"] == []
    # A delete ends the generation; a put starts a new one.
    d = w(s, op="delete_range", key=b"a", prev_kv=True)
    assert d["deleted"] == 1 and d["prev_kvs"][0]["value"] == b"2" and d["revision"] == 5
    assert w(s, op="delete_range", key=b"a")["deleted"] == 0 and s.rev == 5  # no new revision
    w(s, op="put", key=b"a", value=b"3")
    kv = r(s, key=b"a")["kvs"][0]
    assert (kv["create_revision"], kv["version"]) == (6, 1)
    assert vals(r(s, key=b"a", revision=4)) == [(b"a", b"2")]
    assert r(s, key=b"a", revision=5)["kvs"] == []
    out = r(s, key=b"a", revision=99)
    assert not out["ok"] and out["error"] == mvcc.ERR_FUTURE_REV


def test_ranges_prefixes_limits_and_sorting() -> None:
    s = MVCCStore()
    for k in (b"a", b"ab", b"abc", b"b", b"c"):
        w(s, op="put", key=k, value=k.upper())
    assert [k for k, _ in vals(r(s, key=b"a", range_end=b"b"))] == [b"a", b"ab", b"abc"]
    assert [k for k, _ in vals(r(s, key=b"ab", range_end=b"\0"))] == [b"ab", b"abc", b"b", b"c"]
    assert len(r(s, key=b"\0", range_end=b"\0")["kvs"]) == 5
    out = r(s, key=b"a", range_end=b"\0", limit=2)
    assert out["more"] and out["count"] == 5 and len(out["kvs"]) == 2
    out = r(s, key=b"a", range_end=b"\0", count_only=True)
    assert out["count"] == 5 and out["kvs"] == []
    assert r(s, key=b"a", keys_only=True)["kvs"][0]["value"] == b""
    desc = r(s, key=b"a", range_end=b"\0", sort_order=mvcc.S_DESCEND)
    assert [k for k, _ in vals(desc)] == [b"c", b"b", b"abc", b"ab", b"a"]
    w(s, op="put", key=b"a", value=b"again")
    by_mod = r(s, key=b"a", range_end=b"\0", sort_target=mvcc.ST_MOD, sort_order=mvcc.S_DESCEND)
    assert vals(by_mod)[0] == (b"a", b"again")
    assert [k for k, _ in vals(r(s, key=b"a", range_end=b"\0", min_mod_revision=6))] == [b"a", b"c"]
    assert not r(s, key=b"")["ok"]


def test_txn_compare_then_else_atomic_in_one_revision() -> None:
    s = MVCCStore()
    w(s, op="put", key=b"k", value=b"v1")
    cas = {
        "op": "txn",
        "compare": [{"key": b"k", "target": mvcc.T_VALUE, "result": mvcc.EQUAL, "value": b"v1"}],
        "success": [
            {"op": "put", "key": b"k", "value": b"v2"},
            {"op": "put", "key": b"other", "value": b"o"},
            {"op": "range", "key": b"k"},
        ],
        "failure": [{"op": "range", "key": b"k"}],
    }
    out = w(s, **cas)
    assert out["succeeded"] and out["revision"] == 3  # two puts, one revision
    assert out["responses"][2]["kvs"][0]["value"] == b"v2"
    a, o = r(s, key=b"k")["kvs"][0], r(s, key=b"other")["kvs"][0]
    assert a["mod_revision"] == o["mod_revision"] == 3
    out = w(s, **cas)
    assert not out["succeeded"] and out["responses"][0]["kvs"][0]["value"] == b"v2"
    assert s.rev == 3
    # Compare on version / create / mod; a missing key has version 0.
    miss = {"key": b"new", "target": mvcc.T_VERSION, "result": mvcc.EQUAL, "version": 0}
    create_once = {"op": "txn", "compare": [miss],
                   "success": [{"op": "put", "key": b"new", "value": b"1"}]}  # fmt: skip
    assert w(s, **create_once)["succeeded"]
    assert not w(s, **create_once)["succeeded"]
    modc = {"key": b"k", "target": mvcc.T_MOD, "result": mvcc.LESS, "mod_revision": 4}
    assert w(s, op="txn", compare=[modc])["succeeded"]
    # A nested txn.
    nested = {"op": "txn", "success": [{"op": "txn", "compare": [modc],
              "success": [{"op": "delete_range", "key": b"k"}]}]}  # fmt: skip
    assert w(s, **nested)["responses"][0]["succeeded"]
    assert r(s, key=b"k")["kvs"] == []
    # Refused before anything runs: the same key put twice, too many ops.
    dup = {"op": "txn", "success": [{"op": "put", "key": b"z", "value": b"1"}] * 2}
    assert w(s, **dup)["error"] == mvcc.ERR_DUPLICATE_KEY
    many = {"op": "txn", "success": [{"op": "range", "key": b"z"}] * 129}
    assert w(s, **many)["error"] == mvcc.ERR_TOO_MANY_OPS
    # A failing op in the middle undoes the ones before it.
    rev = s.rev
    bad = {"op": "txn", "success": [{"op": "put", "key": b"y", "value": b"1"},
           {"op": "put", "key": b"y2", "value": b"1", "lease": 77}]}  # fmt: skip
    assert w(s, **bad)["error"] == mvcc.ERR_LEASE_NOT_FOUND
    assert s.rev == rev and r(s, key=b"y")["kvs"] == []


def test_compaction() -> None:
    s = MVCCStore()
    for i in range(5):
        w(s, op="put", key=b"k", value=str(i).encode())  # revs 2..6
    w(s, op="put", key=b"gone", value=b"x")  # 7
    w(s, op="delete_range", key=b"gone")  # 8
    assert w(s, op="compact", revision=5)["ok"]
    out = r(s, key=b"k", revision=4)
    assert out["error"] == mvcc.ERR_COMPACTED and out["code"] == "OUT_OF_RANGE"
    assert vals(r(s, key=b"k", revision=5)) == [(b"k", b"3")]
    assert [v.mod for v in s.hist[b"k"]] == [5, 6]  # from the one a read at 5 sees
    assert w(s, op="compact", revision=8)["ok"]
    assert b"gone" not in s.hist and b"gone" not in s.keys
    assert w(s, op="compact", revision=8)["error"] == mvcc.ERR_COMPACTED
    assert w(s, op="compact", revision=99)["error"] == mvcc.ERR_FUTURE_REV


def test_leases_attach_and_revoke_deletes_keys() -> None:
    s = MVCCStore()
    assert w(s, op="lease_grant", id=7, ttl=10)["ttl"] == 10
    assert w(s, op="lease_grant", id=7, ttl=10)["error"] == mvcc.ERR_LEASE_EXISTS
    assert w(s, op="put", key=b"a", value=b"1", lease=7)["ok"]
    assert w(s, op="put", key=b"b", value=b"1", lease=8)["error"] == mvcc.ERR_LEASE_NOT_FOUND
    w(s, op="put", key=b"c", value=b"1", lease=7)
    w(s, op="put", key=b"c", value=b"2")  # detached from the lease
    info = decode_result(s.query(encode({"op": "lease", "id": 7})))
    assert info["keys"] == [b"a"]
    rev = s.rev
    assert w(s, op="lease_revoke", id=7)["revision"] == rev + 1
    assert r(s, key=b"a")["kvs"] == [] and vals(r(s, key=b"c")) == [(b"c", b"2")]
    assert w(s, op="lease_revoke", id=7)["error"] == mvcc.ERR_LEASE_NOT_FOUND


def test_the_kv_stores_json_ops_work_on_the_same_data() -> None:
    s = MVCCStore()
    assert s.apply(encode_op("put", "h", "v")) == b'{"ok":true,"value":null}'
    assert s.query(encode_op("get", "h", None)) == b'{"ok":true,"value":"v"}'
    assert vals(r(s, key=b"h")) == [(b"h", b"v")]
    assert s.apply(encode_op("cas", "h", "v", "w")) == b'{"ok":true,"value":true}'
    assert s.apply(encode_op("cas", "h", "v", "x")) == b'{"ok":true,"value":false}'
    assert s.apply(encode_op("delete", "h")) == b'{"ok":true,"value":true}'
    assert s.rev == 4
    s.apply(encode_alarm(2, True))
    assert b"NOSPACE" in s.apply(encode_op("put", "h", "v"))
    assert w(s, op="put", key=b"x", value=b"1")["code"] == "RESOURCE_EXHAUSTED"
    assert s.precheck(encode({"op": "put", "key": b"x", "value": b"1"})) is not None
    assert s.precheck(encode({"op": "delete_range", "key": b"x"})) is None
    assert w(s, op="delete_range", key=b"x")["ok"]
    s.apply(encode_alarm(2, False))
    assert w(s, op="put", key=b"x", value=b"1")["ok"]


def test_bad_requests_are_refused_never_raised() -> None:
    s = MVCCStore()
    rng = random.Random(5)
    for payload in [b"M1", b"M1\xc1", b"M1\x90", b"M1" + bytes(range(40)), b"{", b"[]"] + [
        b"M1" + rng.randbytes(rng.randrange(1, 50)) for _ in range(300)
    ]:
        out = s.apply(payload)
        assert out  # an answer, never an exception
        s.query(payload)
    assert not w(s, op="put", key="str-not-bytes", value=b"1")["ok"]
    assert not w(s, op="range", key=b"a", limit="x")["ok"]
    assert not w(s, op="txn", success=[{"op": "nope"}])["ok"]
    assert s.rev == 1


def test_snapshots_are_deterministic_and_complete() -> None:
    rng = random.Random(11)
    a = MVCCStore()
    w(a, op="lease_grant", id=3, ttl=5)
    for _i in range(300):
        k = f"k{rng.randrange(30)}".encode()
        c = rng.random()
        if c < 0.6:
            w(a, op="put", key=k, value=rng.randbytes(4), lease=3 if rng.random() < 0.2 else 0)
        elif c < 0.9:
            w(a, op="delete_range", key=k, range_end=k + b"\xff" if rng.random() < 0.3 else b"")
        elif a.rev > a.compact_rev + 5:
            w(a, op="compact", revision=a.rev - 3)
    b = MVCCStore()
    b.restore(a.snapshot())
    assert b.snapshot() == a.snapshot()
    for rev in range(a.compact_rev, a.rev + 1):
        assert r(a, key=b"\0", range_end=b"\0", revision=rev) == r(
            b, key=b"\0", range_end=b"\0", revision=rev
        )
    assert {k: v.keys for k, v in a.leases.items()} == {k: v.keys for k, v in b.leases.items()}
    # A KV store's snapshot (an upgrade) loads as the first revision.
    from paxosrsm.statemachine import KVStore

    kv = KVStore()
    kv.apply(encode_op("put", "old", "1"))
    c = MVCCStore()
    c.restore(kv.snapshot())
    assert vals(r(c, key=b"old")) == [(b"old", b"1")]
    with pytest.raises(Exception, match="mvcc snapshot"):
        c.restore(b"M1\x01")


def test_against_a_model_at_every_revision() -> None:
    """A random history checked against a dict per revision."""
    rng = random.Random(3)
    s = MVCCStore()
    states: dict[int, dict[bytes, bytes]] = {1: {}}
    cur: dict[bytes, bytes] = {}
    for _ in range(400):
        k = bytes([97 + rng.randrange(6)])
        if rng.random() < 0.7:
            v = rng.randbytes(3)
            w(s, op="put", key=k, value=v)
            cur[k] = v
        else:
            w(s, op="delete_range", key=k, range_end=bytes([k[0] + 2]))
            for x in list(cur):
                if k <= x < bytes([k[0] + 2]):
                    del cur[x]
        states[s.rev] = dict(cur)
    last: dict[bytes, bytes] = {}
    for rev in range(1, s.rev + 1):
        last = states.get(rev, last)
        got = dict(vals(r(s, key=b"\0", range_end=b"\0", revision=rev)))
        assert got == last, rev


def test_the_generated_grpc_modules_match_their_proto_files(tmp_path: Any) -> None:
    """etcdapi/pb/*_pb2*.py are made by ``make protos``; a .proto edited
    without it fails here."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    node = Path(__file__).resolve().parent.parent / "node"
    pb = node / "paxosrsm" / "etcdapi" / "pb"
    dst = tmp_path / "paxosrsm" / "etcdapi" / "pb"
    dst.mkdir(parents=True)
    for f in ("kv.proto", "auth.proto", "rpc.proto"):
        shutil.copy(pb / f, dst / f)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(tmp_path),
         f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         str(dst / "kv.proto"), str(dst / "auth.proto"), str(dst / "rpc.proto")],
        check=True,
    )  # fmt: skip
    for f in ("kv_pb2.py", "auth_pb2.py", "rpc_pb2.py", "rpc_pb2_grpc.py"):
        assert (dst / f).read_text() == (pb / f).read_text(), f"{f}: run `make protos`"


def test_history_is_compacted_automatically() -> None:
    """etcd's --auto-compaction-mode=revision: the history spans at most
    twice the retention, whatever the writes; every replica compacts at the
    same revision (it is part of the state)."""
    s = MVCCStore(retain=50)
    for i in range(1_000):
        w(s, op="put", key=b"hot", value=str(i).encode())
        assert s.rev - s.compact_rev < 100
    assert len(s.hist[b"hot"]) <= 100
    assert r(s, key=b"hot", revision=s.rev - 49)["ok"]
    assert r(s, key=b"hot", revision=s.compact_rev - 1)["error"] == mvcc.ERR_COMPACTED
    t = MVCCStore()
    t.restore(s.snapshot())
    assert t.retain == 50 and t.snapshot() == s.snapshot()


def test_events_for_watches() -> None:
    s = MVCCStore()
    w(s, op="put", key=b"a", value=b"1")  # 2
    w(s, op="put", key=b"b", value=b"1")  # 3
    w(s, op="put", key=b"a", value=b"2")  # 4
    w(s, op="delete_range", key=b"a")  # 5
    txn = {"op": "txn", "success": [{"op": "put", "key": b"a1", "value": b"x"},
                                    {"op": "put", "key": b"a2", "value": b"y"}]}  # fmt: skip
    w(s, **txn)  # 6: two events

    def ev(**q: Any) -> dict[str, Any]:
        return decode_result(s.query(encode({"op": "events", **q})))

    out = ev(start=1, key=b"a", range_end=b"b", prev_kv=True)
    got = [(e["type"], e["kv"]["key"], e["kv"]["mod_revision"]) for e in out["events"]]
    assert got == [(0, b"a", 2), (0, b"a", 4), (1, b"a", 5), (0, b"a1", 6), (0, b"a2", 6)]
    assert out["events"][1]["prev_kv"]["value"] == b"1"
    assert out["events"][2]["prev_kv"]["value"] == b"2" and out["next"] == 7
    # A limit stops at a revision's boundary, never inside one.
    out = ev(start=1, key=b"a", range_end=b"b", limit=4)
    assert len(out["events"]) == 5 and out["next"] == 7
    out = ev(start=1, key=b"a", range_end=b"b", limit=1)
    assert len(out["events"]) == 1 and out["next"] == 3
    assert ev(start=7, key=b"a")["events"] == []
    # Compacted: the error; the change log is trimmed with the history.
    w(s, op="compact", revision=4)
    assert ev(start=3, key=b"a")["error"] == mvcc.ERR_COMPACTED
    assert [e["kv"]["mod_revision"] for e in ev(start=4, key=b"a")["events"]] == [4, 5]
    # Rebuilt at a restore; a refused transaction leaves no event.
    t = MVCCStore()
    t.restore(s.snapshot())
    assert ev(start=4, key=b"\0", range_end=b"\0") == decode_result(
        t.query(encode({"op": "events", "start": 4, "key": b"\0", "range_end": b"\0"}))
    )
    bad = {"op": "txn", "success": [{"op": "put", "key": b"z", "value": b"1"},
           {"op": "put", "key": b"z2", "value": b"1", "lease": 9}]}  # fmt: skip
    w(s, **bad)
    assert ev(start=7, key=b"z")["events"] == [] and len(s.changes) == len(t.changes)


def test_lease_deadlines_are_the_leaders_soft_state() -> None:
    now = [100.0]
    s = MVCCStore()
    s.clock = lambda: now[0]

    def q(**req: Any) -> dict[str, Any]:
        return decode_result(s.query(encode(req)))

    w(s, op="lease_grant", id=5, ttl=10)
    w(s, op="put", key=b"k", value=b"v", lease=5)
    assert q(op="lease_expired")["expired"] == []  # first seen: now + ttl
    revoke = encode({"op": "lease_revoke", "id": 5, "expire": True})
    assert s.precheck(revoke) is not None  # not expired by this clock
    now[0] = 108.0
    assert q(op="lease_keepalive", id=5)["ttl"] == 10  # deadline 118
    now[0] = 115.0
    assert q(op="lease_expired")["expired"] == [] and q(op="lease", id=5)["remaining"] == 3
    now[0] = 118.5
    assert q(op="lease_expired")["expired"] == [5]
    assert s.precheck(revoke) is None  # the leader's clock agrees: propose it
    # A new leader starts every deadline over.
    assert q(op="lease_reset")["leases"] == 1
    assert q(op="lease_expired")["expired"] == [] and s.precheck(revoke) is not None
    now[0] = 200.0
    assert s.precheck(revoke) is None
    assert w(s, **decode_result(b"\x80") | {"op": "lease_revoke", "id": 5, "expire": True})["ok"]
    assert r(s, key=b"k")["kvs"] == [] and s.deadlines == {}
    assert q(op="lease_keepalive", id=5)["code"] == "NOT_FOUND"
