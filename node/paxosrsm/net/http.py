"""The HTTP API of a node (aiohttp), its live status page, health and metrics.

    GET    /v1/kv/{key}[?stale=true]   linearizable read (read index) unless stale
    PUT    /v1/kv/{key}                body = the value (UTF-8 text)
    DELETE /v1/kv/{key}
    POST   /v1/cas/{key}               {"expected": str|null, "new": str}: 200, or 409 if unswapped
    GET    /v1/status[?cluster=true]   this node (or every node) as JSON
    GET    /healthz  /readyz  /metrics  /

Writes and linearizable reads go through the same client library users have,
so a non-leader forwards them to the leader (following NOT_LEADER hints).
Errors are JSON ``{"error": ...}``: 400 bad input, 404 no such key, 409 CAS
not swapped, 503 no quorum in time (``"outcome": "unknown"`` for a write).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import mvcc
from ..client.aio import AsyncClient, ClientError, KVError, Unavailable, UnknownOutcome
from ..client.mvcc import prefix_end
from ..statemachine import NOSPACE, encode_op
from ..storage.backup import iter_chunks
from ..types import Kind
from .backups import SEND_TIMEOUT, BackupBusy, BackupFailed
from .browser import BrowserGuard
from .conn import fd_budget
from .httpauth import Handler, HttpAuth
from .httpguard import GuardedSite, HttpGuard
from .options import LOOPBACK, NodeOptions
from .runtime import NodeServer

MAX_KEY = 1024
MAX_VALUE = 512 * 1024
#: Connection bounds of the HTTP port (issue 12): open connections at most
#: (less if the descriptor budget is smaller), seconds to deliver a request's
#: headers, seconds a keep-alive connection may idle, seconds to send a body.
HTTP_MAX_CONNS = 256
HTTP_HEADER_TIMEOUT = 10.0
HTTP_IDLE_TIMEOUT = 15.0
HTTP_BODY_TIMEOUT = 30.0
STATIC = Path(__file__).parent / "static"


class _RateLimit(logging.Filter):
    """At most one record per 5 s per logger message; the rest are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        k = str(record.msg)[:80]
        if now - self.last.get(k, -1e9) < 5.0:
            self.dropped += 1
            return False
        self.last[k] = now
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            # One line, no traceback: the exception's type and message.
            msg = f"{msg}: {type(e).__module__}.{type(e).__name__}: {str(e)[:200]}"
        if self.dropped:
            msg = f"{msg} (+{self.dropped} similar records suppressed)"
            self.dropped = 0
        record.msg, record.args = msg, None
        record.exc_info = None
        record.exc_text = None
        return True


_HTTP_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    410: web.HTTPGone,
    503: web.HTTPServiceUnavailable,
    507: web.HTTPInsufficientStorage,
}


def _http_error(status: int, msg: str) -> web.HTTPException:
    return _HTTP_ERRORS[status](text=json.dumps({"error": msg}), content_type="application/json")


def _err(status: int, msg: str, **extra: Any) -> web.Response:
    return web.json_response({"error": msg, **extra}, status=status)


