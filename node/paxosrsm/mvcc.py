"""A multi-version key-value store: etcd's data model, as a deterministic state machine.

Issue 13. Every write transaction (a put, a delete that deletes something, a
transaction whose chosen branch writes) makes one new *revision*, numbered from
1 for the empty store, as etcd's. Each key keeps ``create_revision``,
``mod_revision``, ``version`` (1 at creation, +1 per put; a delete ends the
key's generation) and its lease. Reads can be served at any revision at or
above the compaction revision; ``compact(rev)`` drops the history below it.

Requests and results are msgpack maps after a 2-byte tag (``b"M1"``), with
keys and values as bytes (etcd's are bytes). The KV store's JSON operations
(``get``, ``put``, ``delete``, ``cas``, ``alarm``; ``paxosrsm.statemachine``)
are served too, on the same data, so the HTTP API and ``paxosctl`` keep
working: their keys and values are UTF-8.

Determinism: nothing here reads a clock or iterates a set; a lease's expiry
is decided by the leader and proposed (``lease_revoke``), as etcd does.
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from .statemachine import NOSPACE, KVStore
from .types import ProtocolError

TAG = b"M1"
#: etcd's error texts (clients match on them).
ERR_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
ERR_FUTURE_REV = "etcdserver: mvcc: required revision is a future revision"
ERR_LEASE_NOT_FOUND = "etcdserver: requested lease not found"
ERR_LEASE_EXISTS = "etcdserver: lease already exists"
ERR_KEY_NOT_FOUND = "etcdserver: key not found"
ERR_EMPTY_KEY = "etcdserver: key is not provided"
ERR_DUPLICATE_KEY = "etcdserver: duplicate key given in txn request"
ERR_TOO_MANY_OPS = "etcdserver: too many operations in txn request"
#: etcd's default --max-txn-ops.
MAX_TXN_OPS = 128
#: Bounds on what one request may ask (the frame limit bounds the bytes).
MAX_TXN_DEPTH = 8
#: Automatic compaction (etcd's --auto-compaction-mode=revision): once the
#: history spans twice this many revisions, it is compacted to keep this
#: many. Part of the replicated state (every replica compacts at the same
#: revision), so reads at a revision answer alike everywhere.
AUTO_RETAIN = 10_000

# Compare results and targets (etcd's enums).
EQUAL, GREATER, LESS, NOT_EQUAL = 0, 1, 2, 3
T_VERSION, T_CREATE, T_MOD, T_VALUE, T_LEASE = 0, 1, 2, 3, 4
# Sort (RangeRequest.SortOrder / SortTarget).
S_NONE, S_ASCEND, S_DESCEND = 0, 1, 2
ST_KEY, ST_VERSION, ST_CREATE, ST_MOD, ST_VALUE = 0, 1, 2, 3, 4


class MVCCError(Exception):
    """A request refused with etcd's error text; ``code`` is the gRPC status name."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Version:
    """One version of a key: the state after the write at ``mod``."""

    mod: int
    sub: int
    create: int
    version: int  # 0: a tombstone (the key was deleted at ``mod``)
    value: bytes
    lease: int


@dataclass(slots=True)
class Lease:
    id: int
    ttl: int  # granted TTL, seconds
    keys: set[bytes] = field(default_factory=set)


def kv_dict(key: bytes, v: Version, keys_only: bool = False) -> dict[str, Any]:
    """A ``mvccpb.KeyValue`` as a map (field names as etcd's)."""
    return {
        "key": key,
        "create_revision": v.create,
        "mod_revision": v.mod,
        "version": v.version,
        "value": b"" if keys_only else v.value,
        "lease": v.lease,
    }


def encode(req: dict[str, Any]) -> bytes:
    """A request for this store (client side)."""
    return TAG + bytes(msgpack.packb(req, use_bin_type=True))


def decode_result(data: bytes) -> dict[str, Any]:
    out = msgpack.unpackb(data, raw=False)
    if not isinstance(out, dict):
        raise ProtocolError("mvcc result is not a map")
    return out


def _bytes(req: dict[str, Any], name: str, default: bytes = b"") -> bytes:
    v = req.get(name, default)
    if not isinstance(v, bytes):
        raise MVCCError(f"{name} must be bytes")
    return v


