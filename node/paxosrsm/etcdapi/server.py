"""etcd's v3 gRPC API on a paxosrsm node (issue 13): ``KV``, ``Maintenance``
(``Status``, ``Alarm`` list), ``Cluster`` (``MemberList``) and ``Auth``
(``Authenticate`` only), served by ``grpcio``'s asyncio server beside the
HTTP API. Every write goes through the Paxos log as an ``MVCCStore`` request
(``paxosrsm.mvcc``), by the node's own client (leader redirection, retries);
a linearizable Range is a ``Kind.READ`` (a read index confirmed by a quorum),
a serializable one is answered from this node's replica at once.

Credentials. With ``--http-auth-file`` the same tokens guard gRPC: a call
carries ``authorization: Bearer <token>``, or etcd's ``token`` metadata that
``Authenticate(name, password)`` returns for a token line's name and token
(so ``etcdctl --user name:token`` works). Roles and prefixes apply to keys
as over HTTP (a range must lie inside the prefix). Without the file the API
is anonymous, which (as HTTP) the node allows only on loopback or with
``--http-anonymous true``.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import hashlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import grpc

from .. import mvcc
from ..client.aio import ClientError, Unavailable, UnknownOutcome
from ..net.backups import SEND_TIMEOUT, BackupBusy, BackupFailed
from ..net.httpauth import Grant, token_digest
from ..storage.backup import iter_chunks
from ..types import Kind
from .pb import auth_pb2 as _auth_pb2
from .pb import kv_pb2 as _kv_pb2
from .pb import rpc_pb2 as _rpc_pb2
from .pb import rpc_pb2_grpc as _rpc_pb2_grpc

# The generated modules make their classes at import: untyped to mypy.
kv_pb2: Any = _kv_pb2
auth_pb2: Any = _auth_pb2
rpc_pb2: Any = _rpc_pb2
rpc_pb2_grpc: Any = _rpc_pb2_grpc

if TYPE_CHECKING:
    from ..net.http import HttpApi
    from ..net.runtime import NodeServer

log = logging.getLogger("paxosrsm.node")
access_log = logging.getLogger("paxosrsm.access")
#: What Maintenance.Status (and the gateway's /version) report as the server
#: version: the etcd API level served, which clients parse as x.y.z and
#: check (etcd3gw picks its paths by it). paxosrsm's own version is in
#: /version's "paxosrsm" field and in /v1/status.
VERSION = "3.4.0"
#: The largest request accepted (etcd's default --max-request-bytes is 1.5 MiB).
MAX_REQUEST = 4 << 20
#: Bytes of a backup per Maintenance.Snapshot message.
SNAPSHOT_CHUNK = 256 << 10
MAX_SESSIONS = 10_000

_CODES = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "OUT_OF_RANGE": grpc.StatusCode.OUT_OF_RANGE,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def member_id(cluster_id: str, node: int) -> int:
    """A stable uint64 member id (etcd's are random uint64s)."""
    d = hashlib.sha256(f"{cluster_id}/{node}".encode()).digest()
    return int.from_bytes(d[:8], "big") or 1


def cluster_uint(cluster_id: str) -> int:
    return int.from_bytes(hashlib.sha256(cluster_id.encode()).digest()[:8], "big") or 1


def kv_msg(d: dict[str, Any]) -> Any:
    return kv_pb2.KeyValue(
        key=d["key"], create_revision=d["create_revision"], mod_revision=d["mod_revision"],
        version=d["version"], value=d["value"], lease=d["lease"],
    )  # fmt: skip


# ---------------------------------------------------------------- requests as maps


def range_req(r: Any) -> dict[str, Any]:
    return {
        "op": "range", "key": r.key, "range_end": r.range_end, "limit": r.limit,
        "revision": r.revision, "sort_order": r.sort_order, "sort_target": r.sort_target,
        "keys_only": r.keys_only, "count_only": r.count_only,
        "min_mod_revision": r.min_mod_revision, "max_mod_revision": r.max_mod_revision,
        "min_create_revision": r.min_create_revision,
        "max_create_revision": r.max_create_revision,
    }  # fmt: skip


def put_req(r: Any) -> dict[str, Any]:
    return {
        "op": "put", "key": r.key, "value": r.value, "lease": r.lease, "prev_kv": r.prev_kv,
        "ignore_value": r.ignore_value, "ignore_lease": r.ignore_lease,
    }  # fmt: skip


def delete_req(r: Any) -> dict[str, Any]:
    return {"op": "delete_range", "key": r.key, "range_end": r.range_end, "prev_kv": r.prev_kv}


def compare_map(c: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"key": c.key, "range_end": c.range_end, "result": c.result,
                           "target": c.target}  # fmt: skip
    which = c.WhichOneof("target_union")
    if which is not None:
        out[which] = getattr(c, which)
    return out


def txn_req(t: Any) -> dict[str, Any]:
    def op(o: Any) -> dict[str, Any]:
        which = o.WhichOneof("request")
        if which == "request_range":
            return range_req(o.request_range)
        if which == "request_put":
            return put_req(o.request_put)
        if which == "request_delete_range":
            return delete_req(o.request_delete_range)
        if which == "request_txn":
            return txn_req(o.request_txn)
        return {"op": "none"}

    return {
        "op": "txn",
        "compare": [compare_map(c) for c in t.compare],
        "success": [op(o) for o in t.success],
        "failure": [op(o) for o in t.failure],
    }


def keys_of(req: dict[str, Any]) -> list[tuple[bytes, bytes, bool]]:
    """Every (key, range_end, write) a request touches, for authorisation."""
    op = req.get("op")
    if op == "txn":
        out = [(c["key"], c.get("range_end", b""), False) for c in req["compare"]]
        for branch in ("success", "failure"):
            for o in req[branch]:
                out += keys_of(o)
        return out
    if op in ("range", "put", "delete_range"):
        return [(req["key"], req.get("range_end", b""), op != "range")]
    return []


class EtcdApi:
    """The servicers, sharing the HTTP API's client and tokens."""

    def __init__(self, server: NodeServer, http: HttpApi) -> None:
        self.s = server
        self.http = http
        self.client = http.client
        o = server.opts
        self.cluster_id = cluster_uint(o.cluster_id)
        self.member = member_id(o.cluster_id, server.id)
        #: etcd "token" metadata handed out by Authenticate -> token digest.
        self.sessions: dict[str, bytes] = {}
        self.grpc: grpc.aio.Server | None = None
        self.hub = WatchHub(self)
        self.expiry: asyncio.Task[None] | None = None
        self._term = 0
        self._term_at = -1.0

    # ------------------------------------------------------------ plumbing

    def header(self, revision: int) -> Any:
        now = time.monotonic()
        if now - self._term_at > 0.01:  # a status snapshot costs; the term rarely moves
            st = self.s.node.status() if self.s.node is not None else None
            # etcd's raft term: the ballot round this node leads with, or the
            # highest it promised (an acceptor's), as a term a follower knows.
            b = None if st is None else (st.ballot or st.promised)
            self._term = b.round if b is not None else 0
            self._term_at = now
        term = self._term
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id, member_id=self.member, revision=revision, raft_term=term
        )

    def who(
        self, context: grpc.aio.ServicerContext, req: dict[str, Any],
        lease_write: bool | None = None,
    ) -> str:  # fmt: skip
        """The caller's name; aborts with UNAUTHENTICATED / PERMISSION_DENIED.
        ``lease_write``: a lease call (no key): a grant or revoke needs a role
        that writes, a keepalive or a lookup any role."""
        grant = self.caller(context)
        if grant is None:
            return "anonymous"
        if lease_write and grant.role == "read":
            self.s._bad("grpc_forbidden", f"gRPC {context.peer()}: {grant.name} on leases")
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
        for key, end, write in keys_of(req):
            k = key.decode("utf-8", "replace")
            ok = grant.allows(k, write)
            if ok and end and grant.prefix:
                # A range must lie inside the prefix: [key, end) within it.
                e = end.decode("utf-8", "replace")
                ok = end != b"\0" and e <= _prefix_end(grant.prefix)
            if not ok:
                self.s._bad("grpc_forbidden", f"gRPC {context.peer()}: {grant.name} on {k!r}")
                raise _Abort(grpc.StatusCode.PERMISSION_DENIED,
                             "etcdserver: permission denied")  # fmt: skip
        return grant.name

    def caller(self, context: grpc.aio.ServicerContext) -> Grant | None:
        """The caller's grant (None: no tokens file, anonymous access);
        aborts with UNAUTHENTICATED without a valid token."""
        auth = self.http.auth
        auth.maybe_reload()
        if auth.grants is None:
            return None
        md = dict(context.invocation_metadata() or ())
        digest = None
        h = md.get("authorization", "")
        if isinstance(h, str) and h.lower().startswith("bearer "):
            digest = token_digest(h[7:].strip())
        elif isinstance(md.get("token"), str):
            digest = self.sessions.get(md["token"])
            if digest is None:
                # Another node's (tokens live in the node that gave them, as
                # etcd's simple tokens do) or an old one: clients authenticate
                # again on this error.
                self.s._bad("grpc_unauthenticated", f"gRPC {context.peer()}: unknown token")
                raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
        grant = auth.grants.get(digest) if digest is not None else None
        if grant is None:
            self.s._bad("grpc_unauthenticated", f"gRPC {context.peer()}: no valid token")
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: user name is empty")
        return grant

    async def call(
        self, context: grpc.aio.ServicerContext, req: dict[str, Any], write: bool,
        serializable: bool = False, lease: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        t0 = time.perf_counter()
        try:
            return await self._call(context, req, write, serializable, lease)
        finally:
            op = str(req.get("op", "?"))
            if serializable:
                op += "_serializable"
            self.s.metrics.observe_request("grpc", op, time.perf_counter() - t0)

    async def _call(
        self, context: grpc.aio.ServicerContext, req: dict[str, Any], write: bool,
        serializable: bool, lease: bool,
    ) -> dict[str, Any]:  # fmt: skip
        name = self.who(context, req, lease_write=write if lease else None)
        payload = mvcc.encode(req)
        if len(payload) > MAX_REQUEST:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
        try:
            if serializable:
                node = self.s.node
                raw = node.read_local(payload) if node is not None else None
                if raw is None:
                    raise _Abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no replica here")
            else:
                kind = Kind.WRITE if write else Kind.READ
                raw = await self.client.request(kind, payload)
        except UnknownOutcome as e:
            raise _Abort(grpc.StatusCode.UNAVAILABLE,
                         f"etcdserver: request timed out ({e})") from e  # fmt: skip
        except (Unavailable, ClientError) as e:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, f"etcdserver: no leader ({e})") from e
        out = mvcc.decode_result(raw)
        if write:
            verdict = "ok" if out.get("ok") else out.get("error")
            access_log.info("node %s: grpc %s %s %s -> %s", self.s.id, context.peer(), name,
                            _describe(req), verdict)  # fmt: skip
        if not out.get("ok"):
            code = _CODES.get(str(out.get("code")), grpc.StatusCode.INVALID_ARGUMENT)
            raise _Abort(code, str(out.get("error")))
        return out

    # ------------------------------------------------------------ KV

    def range_resp(self, out: dict[str, Any]) -> Any:
        return rpc_pb2.RangeResponse(
            header=self.header(out["revision"]),
            kvs=[kv_msg(k) for k in out["kvs"]],
            more=out["more"],
            count=out["count"],
        )

    def put_resp(self, out: dict[str, Any]) -> Any:
        r = rpc_pb2.PutResponse(header=self.header(out["revision"]))
        if "prev_kv" in out:
            r.prev_kv.CopyFrom(kv_msg(out["prev_kv"]))
        return r

    def delete_resp(self, out: dict[str, Any]) -> Any:
        return rpc_pb2.DeleteRangeResponse(
            header=self.header(out["revision"]),
            deleted=out["deleted"],
            prev_kvs=[kv_msg(k) for k in out.get("prev_kvs", [])],
        )

    def txn_resp(self, out: dict[str, Any]) -> Any:
        resps = []
        for r in out["responses"]:
            op = r["op"]
            if op == "range":
                resps.append(rpc_pb2.ResponseOp(response_range=self.range_resp(r)))
            elif op == "put":
                resps.append(rpc_pb2.ResponseOp(response_put=self.put_resp(r)))
            elif op == "delete_range":
                resps.append(rpc_pb2.ResponseOp(response_delete_range=self.delete_resp(r)))
            else:
                resps.append(rpc_pb2.ResponseOp(response_txn=self.txn_resp(r)))
        return rpc_pb2.TxnResponse(
            header=self.header(out["revision"]), succeeded=out["succeeded"], responses=resps
        )

    # ------------------------------------------------------------ serving

    async def start(self, host: str, port: int) -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST + 4096),
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_concurrent_streams", 1000),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.max_connection_idle_ms", 600_000),
            ],
            maximum_concurrent_rpcs=10_000,
        )
        rpc_pb2_grpc.add_KVServicer_to_server(_KV(self), server)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(_Maintenance(self), server)
        rpc_pb2_grpc.add_ClusterServicer_to_server(_Cluster(self), server)
        rpc_pb2_grpc.add_AuthServicer_to_server(_Auth(self), server)
        rpc_pb2_grpc.add_WatchServicer_to_server(_Watch(self), server)
        rpc_pb2_grpc.add_LeaseServicer_to_server(_Lease(self), server)
        bound = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        self.grpc = server
        log.info("node %d: etcd v3 gRPC API on %s:%d", self.s.id, host, bound)
        return int(bound)

    def start_background(self) -> None:
        """The lease expiry loop (gRPC or the JSON gateway alike)."""
        if self.expiry is None:
            self.expiry = asyncio.get_running_loop().create_task(self._expire_leases())

    async def _expire_leases(self) -> None:
        """On the leader: revoke, through the log, the leases its clock says
        expired (each a write its own precheck confirms). On becoming leader,
        every deadline starts over (etcd extends leases at a failover)."""
        was_leader = False
        while True:
            await asyncio.sleep(LEASE_CHECK_EVERY)
            node = self.s.node
            st = node.status() if node is not None else None
            leader = st is not None and st.proposer_state == "leader"
            try:
                if leader and not was_leader:
                    self.hub.local({"op": "lease_reset"})
                was_leader = leader
                if not leader:
                    continue
                expired = self.hub.local({"op": "lease_expired"}).get("expired", [])
            except _Abort:
                continue
            for lid in expired:
                req = mvcc.encode({"op": "lease_revoke", "id": lid, "expire": True})
                try:
                    out = mvcc.decode_result(await self.client.request(Kind.WRITE, req))
                except (ClientError, ValueError):
                    break  # no quorum now: the next round tries again
                if out.get("ok"):
                    log.info("node %d: lease %x expired and revoked", self.s.id, lid)
                    self.s.stats["leases_expired"] += 1

    async def stop(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.expiry
        await self.hub.stop()
        if self.grpc is not None:
            await self.grpc.stop(1.0)


#: Watches one stream may hold; responses one stream may have queued (a slow
#: reader blocks its own watchers, which fall behind and, past the
#: compaction, are cancelled with etcd's "compacted" error: nothing is
#: buffered without bound).
MAX_WATCHES_PER_STREAM = 1_000
STREAM_QUEUE = 64
#: Bytes of responses one stream may have waiting, and the most event bytes
#: one response carries (a revision's events stay in one response).
STREAM_BYTES = 1 << 20
RESPONSE_BYTES = 256 << 10
#: A stream whose reader takes nothing for this long, with its queue full,
#: is a slow watcher: cancelled (RESOURCE_EXHAUSTED), as etcd cancels them.
SLOW_AFTER = 10.0


class SlowWatcher(Exception):
    pass


class Outbox:
    """One watch stream's responses waiting to be sent: bounded in count and
    in bytes; a producer waits for room, and gives up (``SlowWatcher``, the
    stream is cancelled) when the reader has taken nothing for ``SLOW_AFTER``.

    Many watches share a stream: producers wait in line (first come, first
    served), a take wakes only as many of them as there are free places, and
    the reader waits on an event of its own, so no response costs a pass over
    every watch. (Single-threaded: between a room check and the queueing
    there is no ``await``.)"""

    def __init__(self, on_slow: Any = None) -> None:
        self.items: collections.deque[tuple[Any, int]] = collections.deque()
        self.bytes = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.nonempty = asyncio.Event()  # the reader waiting for a response
        self.closed = False
        self.taken = 0.0  # loop time of the reader's last take
        #: Called once when the stream is found slow (and so cancelled).
        self.on_slow = on_slow

    def _wake(self, n: int) -> None:
        while n > 0 and self.waiters:
            f = self.waiters.popleft()
            if not f.done():
                f.set_result(None)
                n -= 1

    def _wake_all(self) -> None:
        self._wake(len(self.waiters))
        self.nonempty.set()

    def _slow(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_slow is not None:
                self.on_slow()
        self._wake_all()

    async def _wait_room(self, size: int) -> None:
        """Until there is room for ``size`` bytes, or the reader has taken
        nothing for ``SLOW_AFTER`` (then the stream is slow). The clock is
        the reader's last take, not this producer's wait: many watches share
        a stream's room, and one may wait long while the reader keeps up."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not self._room(size):
            left = max(self.taken, start) + SLOW_AFTER - loop.time()
            if left <= 0:
                self._slow()
                return
            f: asyncio.Future[None] = loop.create_future()
            self.waiters.append(f)
            try:
                await asyncio.wait_for(f, left)
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                if f.done() and not f.cancelled():
                    self._wake(1)  # woken, then cancelled: pass the turn on
                raise

    def _room(self, size: int) -> bool:
        return (
            self.closed
            or not self.items
            or (len(self.items) < STREAM_QUEUE and self.bytes + size <= STREAM_BYTES)
        )

    def _push(self, resp: Any, size: int) -> None:
        self.items.append((resp, size))
        self.bytes += size
        self.nonempty.set()

    def _pass_on(self) -> None:
        # Room left after this producer: let the next waiting one try.
        if self._room(RESPONSE_BYTES):
            self._wake(1)

    async def put(self, resp: Any) -> None:
        size = resp.ByteSize() if resp is not None else 0
        await self._wait_room(size)
        if self.closed:
            raise SlowWatcher(f"no response taken for {SLOW_AFTER:g} s with the queue full")
        self._push(resp, size)
        self._pass_on()

    async def produce(self, make: Any) -> None:
        """Once there is room for a response, ``make()`` (synchronous) the
        responses and queue them: a stream holds at most its bound plus one
        ``make``'s worth (``RESPONSE_BYTES`` of events, a revision whole)."""
        await self._wait_room(RESPONSE_BYTES)
        if self.closed:
            raise SlowWatcher(f"no response taken for {SLOW_AFTER:g} s with the queue full")
        for resp in make():
            self._push(resp, resp.ByteSize())
        self._pass_on()

    async def get(self) -> Any:
        while not self.items and not self.closed:
            self.nonempty.clear()
            await self.nonempty.wait()
        if not self.items:
            raise SlowWatcher("cancelled")
        resp, size = self.items.popleft()
        self.bytes -= size
        self.taken = asyncio.get_running_loop().time()
        self._wake(max(1, STREAM_QUEUE - len(self.items)))
        return resp

    async def close(self) -> None:
        self.closed = True
        self._wake_all()


#: Distinct event reads the watch hub keeps for one revision.
EVENTS_CACHE = 1024
#: The watch hub's ring of recent events (each event's messages made once
#: for every watch): at most this many events, or about this many bytes.
RING_EVENTS = 50_000
RING_BYTES = 64 << 20
#: How often the watch hub polls the replica's revision while watches wait
#: (a fallback: the node wakes it on every apply; 5 times slower with none).
HUB_POLL = 0.01
#: How often the leader looks for expired leases.
LEASE_CHECK_EVERY = 0.5
#: A watch with progress_notify gets an empty response after this long
#: without events (etcd: 10 minutes).
PROGRESS_EVERY = 600.0


#: What the hub answers a watch's read: ``got`` (ok, error, next, revision),
#: the events' types and their messages.
_Events = tuple[dict[str, Any], list[int], list[Any]]


class WatchHub:
    """Wakes the watches when this node's replica applies a new revision: the
    node calls ``poke`` after each cycle that applied commands (a poll every
    10 ms while watches wait is the fallback), one cheap query for all
    watches; and keeps the ring of recent events they read from."""

    def __init__(self, api: EtcdApi) -> None:
        self.api = api
        self.rev = 0
        self.waiting = 0  # watches waiting for a revision
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._cache: dict[
            tuple[int, bytes, bytes, bool], tuple[dict[str, Any], list[int], list[Any]]
        ] = {}
        self._cache_rev = -1
        self._woken = 0
        self._poked = False
        self.compact_rev = 0
        self.ring_revs: list[int] = []
        self.ring_keys: list[bytes] = []
        self.ring_types: list[int] = []
        self.ring_sizes: list[int] = []
        self.ring_msgs: list[Any] = []
        self.ring_prev: list[Any] = []
        self.ring_bytes = 0
        self.ring_first = 0  # the ring holds every event of revisions from here
        self.ring_next = 0  # ... up to here (exclusive); 0: no ring yet

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def events(self, start: int, key: bytes, range_end: bytes, prev_kv: bool) -> _Events:
        """The events from ``start`` on a key or range (whole revisions, at
        most about 1,000 events or ``RESPONSE_BYTES``): their types and
        messages, and ``got`` (``ok``, ``error``, ``next``, ``revision``).
        From the hub's ring of recent events when it holds ``start`` (every
        event's message made once for all watches), else read from the
        replica, once for every watch that asks the same at this revision."""
        ring = self._from_ring(start, key, range_end, prev_kv)
        if ring is not None:
            return ring
        if self._cache_rev != self.rev or len(self._cache) >= EVENTS_CACHE:
            self._cache.clear()
            self._cache_rev = self.rev
        k = (start, key, range_end, prev_kv)
        hit = self._cache.get(k)
        if hit is None:
            q = {"op": "events", "start": start, "prev_kv": prev_kv, "limit": 1000,
                 "max_bytes": RESPONSE_BYTES, "key": key, "range_end": range_end}  # fmt: skip
            got = self.local(q)
            evs = got.pop("events", []) if got.get("ok") else []
            hit = self._cache[k] = (got, [e["type"] for e in evs], [event_msg(e) for e in evs])
        return hit

    def _from_ring(self, start: int, key: bytes, end: bytes, prev_kv: bool) -> _Events | None:
        if start < self.ring_first or start < self.compact_rev or not self.ring_next:
            return None
        got = {"ok": True, "revision": self.ring_next - 1, "next": start}
        if start >= self.ring_next:
            # Nothing new, unless the ring is behind the replica (then read).
            return (got, [], []) if self.ring_next > self.rev else None
        revs = self.ring_revs
        i = bisect.bisect_left(revs, start)
        n = len(revs)
        types: list[int] = []
        msgs: list[Any] = []
        size = 0
        last = start - 1
        keys, kinds, sizes = self.ring_keys, self.ring_types, self.ring_sizes
        pick = self.ring_prev if prev_kv else self.ring_msgs
        while i < n:
            rev = revs[i]
            if (len(msgs) >= 1000 or size >= RESPONSE_BYTES) and rev != last:
                break  # at a revision's boundary
            last = rev
            if mvcc.in_range(keys[i], key, end):
                types.append(kinds[i])
                msgs.append(pick[i])
                size += sizes[i]
            i += 1
        got["next"] = self.ring_next if i >= n else last + 1
        return got, types, msgs

    def _fill_ring(self) -> None:
        """Take the replica's new events into the ring (at most a few reads
        per poll); on any gap (a snapshot installed, history compacted under
        it) start the ring afresh from the current revision."""
        for _ in range(4):
            if self.ring_next > self.rev:
                break
            q = {"op": "events", "start": self.ring_next, "prev_kv": True, "limit": 10_000,
                 "max_bytes": 8 << 20, "key": b"\0", "range_end": b"\0"}  # fmt: skip
            got = self.local(q)
            if not got.get("ok"):
                self._reset_ring(self.rev + 1)
                return
            for e in got["events"]:
                prev = event_msg(e)
                self.ring_prev.append(prev)
                if "prev_kv" in e:
                    e = {"type": e["type"], "kv": e["kv"]}
                    self.ring_msgs.append(event_msg(e))
                else:
                    self.ring_msgs.append(prev)
                kv = e["kv"]
                self.ring_revs.append(int(kv["mod_revision"]))
                self.ring_keys.append(kv["key"])
                self.ring_types.append(int(e["type"]))
                size = len(kv["key"]) + len(kv["value"]) + 32
                self.ring_sizes.append(size)
                self.ring_bytes += 2 * size + 200
            self.ring_next = max(self.ring_next, int(got["next"]))
        if len(self.ring_revs) > RING_EVENTS or self.ring_bytes > RING_BYTES:
            revs = self.ring_revs
            cut = bisect.bisect_right(revs, revs[len(revs) // 2])
            for lst in (self.ring_revs, self.ring_keys, self.ring_types, self.ring_sizes,
                        self.ring_msgs, self.ring_prev):  # fmt: skip
                del lst[:cut]
            self.ring_bytes = sum(2 * x + 200 for x in self.ring_sizes)
            self.ring_first = revs[0] if revs else self.ring_next

    def _reset_ring(self, at: int) -> None:
        for lst in (self.ring_revs, self.ring_keys, self.ring_types, self.ring_sizes,
                    self.ring_msgs, self.ring_prev):  # fmt: skip
            lst.clear()
        self.ring_bytes = 0
        self.ring_first = self.ring_next = at

    def local(self, req: dict[str, Any]) -> dict[str, Any]:
        node = self.api.s.node
        raw = node.read_local(mvcc.encode(req)) if node is not None else None
        if raw is None:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no replica on this node")
        return mvcc.decode_result(raw)

    def poke(self) -> None:
        """The node applied commands: look at the revision now (once per
        loop turn), not at the next poll."""
        if not self._poked:
            self._poked = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._poked = False
        try:
            got = self.local({"op": "rev"})
            rev = int(got.get("revision", 0))
            self.compact_rev = int(got.get("compact_revision", 0))
            if not self.ring_next:
                self._reset_ring(rev + 1)
            self.rev = rev
            if self.ring_next <= rev:
                self._fill_ring()
        except _Abort:
            return
        if rev != self._woken:
            self._woken = rev
            ev, self.changed = self.changed, asyncio.Event()
            ev.set()

    async def _run(self) -> None:
        # Woken by the node on every apply (``poke``); the poll is a fallback.
        self.api.s.on_applied.append(self.poke)
        try:
            while True:
                await asyncio.sleep(HUB_POLL if self.waiting else 0.05)
                self._check()
        finally:
            with contextlib.suppress(ValueError):
                self.api.s.on_applied.remove(self.poke)

    async def wait_past(self, rev: int, timeout: float) -> None:
        """Until the replica holds revision ``rev``, or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.waiting += 1
        try:
            while self.rev < rev:
                left = deadline - loop.time()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), left)
        finally:
            self.waiting -= 1


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _prefix_end(prefix: str) -> str:
    """The end of the range of keys that start with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


def _describe(req: dict[str, Any]) -> str:
    op = req.get("op")
    if op == "txn":
        return f"txn ({len(req['success'])}/{len(req['failure'])} ops)"
    if "key" in req:
        end = req.get("range_end") or b""
        return f"{op} key={req['key']!r}" + (f" range_end={end!r}" if end else "")
    return str(op)


async def _guard(context: grpc.aio.ServicerContext, coro: Any) -> Any:
    try:
        return await coro
    except _Abort as e:
        await context.abort(e.code, str(e))


class _KV:
    def __init__(self, api: EtcdApi) -> None:
        self.api = api

    async def Range(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            out = await self.api.call(context, range_req(request), False, request.serializable)
            return self.api.range_resp(out)

        return await _guard(context, go())

    async def Put(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            return self.api.put_resp(await self.api.call(context, put_req(request), True))

        return await _guard(context, go())

    async def DeleteRange(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            return self.api.delete_resp(await self.api.call(context, delete_req(request), True))

        return await _guard(context, go())

    async def Txn(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            req = txn_req(request)
            return self.api.txn_resp(await self.api.call(context, req, mvcc.txn_writes(req)))

        return await _guard(context, go())

    async def Compact(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            out = await self.api.call(context, {"op": "compact", "revision": request.revision},
                                      True)  # fmt: skip
            return rpc_pb2.CompactionResponse(header=self.api.header(out["revision"]))

        return await _guard(context, go())


class _Maintenance:
    def __init__(self, api: EtcdApi) -> None:
        self.api = api

    async def Status(self, request: Any, context: Any) -> Any:
        api = self.api
        node = api.s.node
        raw = node.read_local(mvcc.encode({"op": "status"})) if node is not None else None
        st = mvcc.decode_result(raw) if raw is not None else {"revision": 0}
        ns = node.status() if node is not None else None
        leader = None
        if ns is not None:
            leader = api.s.id if ns.proposer_state == "leader" else ns.leader_hint
        storage = api.s._storage_status()
        return rpc_pb2.StatusResponse(
            header=api.header(int(st.get("revision", 0))),
            version=VERSION,
            dbSize=int(storage.get("used_bytes") or 0),
            dbSizeInUse=int(storage.get("used_bytes") or 0),
            leader=member_id(api.s.opts.cluster_id, leader) if leader is not None else 0,
            raftIndex=int(ns.decided) if ns is not None and ns.decided is not None else 0,
            raftAppliedIndex=int(ns.applied) if ns is not None and ns.applied is not None else 0,
            raftTerm=api.header(0).raft_term,
            isLearner=api.s.id >= api.s.cfg.n_acceptors,
            errors=[f"NOSPACE alarm: members {sorted(api.s.alarms)}"] if api.s.alarms else [],
        )

    async def Snapshot(self, request: Any, context: Any) -> Any:
        """A backup file (storage/backup.py; etcdctl snapshot save writes it
        as it comes) holding every write acknowledged before the call. It
        holds every key: an admin token for every key only."""
        api = self.api
        try:
            grant = api.caller(context)
            if grant is not None and (grant.role != "admin" or grant.prefix):
                api.s._bad("grpc_forbidden", f"gRPC {context.peer()}: {grant.name} snapshot")
                raise _Abort(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
            info, chunks = await api.s.backups.take(api.client)
        except _Abort as e:
            await context.abort(e.code, str(e))
            return
        except BackupBusy as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            return
        except BackupFailed as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcdserver: no backup: {e}")
            return
        try:
            remaining = info.size
            header = api.header(info.revision or 0)
            for c in iter_chunks(chunks, SNAPSHOT_CHUNK):
                remaining -= len(c)
                msg = rpc_pb2.SnapshotResponse(header=header, remaining_bytes=remaining, blob=c)
                # A reader that stops reading is cut, and the node's one
                # backup slot freed (net/backups.py).
                await asyncio.wait_for(context.write(msg), SEND_TIMEOUT)
        except TimeoutError:
            api.s._bad("backup_stalled", f"gRPC {context.peer()}: snapshot not read in time")
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "snapshot transfer stalled")
        finally:
            api.s.backups.release()

    async def Alarm(self, request: Any, context: Any) -> Any:
        api = self.api
        if request.action != rpc_pb2.AlarmRequest.GET:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "alarms are raised and cleared by the nodes' quota")  # fmt: skip
        return rpc_pb2.AlarmResponse(
            header=api.header(0),
            alarms=[
                rpc_pb2.AlarmMember(
                    memberID=member_id(api.s.opts.cluster_id, m), alarm=rpc_pb2.NOSPACE
                )
                for m in sorted(api.s.alarms)
            ],
        )


class _Cluster:
    def __init__(self, api: EtcdApi) -> None:
        self.api = api

    async def MemberList(self, request: Any, context: Any) -> Any:
        api = self.api
        o = api.s.opts
        members = []
        peers = [*o.acceptors, *o.learners]
        for i, (host, port) in enumerate(peers):
            gh, gp = o.grpc_peers[i] if o.grpc_peers else (host, o.grpc_port)
            grpc_url = [f"http://{gh}:{gp}"] if gp else []
            members.append(
                rpc_pb2.Member(
                    ID=member_id(o.cluster_id, i),
                    name=f"node-{i}",
                    peerURLs=[f"udp://{host}:{port}"],
                    clientURLs=grpc_url,
                    isLearner=i >= len(o.acceptors),
                )
            )
        return rpc_pb2.MemberListResponse(header=api.header(0), members=members)


class _Auth:
    def __init__(self, api: EtcdApi) -> None:
        self.api = api

    async def Authenticate(self, request: Any, context: Any) -> Any:
        api = self.api
        auth = api.http.auth
        auth.maybe_reload()
        if auth.grants is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "etcdserver: authentication is not enabled")  # fmt: skip
        digest = token_digest(request.password)
        grant = auth.grants.get(digest) if auth.grants is not None else None
        if grant is None or grant.name != request.name:
            api.s._bad("grpc_unauthenticated", f"gRPC {context.peer()}: bad Authenticate")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
            )
        token = secrets.token_urlsafe(24)
        if len(api.sessions) >= MAX_SESSIONS:
            api.sessions.pop(next(iter(api.sessions)))
        api.sessions[token] = digest
        return rpc_pb2.AuthenticateResponse(header=api.header(0), token=token)

    # etcd's users and roles, read from the tokens file: a user is a
    # token's name, its role is named after the token's role and key prefix
    # ("readwrite:billing/"; "admin" with every key is etcd's "root"), and a
    # role's one permission is the prefix's key range (READ for "read",
    # READWRITE otherwise). Reading them takes an admin token, as etcd's
    # takes root. Changing them is refused: the tokens file is the authority.

    def _grants(self) -> list[Grant]:
        g = self.api.http.auth.grants
        return sorted(g.values(), key=lambda x: (x.name, x.role, x.prefix)) if g else []

    @staticmethod
    def role_name(g: Grant) -> str:
        if g.role == "admin" and not g.prefix:
            return "root"
        return g.role if not g.prefix else f"{g.role}:{g.prefix}"

    def _admin(self, context: Any) -> None:
        grant = self.api.caller(context)
        if grant is not None and grant.role != "admin":
            self.api.s._bad("grpc_forbidden", f"gRPC {context.peer()}: {grant.name} on auth")
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")

    async def AuthStatus(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            self.api.caller(context)
            enabled = self.api.http.auth.grants is not None
            return rpc_pb2.AuthStatusResponse(header=self.api.header(0), enabled=enabled)

        return await _guard(context, go())

    async def UserList(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            self._admin(context)
            users = sorted({g.name for g in self._grants()})
            return rpc_pb2.AuthUserListResponse(header=self.api.header(0), users=users)

        return await _guard(context, go())

    async def UserGet(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            self._admin(context)
            roles = sorted({self.role_name(g) for g in self._grants() if g.name == request.name})
            if not roles:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                             "etcdserver: user name not found")  # fmt: skip
            return rpc_pb2.AuthUserGetResponse(header=self.api.header(0), roles=roles)

        return await _guard(context, go())

    async def RoleList(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            self._admin(context)
            roles = sorted({self.role_name(g) for g in self._grants()})
            return rpc_pb2.AuthRoleListResponse(header=self.api.header(0), roles=roles)

        return await _guard(context, go())

    async def RoleGet(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            self._admin(context)
            match = [g for g in self._grants() if self.role_name(g) == request.role]
            if not match:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                             "etcdserver: role name not found")  # fmt: skip
            g = match[0]
            kind = auth_pb2.Permission.READ if g.role == "read" else auth_pb2.Permission.READWRITE
            if g.prefix:
                key = g.prefix.encode()
                end = _prefix_end(g.prefix).encode()
            else:
                key, end = b"\0", b"\0"  # every key
            perm = auth_pb2.Permission(permType=kind, key=key, range_end=end)
            return rpc_pb2.AuthRoleGetResponse(header=self.api.header(0), perm=[perm])

        return await _guard(context, go())

    async def _refuse(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            self._admin(context)
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "etcdserver: paxosrsm's users and roles come from its tokens file "
                "(--http-auth-file; in Kubernetes the <cluster>-http-auth Secret): edit it there",
            )

        return await _guard(context, go())

    AuthEnable = AuthDisable = UserAdd = UserDelete = UserChangePassword = _refuse
    UserGrantRole = UserRevokeRole = RoleAdd = RoleDelete = _refuse
    RoleGrantPermission = RoleRevokePermission = _refuse


def event_msg(e: dict[str, Any]) -> Any:
    ev = kv_pb2.Event(type=e["type"], kv=kv_msg(e["kv"]))
    if "prev_kv" in e:
        ev.prev_kv.CopyFrom(kv_msg(e["prev_kv"]))
    return ev


async def _quiet(coro: Any) -> None:
    """A watch task: ends quietly when its stream was cancelled as slow."""
    with contextlib.suppress(SlowWatcher):
        await coro


class _Watch:
    """etcd's Watch: one bidirectional stream carries many watches. Events
    come from this node's replica (any node serves watches, learners too),
    in revision order, from the watch's start revision on: none lost or
    repeated across a reconnect that resumes from the last revision seen."""

    def __init__(self, api: EtcdApi) -> None:
        self.api = api

    async def Watch(self, request_iterator: Any, context: Any) -> Any:
        api = self.api
        api.hub.start()

        def slow() -> None:
            # The watches stop; the reader gets RESOURCE_EXHAUSTED after
            # what is queued (a reader that never reads holds only that).
            api.s._bad("grpc_slow_watcher", f"gRPC {context.peer()}: watch stream cancelled")

        out = Outbox(slow)
        watches: dict[int, asyncio.Task[None]] = {}
        next_id = 0

        async def watch(wid: int, c: Any, start: int) -> None:
            no_put = rpc_pb2.WatchCreateRequest.NOPUT in c.filters
            no_del = rpc_pb2.WatchCreateRequest.NODELETE in c.filters
            quiet_since = asyncio.get_running_loop().time()
            state = {"start": start, "quiet": quiet_since, "done": False, "retry": False}

            def step() -> list[Any]:
                """Read the next events from the replica and make their
                responses (synchronous: run with room in the outbox, so a
                blocked watch holds no events; it reads them again later)."""
                try:
                    got, kinds, msgs = api.hub.events(
                        int(state["start"]), c.key, c.range_end, c.prev_kv
                    )
                except _Abort:
                    state["retry"] = True
                    return []
                if not got.get("ok"):
                    compact = int(api.hub.local({"op": "rev"}).get("compact_revision", 0))
                    state["done"] = True
                    return [rpc_pb2.WatchResponse(
                        header=api.header(api.hub.rev), watch_id=wid, canceled=True,
                        compact_revision=compact, cancel_reason=str(got.get("error")),
                    )]  # fmt: skip
                evs = [
                    m for t, m in zip(kinds, msgs, strict=True)
                    if not (no_put and t == 0) and not (no_del and t == 1)
                ]  # fmt: skip
                state["start"] = int(got["next"])
                now = asyncio.get_running_loop().time()
                head = api.header(int(got["revision"]))
                if evs:
                    state["quiet"] = now
                    return [rpc_pb2.WatchResponse(header=head, watch_id=wid, events=evs)]
                if c.progress_notify and now - state["quiet"] >= PROGRESS_EVERY:
                    state["quiet"] = now
                    return [rpc_pb2.WatchResponse(header=head, watch_id=wid)]
                return []

            while not state["done"]:
                await api.hub.wait_past(int(state["start"]), PROGRESS_EVERY)
                await out.produce(step)
                if state["retry"]:
                    state["retry"] = False
                    await asyncio.sleep(0.1)

        async def read() -> None:
            nonlocal next_id
            async for r in request_iterator:
                which = r.WhichOneof("request_union")
                if which == "create_request":
                    c = r.create_request
                    try:
                        api.who(context, {"op": "range", "key": c.key, "range_end": c.range_end})
                    except _Abort as e:
                        await out.put(rpc_pb2.WatchResponse(
                            header=api.header(api.hub.rev), watch_id=-1, created=True,
                            canceled=True, cancel_reason=str(e),
                        ))  # fmt: skip
                        continue
                    if len(watches) >= MAX_WATCHES_PER_STREAM:
                        api.s._bad("grpc_too_many_watches", f"gRPC {context.peer()}")
                        await out.put(rpc_pb2.WatchResponse(
                            header=api.header(api.hub.rev), watch_id=-1, created=True,
                            canceled=True, cancel_reason="too many watches on one stream",
                        ))  # fmt: skip
                        continue
                    wid = c.watch_id if c.watch_id else next_id
                    next_id = max(next_id, wid) + 1
                    # "From now": after the revision this replica holds as
                    # the watch is created (before its "created" answer).
                    start = c.start_revision or api.hub.rev + 1
                    if not c.start_revision:
                        with contextlib.suppress(_Abort):
                            start = int(api.hub.local({"op": "rev"})["revision"]) + 1
                    await out.put(rpc_pb2.WatchResponse(
                        header=api.header(api.hub.rev), watch_id=wid, created=True
                    ))  # fmt: skip
                    watches[wid] = asyncio.get_running_loop().create_task(
                        _quiet(watch(wid, c, start))
                    )
                elif which == "cancel_request":
                    wid = r.cancel_request.watch_id
                    t = watches.pop(wid, None)
                    if t is not None:
                        t.cancel()
                    await out.put(rpc_pb2.WatchResponse(
                        header=api.header(api.hub.rev), watch_id=wid, canceled=True
                    ))  # fmt: skip
                elif which == "progress_request":
                    await out.put(rpc_pb2.WatchResponse(
                        header=api.header(api.hub.rev), watch_id=-1
                    ))  # fmt: skip
            await out.put(None)  # the client closed its side

        reader = asyncio.get_running_loop().create_task(_quiet(read()))
        try:
            while True:
                try:
                    resp = await out.get()
                except SlowWatcher:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "etcdserver: slow watcher: responses not read in time",
                    )
                    return
                if resp is None:
                    return
                yield resp
        finally:
            out.closed = True  # (no await in a finally of a cancelled generator)
            out.nonempty.set()
            reader.cancel()
            for t in watches.values():
                t.cancel()


class _Lease:
    """etcd's Lease. Grants and revocations go through the log; a keepalive
    is a read at the leader (a quorum round, no log write) that moves the
    lease's deadline there; expiry is the leader's (``_expire_leases``)."""

    def __init__(self, api: EtcdApi) -> None:
        self.api = api

    async def LeaseGrant(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            lid = request.ID or secrets.randbits(62) + 1
            req = {"op": "lease_grant", "id": lid, "ttl": request.TTL}
            out = await self.api.call(context, req, True, lease=True)
            return rpc_pb2.LeaseGrantResponse(
                header=self.api.header(out["revision"]), ID=out["id"], TTL=out["ttl"]
            )

        return await _guard(context, go())

    async def LeaseRevoke(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            req = {"op": "lease_revoke", "id": request.ID}
            out = await self.api.call(context, req, True, lease=True)
            return rpc_pb2.LeaseRevokeResponse(header=self.api.header(out["revision"]))

        return await _guard(context, go())

    async def LeaseTimeToLive(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            try:
                out = await self.api.call(context, {"op": "lease", "id": request.ID}, False,
                                          lease=True)  # fmt: skip
            except _Abort as e:
                if e.code != grpc.StatusCode.NOT_FOUND:
                    raise
                # etcd answers an unknown (expired) lease with TTL -1.
                return rpc_pb2.LeaseTimeToLiveResponse(
                    header=self.api.header(self.api.hub.rev), ID=request.ID, TTL=-1
                )
            return rpc_pb2.LeaseTimeToLiveResponse(
                header=self.api.header(out["revision"]), ID=out["id"], TTL=out["remaining"],
                grantedTTL=out["ttl"], keys=out["keys"] if request.keys else [],
            )  # fmt: skip

        return await _guard(context, go())

    async def LeaseLeases(self, request: Any, context: Any) -> Any:
        async def go() -> Any:
            out = await self.api.call(context, {"op": "leases"}, False, lease=True)
            return rpc_pb2.LeaseLeasesResponse(
                header=self.api.header(out["revision"]),
                leases=[rpc_pb2.LeaseStatus(ID=i) for i in out["leases"]],
            )

        return await _guard(context, go())

    async def LeaseKeepAlive(self, request_iterator: Any, context: Any) -> Any:
        async for r in request_iterator:
            try:
                out = await self.api.call(context, {"op": "lease_keepalive", "id": r.ID}, False,
                                          lease=True)  # fmt: skip
                ttl = int(out["ttl"])
                rev = int(out["revision"])
            except _Abort as e:
                if e.code != grpc.StatusCode.NOT_FOUND:
                    await context.abort(e.code, str(e))
                ttl, rev = 0, self.api.hub.rev  # etcd: TTL 0 for an unknown lease
            yield rpc_pb2.LeaseKeepAliveResponse(header=self.api.header(rev), ID=r.ID, TTL=ttl)