class _Collector(Collector):
    def __init__(self, server: NodeServer) -> None:
        from .main import version  # main imports this module

        self.s = server
        self.version = version()

    def collect(self) -> Iterator[Metric]:
        s = self.s
        st = s.status()
        g = GaugeMetricFamily("paxos_slot", "Slots by kind", labels=["kind"])
        g.add_metric(["decided"], st["decided"])
        g.add_metric(["applied"], st["applied"])
        yield g
        yield GaugeMetricFamily(
            "paxos_is_leader", "1 if this node leads", value=int(st["is_leader"])
        )
        yield GaugeMetricFamily("paxos_ready", "1 if ready", value=int(st["ready"]))
        yield GaugeMetricFamily(
            "paxos_recovering", "1 while recovering a lost disk", value=int(st["recovering"])
        )
        lead = st["leader"]
        yield GaugeMetricFamily(
            "paxos_leader_id", "Known leader (-1: none)", value=-1 if lead is None else lead
        )
        c = CounterMetricFamily(
            "paxos_events", "Runtime events and dropped input", labels=["event"]
        )
        for k, v in sorted(s.stats.items()):
            c.add_metric([k], v)
        yield c
        mi = CounterMetricFamily("paxos_messages_in", "Messages received", labels=["type"])
        for k, v in sorted(s.msg_in.items()):
            mi.add_metric([k], v)
        yield mi
        mo = CounterMetricFamily("paxos_messages_out", "Messages sent", labels=["type"])
        for k, v in sorted(s.msg_out.items()):
            mo.add_metric([k], v)
        yield mo
        ro = CounterMetricFamily("paxos_records", "Records made durable", labels=["type"])
        for k, v in sorted(s.rec_out.items()):
            ro.add_metric([k], v)
        yield ro
        yield CounterMetricFamily(
            "paxos_applied_slots", "Slots applied since start", value=s.applied_total
        )
        sto = st["storage"]
        # etcd's names where the meaning is the same (etcd_server_quota_backend_bytes,
        # etcd_mvcc_db_total_size_in_use_in_bytes), under our prefix.
        yield GaugeMetricFamily(
            "paxos_server_quota_backend_bytes", "Storage quota", value=sto["quota_bytes"]
        )
        if sto["used_bytes"] is not None:
            yield GaugeMetricFamily(
                "paxos_db_total_size_in_use_in_bytes", "Bytes the store holds",
                value=sto["used_bytes"],
            )  # fmt: skip
            yield GaugeMetricFamily(
                "paxos_disk_free_bytes", "Free bytes on the data file system",
                value=sto["free_bytes"],
            )  # fmt: skip
        yield GaugeMetricFamily(
            "paxos_alarm_nospace", "Members with a raised NOSPACE alarm (writes refused)",
            value=len(sto["alarms"]),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "paxos_disk_full", "1 while a write is retried after ENOSPC",
            value=int(sto["disk_full"]),
        )  # fmt: skip
        if st["fsync_p50_ms"] is not None:
            yield GaugeMetricFamily("paxos_fsync_p50_seconds", "Median group-commit fsync",
                                    value=st["fsync_p50_ms"] / 1000)  # fmt: skip
        # etcd's server gauges, same meaning (docs/metrics.md).
        ns = s.node.status() if s.node is not None else None
        yield GaugeMetricFamily(
            "paxos_server_has_leader", "1 if this member knows a live leader",
            value=int(lead is not None),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "paxos_server_is_leader", "1 if this member leads", value=int(st["is_leader"])
        )
        yield GaugeMetricFamily(
            "paxos_server_proposals_committed_total", "Highest slot known decided",
            value=st["decided"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "paxos_server_proposals_applied_total", "Highest slot applied", value=st["applied"]
        )
        yield GaugeMetricFamily(
            "paxos_server_proposals_pending",
            "Client commands queued or proposed and not yet decided (on the leader)",
            value=(ns.queued + ns.in_flight) if ns is not None else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "paxos_server_apply_lag_slots",
            "Decided slots this member has not applied yet (catch-up lag)",
            value=st["lag"] or 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "paxos_server_acceptors", "Acceptors in the cluster (fixed for its life)",
            value=s.cfg.n_acceptors,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "paxos_server_backup_last_success_timestamp_seconds",
            "When this member last served a backup (0: never since it started)",
            value=s.backups.last_success,
        )  # fmt: skip
        if sto["used_bytes"] is not None:
            yield GaugeMetricFamily(
                "paxos_mvcc_db_total_size_in_use_in_bytes",
                "Bytes the store holds (what the quota counts)", value=sto["used_bytes"],
            )  # fmt: skip
        if s.storage is not None:
            yield GaugeMetricFamily(
                "paxos_mvcc_db_total_size_in_bytes", "Bytes of the data directory on disk",
                value=s.disk_bytes,
            )  # fmt: skip
        info = GaugeMetricFamily(
            "paxos_server_version", "The running version", labels=["server_version", "cluster_id"]
        )
        info.add_metric([self.version, s.opts.cluster_id], 1)
        yield info


def _own_host_names(o: NodeOptions) -> list[str]:
    """The names a request to this node may carry in its Host header: this
    machine's, the cluster's (every acceptor, learner and HTTP peer host) and
    localhost. A Kubernetes Service name comes in --http-allowed-hosts."""
    names = ["localhost", socket.gethostname(), socket.getfqdn()]
    for host, _port in (*o.acceptors, *o.learners, *o.http_peers):
        names.append(host)
    if o.http_listen not in ("0.0.0.0", "::"):
        names.append(o.http_listen)
    return names


class HttpApi:
    def __init__(self, server: NodeServer) -> None:
        self.s = server
        o = server.opts
        # Its large requests go over TCP: with TLS on, TLS with the node's
        # own certificate (issue 12: a 100 KB PUT failed with 503 under TLS).
        self.client = AsyncClient(
            o.client_addresses(), server.key, timeout=5.0, ssl=server.ssl_client
        )
        server.own_clients.append(self.client)
        # Requests for this very node skip the datagram (the leader's own
        # HTTP and gRPC requests are proposed in-process).
        self.client.attach_local(server.id, server.submit_local)
        server.local_clients.append(self.client)
        self.registry = server.metrics.registry
        self.registry.register(_Collector(server))
        self.runner: web.AppRunner | None = None
        self.session: ClientSession | None = None
        self.guard = HttpGuard(
            self._protocol_factory,
            max_conns=max(16, min(HTTP_MAX_CONNS, fd_budget() // 4)),
            header_timeout=HTTP_HEADER_TIMEOUT,
            on_refuse=server._bad,
        )
        if not o.http_auth_file and o.http_listen not in LOOPBACK:
            logging.getLogger("paxosrsm.node").warning(
                "HTTP API on %s:%d without --http-auth-file (--http-anonymous): anyone who "
                "reaches it can read and write every key",
                o.http_listen,
                o.http_port,
            )
        self.auth = HttpAuth(o.http_auth_file or None, server._bad)
        self.browser = BrowserGuard(
            _own_host_names(o) + o.http_allowed_hosts.split(","),
            o.http_cors_origins.split(","),
            server._bad,
        )
        app = web.Application(
            client_max_size=MAX_VALUE + 4096,
            middlewares=[
                self.guard.middleware,
                self.browser.middleware,
                self.auth.middleware,
                self._timed,
            ],
        )
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/v1/kv", self.kv_list),
                web.get("/v1/watch/{key}", self.watch),
                web.get("/v1/kv/{key}", self.kv_get),
                web.put("/v1/kv/{key}", self.kv_put),
                web.delete("/v1/kv/{key}", self.kv_delete),
                web.post("/v1/cas/{key}", self.kv_cas),
                web.get("/v1/status", self.status),
                web.get("/v1/snapshot", self.snapshot),
                web.get("/v1/history", self.history),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
            ]
        )
        self.app = app

    @web.middleware
    async def _timed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request latency by route (a fixed set of labels), for the key
        operations of /v1 and etcd's gateway; watches are streams, not timed."""
        path = request.path
        if not path.startswith(("/v1/kv", "/v1/cas/", "/v3/")) or "/watch" in path:
            return await handler(request)
        t0 = time.perf_counter()
        try:
            return await handler(request)
        finally:
            route = request.match_info.route.resource
            op = f"{request.method} {route.canonical if route is not None else '?'}"
            self.s.metrics.observe_request("http", op, time.perf_counter() - t0)

    async def start(self) -> None:
        # aiohttp logs each malformed request with a traceback: rate-limit it,
        # so that a client cannot flood the node's log.
        logging.getLogger("aiohttp.server").addFilter(_RateLimit())
        await self.client.connect()
        self.session = ClientSession(timeout=ClientTimeout(total=1.5))
        # At a stop, requests in flight get 2 s (aiohttp's default is 60 s);
        # an idle keep-alive connection is closed after HTTP_IDLE_TIMEOUT
        # (aiohttp's default is an hour).
        self.runner = web.AppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=2.0,
            keepalive_timeout=HTTP_IDLE_TIMEOUT,
        )
        await self.runner.setup()
        o = self.s.opts
        site = GuardedSite(self.runner, self.guard, o.http_listen, o.http_port)
        await site.start()
        self.guard.start()

    def _protocol_factory(self) -> Any:
        assert self.runner is not None and self.runner.server is not None
        return self.runner.server()

    async def stop(self) -> None:
        # The client first: the requests waiting on it answer at once (503,
        # a write's outcome unknown), so the runner has nothing to wait for.
        await self.client.close()
        await self.guard.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------ KV

    async def _body(self, req: web.Request) -> bytes:
        try:
            return await asyncio.wait_for(req.read(), HTTP_BODY_TIMEOUT)
        except TimeoutError:
            self.s._bad("http_body_timeout", f"HTTP {req.remote}: body not sent in time")
            raise web.HTTPRequestTimeout(text="request body not received in time\n") from None

    @staticmethod
    def _key(req: web.Request) -> str:
        key = req.match_info["key"]
        if not key or len(key.encode()) > MAX_KEY:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"key must be 1..{MAX_KEY} bytes"}),
                content_type="application/json",
            )
        return key

    async def _call(self, coro: Any, write: bool) -> Any:
        try:
            return await coro
        except UnknownOutcome as e:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": f"no quorum in time: {e}", "outcome": "unknown"}),
                content_type="application/json",
            ) from e
        except Unavailable as e:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": f"no quorum in time: {e}", "outcome": "not applied"}),
                content_type="application/json",
            ) from e
        except KVError as e:
            if str(e).startswith(NOSPACE):
                # etcd's "mvcc: database space exceeded"; 507 Insufficient Storage.
                raise web.HTTPInsufficientStorage(
                    text=json.dumps({"error": str(e), "outcome": "not applied"}),
                    content_type="application/json",
                ) from e
            raise web.HTTPBadRequest(
                text=json.dumps({"error": str(e)}), content_type="application/json"
            ) from e

    # The MVCC store's answers (issue 13): revisions in every answer, prefix
    # listings, CAS on mod_revision, watches as Server-Sent Events.

    @property
    def mvcc(self) -> bool:
        return not self.s.opts.state_machine

    async def _mvcc(self, req: dict[str, Any], kind: Kind) -> dict[str, Any]:
        try:
            out = mvcc.decode_result(await self.client.request(kind, mvcc.encode(req)))
        except UnknownOutcome as e:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": f"no quorum in time: {e}", "outcome": "unknown"}),
                content_type="application/json",
            ) from e
        except (Unavailable, ClientError) as e:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": f"no quorum in time: {e}", "outcome": "not applied"}),
                content_type="application/json",
            ) from e
        return self._mvcc_ok(out)

    @staticmethod
    def _mvcc_ok(out: dict[str, Any]) -> dict[str, Any]:
        if out.get("ok"):
            return out
        msg = str(out.get("error"))
        status = 507 if "space exceeded" in msg or NOSPACE in msg else 400
        if "compacted" in msg or "future revision" in msg:
            status = 410 if "compacted" in msg else 400
        raise _http_error(status, msg)

    def _local(self, req: dict[str, Any]) -> dict[str, Any]:
        node = self.s.node
        answer = node.read_local(mvcc.encode(req)) if node is not None else None
        if answer is None:
            raise _http_error(503, "this node holds no replica")
        return self._mvcc_ok(mvcc.decode_result(answer))

    @staticmethod
    def _int_query(req: web.Request, name: str, default: int = 0) -> int:
        try:
            v = int(req.query.get(name, default))
        except ValueError:
            raise _http_error(400, f"{name} must be an integer") from None
        if not 0 <= v < 1 << 62:
            raise _http_error(400, f"{name} out of range")
        return v

    @staticmethod
    def _kv_out(kv: dict[str, Any]) -> dict[str, Any]:
        return {
            "key": kv["key"].decode("utf-8", "replace"),
            "value": kv["value"].decode("utf-8", "replace"),
            "create_revision": kv["create_revision"], "mod_revision": kv["mod_revision"],
            "version": kv["version"], "lease": kv["lease"],
        }  # fmt: skip

    async def kv_list(self, req: web.Request) -> web.Response:
        """``GET /v1/kv?prefix=P[&limit=N][&after=K][&rev=R][&stale=true]``: the
        keys under P in order, a page at a time (``next``: pass it as ``after``,
        and ``revision`` as ``rev``, for a consistent listing)."""
        if not self.mvcc:
            return _err(404, "listing needs the MVCC store (not --state-machine)")
        prefix = req.query.get("prefix", "").encode()
        limit = min(self._int_query(req, "limit", 1000) or 1000, 10_000)
        after = req.query.get("after")
        start = after.encode() + b"\0" if after else (prefix or b"\0")
        if prefix and not start.startswith(prefix):
            return _err(400, "after must be a key under the prefix")
        end = prefix_end(prefix) if prefix else b"\0"
        q = {"op": "range", "key": start, "range_end": end, "limit": limit,
             "revision": self._int_query(req, "rev")}  # fmt: skip
        stale = req.query.get("stale", "false").lower() in ("true", "1")
        out = self._local(q) if stale else await self._mvcc(q, Kind.READ)
        kvs = [self._kv_out(k) for k in out["kvs"]]
        body: dict[str, Any] = {"kvs": kvs, "more": out["more"], "revision": out["revision"]}
        if out["more"]:
            body["next"] = kvs[-1]["key"]
        return web.json_response(body)

    async def watch(self, req: web.Request) -> web.StreamResponse:
        """``GET /v1/watch/{key}[?prefix=true][&rev=N][&prev_kv=true]``: Server-Sent
        Events from this node's replica, one per change (``id``: its revision;
        a browser's EventSource resumes after the last one by ``Last-Event-ID``).
        Events of one revision share its id; a resume from an id re-sends none."""
        if not self.mvcc:
            return _err(404, "watch needs the MVCC store (not --state-machine)")
        key = self._key(req).encode()
        prefix = req.query.get("prefix", "false").lower() in ("true", "1")
        end = prefix_end(key) if prefix else b""
        start = self._int_query(req, "rev")
        last = req.headers.get("Last-Event-ID", "")
        if last.isdigit():
            start = int(last) + 1
        if not start:
            start = int(self._local({"op": "rev"})["revision"]) + 1
        first = self._local(
            {"op": "events", "start": start, "key": key, "range_end": end, "limit": 1}
        )  # fmt: skip (checks the start: 410 if compacted)
        del first
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(req)
        prev_kv = req.query.get("prev_kv", "false").lower() in ("true", "1")
        quiet = 0.0
        while True:
            q = {"op": "events", "start": start, "key": key, "range_end": end,
                 "prev_kv": prev_kv, "limit": 1000}  # fmt: skip
            try:
                out = self._local(q)
            except web.HTTPException as e:
                await resp.write(f"event: error\ndata: {e.text}\n\n".encode())
                return resp
            for ev in out["events"]:
                doc = {"type": "PUT" if ev["type"] == 0 else "DELETE",
                       "kv": self._kv_out(ev["kv"])}  # fmt: skip
                if "prev_kv" in ev:
                    doc["prev_kv"] = self._kv_out(ev["prev_kv"])
                rev = ev["kv"]["mod_revision"]
                await resp.write(f"id: {rev}\ndata: {json.dumps(doc)}\n\n".encode())
            start = int(out["next"])
            if out["events"]:
                quiet = 0.0
                continue
            await asyncio.sleep(0.05)
            quiet += 0.05
            if quiet >= 15:  # a comment keeps proxies from closing an idle stream
                quiet = 0.0
                await resp.write(b": keepalive\n\n")

    async def kv_get(self, req: web.Request) -> web.Response:
        key = self._key(req)
        stale = req.query.get("stale", "false").lower()
        if stale not in ("true", "false", "1", "0"):
            return _err(400, "stale must be true or false")
        if self.mvcc:
            q = {"op": "range", "key": key.encode(), "revision": self._int_query(req, "rev")}
            out = self._local(q) if stale in ("true", "1") else await self._mvcc(q, Kind.READ)
            if not out["kvs"]:
                return _err(404, f"no such key: {key}")
            return web.json_response({**self._kv_out(out["kvs"][0]), "key": key,
                                      "revision": out["revision"]})  # fmt: skip
        if stale in ("true", "1"):
            node = self.s.node
            answer = node.read_local(encode_op("get", key)) if node is not None else None
            if answer is None:
                return _err(503, "this node holds no replica")
            res = json.loads(answer)
            value = res.get("value")
        else:
            value = await self._call(self.client.get(key), write=False)
        if value is None:
            return _err(404, f"no such key: {key}")
        return web.json_response({"key": key, "value": value})

    async def kv_put(self, req: web.Request) -> web.Response:
        key = self._key(req)
        raw = await self._body(req)
        if len(raw) > MAX_VALUE:
            return _err(400, f"value larger than {MAX_VALUE} bytes")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _err(400, "value must be UTF-8 text")
        if self.mvcc:
            out = await self._mvcc({"op": "put", "key": key.encode(), "value": raw}, Kind.WRITE)
            return web.json_response({"key": key, "ok": True, "revision": out["revision"]})
        await self._call(self.client.put(key, value), write=True)
        return web.json_response({"key": key, "ok": True})

    async def kv_delete(self, req: web.Request) -> web.Response:
        key = self._key(req)
        existed = await self._call(self.client.delete(key), write=True)
        return web.json_response({"key": key, "deleted": bool(existed)})

    async def kv_cas(self, req: web.Request) -> web.Response:
        key = self._key(req)
        raw = await self._body(req)
        if len(raw) > MAX_VALUE * 2:
            return _err(400, "body too large")
        try:
            # Our own decoding: the request's charset is not trusted.
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _err(400, 'body must be JSON: {"expected": string or null, "new": string}')
        if not isinstance(body, dict):
            return _err(400, "body must be a JSON object")
        exp, new = body.get("expected"), body.get("new")
        mod = body.get("mod_revision")
        if mod is not None and self.mvcc:
            # CAS on the key's mod_revision (0: the key must not exist).
            if type(mod) is not int or mod < 0 or not isinstance(new, str):
                return _err(400, "mod_revision must be an integer >= 0, new a string")
            cmp = {"key": key.encode(), "target": mvcc.T_MOD, "result": mvcc.EQUAL,
                   "mod_revision": mod}  # fmt: skip
            put = {"op": "put", "key": key.encode(), "value": new.encode()}
            txn = {"op": "txn", "compare": [cmp], "success": [put], "failure": []}
            out = await self._mvcc(txn, Kind.WRITE)
            if not out["succeeded"]:
                return _err(409, f"compare-and-set failed: {key} is not at mod_revision {mod}")
            return web.json_response({"key": key, "swapped": True, "revision": out["revision"]})
        if not (exp is None or isinstance(exp, str)) or not isinstance(new, str):
            return _err(400, "expected must be a string or null, new a string")
        ok = await self._call(self.client.cas(key, exp, new), write=True)
        if not ok:
            return _err(409, f"compare-and-set failed: {key} did not hold the expected value")
        return web.json_response({"key": key, "swapped": True})

    # ------------------------------------------------------------ status

    async def status(self, req: web.Request) -> web.Response:
        mine = self.s.status()
        if req.query.get("cluster", "false").lower() not in ("true", "1"):
            return web.json_response(mine)
        peers = self.s.opts.http_peers
        nodes: list[dict[str, Any]] = []

        async def fetch(nid: int, host: str, port: int) -> dict[str, Any]:
            if nid == self.s.id:
                return mine
            assert self.session is not None
            try:
                async with self.session.get(f"http://{host}:{port}/v1/status") as r:
                    d: dict[str, Any] = await r.json()
                    return d
            except (TimeoutError, OSError, ValueError) as e:
                return {"node_id": nid, "error": f"unreachable: {type(e).__name__}"}

        if peers:
            nodes = list(await asyncio.gather(*(fetch(i, h, p) for i, (h, p) in enumerate(peers))))
        else:
            nodes = [mine]
        leader = mine["leader"]
        top = max((n.get("decided", -1) for n in nodes if "decided" in n), default=-1)
        for n in nodes:
            if "applied" in n and n.get("applied") is not None and n["applied"] >= -1:
                n["lag_behind_cluster"] = max(0, top - n["applied"])
        return web.json_response(
            {"leader": leader, "decided": top, "nodes": nodes, "time": time.time()}
        )

    async def snapshot(self, req: web.Request) -> web.StreamResponse:
        """A backup file (storage/backup.py) holding every write acknowledged
        before this request: admin tokens only. Its slot, revision, size and
        SHA-256 are in the headers too. ``?local=true``: this member's own
        state with no read index (no quorum needed; for a quorum loss)."""
        local = req.query.get("local", "false").lower() in ("true", "1")
        self.auth.admin(req, "snapshot (local)" if local else "snapshot")
        try:
            info, chunks = await self.s.backups.take(self.client, local=local)
        except BackupBusy as e:
            return _err(429, str(e))
        except BackupFailed as e:
            return _err(503, f"no backup: {e}")
        try:
            resp = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(info.size),
                    "X-Paxos-Backup": json.dumps(info.to_json(), sort_keys=True),
                }
            )
            await resp.prepare(req)
            for c in iter_chunks(chunks):
                await asyncio.wait_for(resp.write(c), SEND_TIMEOUT)
            await resp.write_eof()
            return resp
        finally:
            self.s.backups.release()

    async def history(self, req: web.Request) -> web.Response:
        """The status page's charts: the leader changes this node saw (the
        last 50) and, per second of the last 5 minutes, the slots applied
        and the requests answered through the HTTP and gRPC APIs with their
        mean latency."""
        m = self.s.metrics
        return web.json_response(
            {
                "node_id": self.s.id,
                "leaders": [{"t": t, "leader": lead, "ballot": b} for t, lead, b in m.leaders],
                "seconds": m.recent(300),
                "time": time.time(),
            }
        )

    async def healthz(self, req: web.Request) -> web.Response:
        lag = time.monotonic() - self.s.last_tick
        if lag > 2.0 or self.s.stopping.is_set():
            return _err(503, f"event loop stalled: last tick {lag:.1f}s ago")
        return web.json_response({"ok": True, "last_tick_s": round(lag, 3)})

    async def readyz(self, req: web.Request) -> web.Response:
        st = self.s.status()
        if not st["ready"]:
            why = (
                "recovering"
                if st["recovering"]
                else (
                    "no leader known" if st["leader"] is None else f"catching up (lag {st['lag']})"
                )
            )
            return _err(503, f"not ready: {why}")
        return web.json_response({"ok": True, "leader": st["leader"]})

    async def metrics(self, req: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), content_type="text/plain", charset="utf-8"
        )

    async def index(self, req: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")