def _int(req: dict[str, Any], name: str, default: int = 0) -> int:
    v = req.get(name, default)
    if type(v) is not int or not -(1 << 63) <= v < 1 << 63:
        raise MVCCError(f"{name} must be a 64-bit integer")
    return v


def _bool(req: dict[str, Any], name: str) -> bool:
    v = req.get(name, False)
    if type(v) is not bool:
        raise MVCCError(f"{name} must be a boolean")
    return v


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's range semantics: no end: the key alone; end ``\\0``: every
    key from ``start``; else ``[start, end)``."""
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class MVCCStore:
    """The default state machine from issue 13 on (see the module's docstring)."""

    def __init__(self, retain: int = AUTO_RETAIN) -> None:
        self.rev = 1  # etcd's store starts at revision 1
        self.compact_rev = 0
        #: Compactions done and the last one's duration (for the metrics:
        #: not part of the state, never in a snapshot).
        self.compactions = 0
        self.last_compaction_seconds = 0.0
        self.retain = retain
        self.keys: Any = SortedList()  # every key with a version kept
        #: Keys that a compaction may shorten: written since the last one,
        #: or left by it with more than one version (or a tombstone). A
        #: compaction visits these only, not every key.
        self.compactable: set[bytes] = set()
        #: Every change in order, (revision, key), from the compaction
        #: revision on: what watches read (``events``). Derived from the
        #: history (rebuilt at a restore), so never in a snapshot.
        self.changes: deque[tuple[int, bytes]] = deque()
        #: Lease deadlines (monotonic seconds): soft state of the node that
        #: leads, never replicated nor used by ``apply``. Keepalives (reads
        #: at the leader) move them; the leader revokes what expired through
        #: the log, and ``precheck`` refuses an expiry its own clock does not
        #: confirm. A new leader restarts every deadline (``lease_reset``):
        #: no lease expires early because of a failover.
        self.deadlines: dict[int, float] = {}
        self.clock: Any = time.monotonic
        self.hist: dict[bytes, list[Version]] = {}
        self.leases: dict[int, Lease] = {}
        self.alarms: set[int] = set()
        self._sub = 0  # sub-revision within the write transaction applying
        self._writing = False

    # ------------------------------------------------------------ reading

    def _at(self, key: bytes, rev: int) -> Version | None:
        h = self.hist.get(key)
        if not h:
            return None
        if rev >= h[-1].mod:
            v = h[-1]
        else:
            i = bisect.bisect_right([x.mod for x in h], rev) - 1
            if i < 0:
                return None
            v = h[i]
        return v if v.version else None

    def _live(self, key: bytes) -> Version | None:
        h = self.hist.get(key)
        if not h or not h[-1].version:
            return None
        return h[-1]

    def _keys_in(self, start: bytes, end: bytes) -> list[bytes]:
        if not end:
            return [start] if start in self.hist else []
        if end == b"\0":
            return list(self.keys.irange(start))
        return list(self.keys.irange(start, end, inclusive=(True, False)))

    def range(self, req: dict[str, Any]) -> dict[str, Any]:
        key, end = _bytes(req, "key"), _bytes(req, "range_end")
        if not key:
            raise MVCCError(ERR_EMPTY_KEY)
        rev = _int(req, "revision")
        limit = _int(req, "limit")
        if rev > self.rev:
            raise MVCCError(ERR_FUTURE_REV, "OUT_OF_RANGE")
        if 0 < rev < self.compact_rev:
            raise MVCCError(ERR_COMPACTED, "OUT_OF_RANGE")
        at = rev if rev > 0 else self.rev
        keys_only, count_only = _bool(req, "keys_only"), _bool(req, "count_only")
        min_mod, max_mod = _int(req, "min_mod_revision"), _int(req, "max_mod_revision")
        min_cr, max_cr = _int(req, "min_create_revision"), _int(req, "max_create_revision")
        found: list[tuple[bytes, Version]] = []
        for k in self._keys_in(key, end):
            v = self._at(k, at) if rev else self._live(k)
            if v is None:
                continue
            if (min_mod and v.mod < min_mod) or (max_mod and v.mod > max_mod):
                continue
            if (min_cr and v.create < min_cr) or (max_cr and v.create > max_cr):
                continue
            found.append((k, v))
        order, target = _int(req, "sort_order"), _int(req, "sort_target")
        if order == S_NONE and target != ST_KEY:
            order = S_ASCEND  # etcd: a target without an order sorts ascending
        if order != S_NONE:
            keyf: Any = {
                ST_KEY: lambda kv: kv[0],
                ST_VERSION: lambda kv: kv[1].version,
                ST_CREATE: lambda kv: kv[1].create,
                ST_MOD: lambda kv: kv[1].mod,
                ST_VALUE: lambda kv: kv[1].value,
            }.get(target)
            if keyf is None:
                raise MVCCError(f"unknown sort target {target}")
            found.sort(key=keyf, reverse=order == S_DESCEND)
        count = len(found)
        more = 0 < limit < count
        if more:
            found = found[:limit]
        out: dict[str, Any] = {"revision": self.rev, "count": count, "more": more}
        out["kvs"] = [] if count_only else [kv_dict(k, v, keys_only) for k, v in found]
        return out

    def events(self, req: dict[str, Any]) -> dict[str, Any]:
        """The changes to keys in ``[key, range_end)`` at revisions from
        ``start`` on, in order (etcd's watch events), whole revisions only
        and up to about ``limit`` events. ``next`` is where to go on from."""
        start = max(1, _int(req, "start"))
        key, end = _bytes(req, "key"), _bytes(req, "range_end")
        limit = max(1, min(_int(req, "limit", 1000), 10_000))
        max_bytes = _int(req, "max_bytes", 1 << 62)
        size = 0
        prev_kv = _bool(req, "prev_kv")
        if start < self.compact_rev:
            raise MVCCError(ERR_COMPACTED, "OUT_OF_RANGE")
        ch = self.changes
        i = bisect.bisect_left(ch, (start, b""))
        out: list[dict[str, Any]] = []
        last = start - 1
        n = len(ch)
        scanned = 0
        while i < n:
            rev, k = ch[i]
            if (len(out) >= limit or scanned >= 50_000 or size >= max_bytes) and rev != last:
                break  # at a revision's boundary: the next call goes on from it
            scanned += 1
            i += 1
            last = rev
            if not in_range(k, key, end):
                continue
            h = self.hist.get(k)
            if not h:
                continue
            j = next((x for x in range(len(h) - 1, -1, -1) if h[x].mod == rev), None)
            if j is None:
                continue
            v = h[j]
            if v.version:
                ev: dict[str, Any] = {"type": 0, "kv": kv_dict(k, v)}
            else:
                ev = {"type": 1, "kv": {"key": k, "create_revision": 0, "mod_revision": rev,
                                        "version": 0, "value": b"", "lease": 0}}  # fmt: skip
            if prev_kv and j > 0 and h[j - 1].version:
                ev["prev_kv"] = kv_dict(k, h[j - 1])
                size += len(h[j - 1].value)
            size += len(k) + len(v.value) + 32
            out.append(ev)
        nxt = self.rev + 1 if i >= n else last + 1
        return {"events": out, "next": nxt, "revision": self.rev}

    # ------------------------------------------------------------ writing

    def _next(self) -> tuple[int, int]:
        """The (revision, sub) of the next change in this write transaction."""
        if not self._writing:
            self._writing = True
            self.rev += 1
            self._sub = 0
        else:
            self._sub += 1
        return self.rev, self._sub

    def _put(self, req: dict[str, Any]) -> dict[str, Any]:
        key, value = _bytes(req, "key"), _bytes(req, "value")
        if not key:
            raise MVCCError(ERR_EMPTY_KEY)
        lease = _int(req, "lease")
        prev = self._live(key)
        if _bool(req, "ignore_value"):
            if prev is None:
                raise MVCCError(ERR_KEY_NOT_FOUND)
            value = prev.value
        if _bool(req, "ignore_lease"):
            if prev is None:
                raise MVCCError(ERR_KEY_NOT_FOUND)
            lease = prev.lease
        if lease and lease not in self.leases:
            raise MVCCError(ERR_LEASE_NOT_FOUND, "NOT_FOUND")
        rev, sub = self._next()
        create = prev.create if prev else rev
        version = prev.version + 1 if prev else 1
        self._append(key, Version(rev, sub, create, version, value, lease))
        if prev is not None and prev.lease and prev.lease != lease:
            ls = self.leases.get(prev.lease)
            if ls is not None:
                ls.keys.discard(key)
        if lease:
            self.leases[lease].keys.add(key)
        out: dict[str, Any] = {"revision": rev}
        if prev is not None and _bool(req, "prev_kv"):
            out["prev_kv"] = kv_dict(key, prev)
        return out

    def _fast_put(self, key: bytes, value: bytes) -> None:
        """A put with no lease, alone in its revision (the KV store's JSON
        put, the common case): what ``_put`` does, without its options."""
        self.rev += 1
        rev = self.rev
        self.compactable.add(key)
        self.changes.append((rev, key))
        h = self.hist.get(key)
        if h is None:
            self.hist[key] = [Version(rev, 0, rev, 1, value, 0)]
            self.keys.add(key)
            return
        prev = h[-1]
        if prev.version:
            h.append(Version(rev, 0, prev.create, prev.version + 1, value, 0))
            if prev.lease and prev.lease in self.leases:
                self.leases[prev.lease].keys.discard(key)
        else:
            h.append(Version(rev, 0, rev, 1, value, 0))

    def _append(self, key: bytes, v: Version) -> None:
        self.compactable.add(key)
        h = self.hist.get(key)
        if h is None or h[-1].mod != v.mod:
            self.changes.append((v.mod, key))
        if h is None:
            self.hist[key] = [v]
            self.keys.add(key)
        elif h[-1].mod == v.mod:
            h[-1] = v  # the same key twice in one transaction: the last wins
        else:
            h.append(v)

    def _delete_range(self, req: dict[str, Any]) -> dict[str, Any]:
        key, end = _bytes(req, "key"), _bytes(req, "range_end")
        victims = [(k, v) for k in self._keys_in(key, end) if (v := self._live(k)) is not None]
        out: dict[str, Any] = {"deleted": len(victims)}
        if _bool(req, "prev_kv"):
            out["prev_kvs"] = [kv_dict(k, v) for k, v in victims]
        for k, v in victims:
            rev, sub = self._next()
            self._append(k, Version(rev, sub, 0, 0, b"", 0))
            if v.lease and v.lease in self.leases:
                self.leases[v.lease].keys.discard(k)
        out["revision"] = self.rev
        return out

    def _compare(self, c: dict[str, Any]) -> bool:
        key, end = _bytes(c, "key"), _bytes(c, "range_end")
        result, target = _int(c, "result"), _int(c, "target")
        keys = self._keys_in(key, end) if end else [key]
        live = [self._live(k) for k in keys]
        if end:
            live = [v for v in live if v is not None]
            if not live:
                return True  # etcd: a range compare over no keys holds
        for v in live:
            if target == T_VALUE:
                have: Any = v.value if v else None
                want: Any = _bytes(c, "value")
                if have is None:
                    return False  # etcd: a value compare on a missing key fails
            elif target == T_VERSION:
                have, want = (v.version if v else 0), _int(c, "version")
            elif target == T_CREATE:
                have, want = (v.create if v else 0), _int(c, "create_revision")
            elif target == T_MOD:
                have, want = (v.mod if v else 0), _int(c, "mod_revision")
            elif target == T_LEASE:
                have, want = (v.lease if v else 0), _int(c, "lease")
            else:
                raise MVCCError(f"unknown compare target {target}")
            ok = {
                EQUAL: have == want,
                NOT_EQUAL: have != want,
                GREATER: have > want,
                LESS: have < want,
            }.get(result)
            if ok is None:
                raise MVCCError(f"unknown compare result {result}")
            if not ok:
                return False
        return True

    def _check_txn(self, req: dict[str, Any], depth: int) -> None:
        """Refuse what etcd refuses before running anything: too many ops,
        a key written twice, nesting too deep."""
        if depth > MAX_TXN_DEPTH:
            raise MVCCError("etcdserver: txn nested too deeply")
        for name in ("compare", "success", "failure"):
            ops = req.get(name, [])
            if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
                raise MVCCError(f"{name} must be a list of maps")
            if len(ops) > MAX_TXN_OPS:
                raise MVCCError(ERR_TOO_MANY_OPS)
        for branch in ("success", "failure"):
            puts: set[bytes] = set()
            for op in req.get(branch, []):
                kind = op.get("op")
                if kind == "put":
                    k = _bytes(op, "key")
                    if k in puts:
                        raise MVCCError(ERR_DUPLICATE_KEY)
                    puts.add(k)
                elif kind == "txn":
                    self._check_txn(op, depth + 1)
                elif kind not in ("range", "delete_range"):
                    raise MVCCError(f"unknown txn op {kind!r}")

    def _txn(self, req: dict[str, Any]) -> dict[str, Any]:
        ok = all(self._compare(c) for c in req.get("compare", []))
        responses = []
        for op in req.get("success" if ok else "failure", []):
            kind = op["op"]
            if kind == "range":
                r = self.range(op)
            elif kind == "put":
                r = self._put(op)
            elif kind == "delete_range":
                r = self._delete_range(op)
            else:
                r = self._txn(op)
            r["revision"] = self.rev
            responses.append({"op": kind, **r})
        return {"succeeded": ok, "responses": responses, "revision": self.rev}

    def _compact(self, req: dict[str, Any]) -> dict[str, Any]:
        rev = _int(req, "revision")
        if rev <= self.compact_rev:
            raise MVCCError(ERR_COMPACTED, "OUT_OF_RANGE")
        if rev > self.rev:
            raise MVCCError(ERR_FUTURE_REV, "OUT_OF_RANGE")
        t0 = time.perf_counter()
        out = self._compact_to(rev)
        self.compactions += 1
        self.last_compaction_seconds = time.perf_counter() - t0
        return out

    def _compact_to(self, rev: int) -> dict[str, Any]:
        self.compact_rev = rev
        while self.changes and self.changes[0][0] < rev:
            self.changes.popleft()
        gone = []
        todo, self.compactable = self.compactable, set()
        for k in sorted(todo):
            h = self.hist.get(k)
            if h is None:
                continue
            # Keep the newest version at or below rev (what a read at rev
            # sees), unless it is a tombstone, and everything above.
            if h[-1].mod <= rev:  # the common case: nothing above rev
                if not h[-1].version:
                    h.clear()
                elif len(h) > 1:
                    del h[:-1]
            elif h[0].mod <= rev:
                i = 0
                while h[i + 1].mod <= rev:
                    i += 1
                del h[: i if h[i].version else i + 1]
            if not h:
                gone.append(k)
            elif len(h) > 1 or not h[0].version:
                self.compactable.add(k)
        for k in gone:
            del self.hist[k]
            self.keys.remove(k)
        return {"revision": self.rev}

    def _lease_grant(self, req: dict[str, Any]) -> dict[str, Any]:
        lid, ttl = _int(req, "id"), _int(req, "ttl")
        if lid <= 0:
            raise MVCCError("etcdserver: lease id must be positive")
        if lid in self.leases:
            raise MVCCError(ERR_LEASE_EXISTS, "FAILED_PRECONDITION")
        if not 0 < ttl <= 9_000_000_000:
            raise MVCCError("etcdserver: too large lease TTL" if ttl > 0 else "bad ttl")
        self.leases[lid] = Lease(lid, ttl)
        return {"id": lid, "ttl": ttl, "revision": self.rev}

    def _lease_revoke(self, req: dict[str, Any]) -> dict[str, Any]:
        lid = _int(req, "id")
        ls = self.leases.pop(lid, None)
        self.deadlines.pop(lid, None)
        if ls is None:
            raise MVCCError(ERR_LEASE_NOT_FOUND, "NOT_FOUND")
        for k in sorted(ls.keys):  # sorted: deterministic sub-revisions
            v = self._live(k)
            if v is not None:
                rev, sub = self._next()
                self._append(k, Version(rev, sub, 0, 0, b"", 0))
        return {"revision": self.rev}

    def _auto_compact(self) -> None:
        if self.retain and self.rev - self.compact_rev >= 2 * self.retain:
            self._compact({"revision": self.rev - self.retain})

    _WRITES: dict[str, Any] = {
        "put": _put,
        "delete_range": _delete_range,
        "txn": _txn,
        "compact": _compact,
        "lease_grant": _lease_grant,
        "lease_revoke": _lease_revoke,
    }

    def _writes_values(self, req: dict[str, Any]) -> bool:
        """Whether a request may grow the store (refused under NOSPACE)."""
        op = req.get("op")
        if op in ("put", "lease_grant"):
            return True
        if op == "txn":
            return any(
                self._writes_values(o)
                for b in ("success", "failure")
                for o in req.get(b, [])
                if isinstance(o, dict)
            )
        return False

    # ------------------------------------------------------------ the interface

    def apply(self, payload: bytes) -> bytes:
        if not payload.startswith(TAG):
            return self._legacy(payload)
        self._writing = False
        try:
            req = self._parse(payload)
            op = req.get("op")
            if op == "alarm":
                return self._legacy_alarm(req)
            fn = self._WRITES.get(op) if isinstance(op, str) else None
            if fn is None:
                if op == "range":
                    return self._ok(self.range(req))
                raise MVCCError(f"unknown op {op!r}")
            if self.alarms and self._writes_values(req):
                raise MVCCError(f"etcdserver: mvcc: database space exceeded ({NOSPACE})",
                                "RESOURCE_EXHAUSTED")  # fmt: skip
            if op == "txn":
                self._check_txn(req, 0)
            snap = self._undo_point()
            try:
                out = self._ok(fn(self, req))
            except MVCCError:
                self._undo(snap)  # a refused request changes nothing
                raise
            self._auto_compact()
            return out
        except MVCCError as e:
            return self._err(str(e), e.code)
        finally:
            self._writing = False

    def query(self, payload: bytes) -> bytes:
        if not payload.startswith(TAG):
            return self._legacy_query(payload)
        try:
            req = self._parse(payload)
            if req.get("op") == "range":
                return self._ok(self.range(req))
            if req.get("op") == "txn" and not txn_writes(req):
                # A transaction of compares and ranges only: a read.
                self._check_txn(req, 0)
                return self._ok(self._txn(req))
            if req.get("op") == "events":
                return self._ok(self.events(req))
            if req.get("op") == "rev":
                return self._ok({"revision": self.rev, "compact_revision": self.compact_rev})
            if req.get("op") == "status":
                return self._ok(
                    {"revision": self.rev, "compact_revision": self.compact_rev,
                     "keys": len(self.keys), "leases": len(self.leases)}
                )  # fmt: skip
            if req.get("op") in ("lease_keepalive", "lease_expired", "lease_reset"):
                return self._ok(self._lease_soft(req))
            if req.get("op") == "leases":
                return self._ok({"leases": sorted(self.leases), "revision": self.rev})
            if req.get("op") == "lease":
                ls = self.leases.get(_int(req, "id"))
                if ls is None:
                    raise MVCCError(ERR_LEASE_NOT_FOUND, "NOT_FOUND")
                now = self.clock()
                dl = self.deadlines.get(ls.id)
                left = ls.ttl if dl is None else max(0, math.ceil(dl - now))
                return self._ok({"id": ls.id, "ttl": ls.ttl, "remaining": left,
                                 "keys": sorted(ls.keys), "revision": self.rev})  # fmt: skip
            raise MVCCError(f"not a read: {req.get('op')!r}")
        except MVCCError as e:
            return self._err(str(e), e.code)

    def _lease_soft(self, req: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        op = req["op"]
        if op == "lease_keepalive":
            ls = self.leases.get(_int(req, "id"))
            if ls is None:
                raise MVCCError(ERR_LEASE_NOT_FOUND, "NOT_FOUND")
            self.deadlines[ls.id] = now + ls.ttl
            return {"id": ls.id, "ttl": ls.ttl, "revision": self.rev}
        if op == "lease_reset":
            self.deadlines = {i: now + ls.ttl for i, ls in self.leases.items()}
            return {"leases": len(self.leases)}
        expired = []
        for i, ls in self.leases.items():
            dl = self.deadlines.setdefault(i, now + ls.ttl)
            if dl <= now:
                expired.append(i)
        for i in [i for i in self.deadlines if i not in self.leases]:
            del self.deadlines[i]
        return {"expired": sorted(expired)[:1000]}

    def precheck(self, payload: bytes) -> bytes | None:
        if payload.startswith(TAG) and b"expire" in payload:
            try:
                req = self._parse(payload)
            except MVCCError:
                return None
            if req.get("op") == "lease_revoke" and req.get("expire") is True:
                # An expiry is the leader's decision: its own clock must agree
                # (a deposed leader's request, forwarded here, is refused).
                lid = req.get("id")
                dl = self.deadlines.get(lid) if type(lid) is int else None
                if dl is None or dl > self.clock():
                    return self._err("etcdserver: lease not expired here", "FAILED_PRECONDITION")
        if not self.alarms:
            return None
        if not payload.startswith(TAG):
            return KVStore.precheck(self._as_kv(), payload)
        try:
            req = self._parse(payload)
        except MVCCError:
            return None
        if self._writes_values(req):
            msg = f"etcdserver: mvcc: database space exceeded ({NOSPACE})"
            return self._err(msg, "RESOURCE_EXHAUSTED")
        return None

    @staticmethod
    def _parse(payload: bytes) -> dict[str, Any]:
        try:
            req = msgpack.unpackb(payload[len(TAG) :], raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several types on bad input
            raise MVCCError(f"malformed request: {e}") from None
        if not isinstance(req, dict):
            raise MVCCError("malformed request: not a map")
        return req

    @staticmethod
    def _ok(out: dict[str, Any]) -> bytes:
        return bytes(msgpack.packb({"ok": True, **out}, use_bin_type=True))

    @staticmethod
    def _err(msg: str, code: str) -> bytes:
        return bytes(msgpack.packb({"ok": False, "error": msg, "code": code}, use_bin_type=True))

    def _undo_point(self) -> tuple[int, int, int]:
        return self.rev, self.compact_rev, len(self.leases)

    def _undo(self, snap: tuple[int, int, int]) -> None:
        """Drop the versions a refused request wrote (at revisions above the
        point). Requests are checked before they write where etcd checks
        them; this is the backstop (a put to a missing lease in a txn)."""
        rev = snap[0]
        if self.rev == rev:
            return
        while self.changes and self.changes[-1][0] > rev:
            self.changes.pop()
        for k in list(self.keys):
            h = self.hist[k]
            while h and h[-1].mod > rev:
                h.pop()
            if not h:
                del self.hist[k]
                self.keys.remove(k)
        self.rev = rev
        self._rebuild_lease_keys()

    def _rebuild_lease_keys(self) -> None:
        for ls in self.leases.values():
            ls.keys = set()
        for k in self.keys:
            v = self._live(k)
            if v is not None and v.lease in self.leases:
                self.leases[v.lease].keys.add(k)

    # ------------------------------------------------------------ the KV store's JSON ops

    def _as_kv(self) -> KVStore:
        kv = KVStore()
        kv.alarms = self.alarms
        return kv

    def _legacy_alarm(self, req: dict[str, Any]) -> bytes:
        m, active = req.get("member"), req.get("active")
        if type(m) is not int or type(active) is not bool:
            return self._err("alarm needs member and active", "INVALID_ARGUMENT")
        (self.alarms.add if active else self.alarms.discard)(m)
        return self._ok({"revision": self.rev})

    def _legacy(self, payload: bytes) -> bytes:
        """``get``/``put``/``delete``/``cas``/``alarm`` in the KV store's JSON."""
        body = KVStore._parse(payload)
        if isinstance(body, str):
            return _json_err(body)
        op, key = body.get("op"), str(body["key"]).encode()
        if op == "alarm":
            kv = self._as_kv()
            out = kv.apply(payload)
            self.alarms = kv.alarms
            return out
        if self.alarms and op in ("put", "cas"):
            return KVStore.precheck(self._as_kv(), payload) or b""
        self._writing = False
        try:
            self._auto_compact()
            if op == "put":
                v = body.get("value")
                if not isinstance(v, str):
                    return _json_err("put needs a string value")
                if not key:
                    return _json_err(ERR_EMPTY_KEY)
                self._fast_put(key, v.encode())
                return b'{"ok":true,"value":null}'
            if op == "delete":
                n = self._delete_range({"key": key})["deleted"]
                return b'{"ok":true,"value":true}' if n else b'{"ok":true,"value":false}'
            if op == "cas":
                exp, new = body.get("expected"), body.get("new")
                if not (exp is None or isinstance(exp, str)) or not isinstance(new, str):
                    return _json_err("cas needs expected (string or null) and new (string)")
                cur = self._live(key)
                if (cur.value.decode("utf-8", "replace") if cur else None) != exp:
                    return b'{"ok":true,"value":false}'
                self._put({"key": key, "value": new.encode()})
                return b'{"ok":true,"value":true}'
            if op == "get":
                return self._legacy_get(key)
            return _json_err(f"unknown op {op!r}")
        finally:
            self._writing = False

    def _legacy_get(self, key: bytes) -> bytes:
        v = self._live(key)
        value = v.value.decode("utf-8", "replace") if v else None
        return json.dumps({"ok": True, "value": value}, separators=(",", ":")).encode()

    def _legacy_query(self, payload: bytes) -> bytes:
        body = KVStore._parse(payload)
        if isinstance(body, str):
            return _json_err(body)
        if body.get("op") == "alarms":
            return json.dumps({"ok": True, "value": sorted(self.alarms)}).encode()
        if body.get("op") != "get":
            return _json_err("only get and alarms are reads")
        return self._legacy_get(str(body["key"]).encode())

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """Everything (history above the compaction revision, leases, alarms),
        deterministic: the same state gives the same bytes."""
        state = {
            "v": 1,
            "rev": self.rev,
            "compact": self.compact_rev,
            "retain": self.retain,
            "keys": [
                [k, [[v.mod, v.sub, v.create, v.version, v.value, v.lease] for v in self.hist[k]]]
                for k in self.keys
            ],
            "leases": [[ls.id, ls.ttl] for ls in sorted(self.leases.values(), key=lambda x: x.id)],
            "alarms": sorted(self.alarms),
        }
        return TAG + bytes(msgpack.packb(state, use_bin_type=True))

    def restore(self, data: bytes) -> None:
        self.__init__()  # type: ignore[misc]
        if not data.startswith(TAG):
            # A KV store's snapshot (a node upgraded from before issue 13):
            # its keys become the first revision's.
            kv = KVStore()
            kv.restore(data)
            self.alarms = set(kv.alarms)
            for k in sorted(kv.data):
                self._writing = False
                self._put({"key": k.encode(), "value": kv.data[k].encode()})
            self._writing = False
            return
        try:
            st = msgpack.unpackb(memoryview(data)[len(TAG) :], raw=False)
            self.rev, self.compact_rev = int(st["rev"]), int(st["compact"])
            self.retain = int(st.get("retain", AUTO_RETAIN))
            prev = None
            for k, versions in st["keys"]:
                if not isinstance(k, bytes) or (prev is not None and k <= prev) or not versions:
                    raise ValueError("keys out of order")
                prev = k
                self.hist[k] = [Version(*row) for row in versions]
            self.keys.update(self.hist)
            self.changes = deque(
                sorted(
                    (v.mod, k) for k, h in self.hist.items() for v in h if v.mod >= self.compact_rev
                )
            )
            self.compactable = {k for k, h in self.hist.items() if len(h) > 1 or not h[0].version}
            for lid, ttl in st["leases"]:
                self.leases[lid] = Lease(lid, ttl)
            self.alarms = set(st["alarms"])
        except Exception as e:
            raise ProtocolError(f"mvcc snapshot: {e}") from None
        self._rebuild_lease_keys()


def txn_writes(req: dict[str, Any]) -> bool:
    """Whether a transaction may write (a put or a delete in either branch)."""
    for branch in ("success", "failure"):
        ops = req.get(branch, [])
        for o in ops if isinstance(ops, list) else []:
            if not isinstance(o, dict):
                continue
            if o.get("op") in ("put", "delete_range") or (o.get("op") == "txn" and txn_writes(o)):
                return True
    return False


def _json_err(msg: str) -> bytes:
    return json.dumps({"ok": False, "error": msg}, separators=(",", ":")).encode()
