"""etcd's JSON gateway (issue 13): the v3 API over HTTP at ``/v3/...``, as
etcd's grpc-gateway serves it, on the node's HTTP port beside ``/v1``.

A POST with the request message in protobuf's JSON mapping (keys and values
base64, 64-bit integers as strings or numbers) is answered by the same
servicers as gRPC, and their answer is written back in the same mapping
(field names as in the .proto, 64-bit integers as strings, defaults left
out, as etcd's gateway does). ``/v3/watch`` streams one JSON object per
line, ``{"result": WatchResponse}``. ``GET /version`` says which API this is.

Credentials as over gRPC: ``Authorization: Bearer <token>`` (a token of the
HTTP tokens file), or etcd's ``Authorization: <token>`` from
``/v3/auth/authenticate``. Errors: the gRPC code's HTTP status (as
grpc-gateway maps it) and ``{"error", "message", "code"}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from .server import _KV, VERSION, EtcdApi, _Auth, _Cluster, _Lease, _Maintenance, _Watch, rpc_pb2

#: grpc-gateway's mapping of gRPC codes to HTTP statuses.
HTTP_OF = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
#: The largest request body (as the gRPC limit).
MAX_BODY = 4 << 20


class GatewayAbort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class HttpContext:
    """What the servicers ask of a gRPC context, from an HTTP request."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        md: list[tuple[str, str]] = []
        h = request.headers.get("Authorization", "")
        if h.lower().startswith("bearer "):
            md.append(("authorization", h))
        elif h:
            md.append(("token", h.strip()))
        self.md = md

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.md

    def peer(self) -> str:
        return f"http:{self.request.remote}"

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise GatewayAbort(code, message)


def _dict(msg: Any) -> dict[str, Any]:
    d: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return d


def _error(code: grpc.StatusCode, message: str) -> web.Response:
    return web.json_response(
        {"error": message, "message": message, "code": code.value[0]},
        status=HTTP_OF.get(code, 500),
    )


class Gateway:
    def __init__(self, api: EtcdApi) -> None:
        self.api = api
        kv, lease = _KV(api), _Lease(api)
        maint, cluster, auth = _Maintenance(api), _Cluster(api), _Auth(api)
        unary: dict[str, tuple[Any, Callable[..., Awaitable[Any]]]] = {
            "kv/range": (rpc_pb2.RangeRequest, kv.Range),
            "kv/put": (rpc_pb2.PutRequest, kv.Put),
            "kv/deleterange": (rpc_pb2.DeleteRangeRequest, kv.DeleteRange),
            "kv/txn": (rpc_pb2.TxnRequest, kv.Txn),
            "kv/compaction": (rpc_pb2.CompactionRequest, kv.Compact),
            "lease/grant": (rpc_pb2.LeaseGrantRequest, lease.LeaseGrant),
            "lease/revoke": (rpc_pb2.LeaseRevokeRequest, lease.LeaseRevoke),
            "kv/lease/revoke": (rpc_pb2.LeaseRevokeRequest, lease.LeaseRevoke),
            "lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, lease.LeaseTimeToLive),
            "kv/lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, lease.LeaseTimeToLive),
            "lease/leases": (rpc_pb2.LeaseLeasesRequest, lease.LeaseLeases),
            "kv/lease/leases": (rpc_pb2.LeaseLeasesRequest, lease.LeaseLeases),
            "maintenance/status": (rpc_pb2.StatusRequest, maint.Status),
            "maintenance/alarm": (rpc_pb2.AlarmRequest, maint.Alarm),
            "cluster/member/list": (rpc_pb2.MemberListRequest, cluster.MemberList),
            "auth/authenticate": (rpc_pb2.AuthenticateRequest, auth.Authenticate),
        }
        self.unary = unary
        self.lease = lease
        self.watch = _Watch(api)

    def routes(self) -> list[web.RouteDef]:
        out = [web.get("/version", self.version)]
        out += [web.post(f"/v3/{path}", self._unary_handler(path)) for path in self.unary]
        out += [web.post("/v3/lease/keepalive", self.keepalive), web.post("/v3/watch", self.wat)]
        return out

    async def version(self, request: web.Request) -> web.Response:
        from ..net.main import version

        # etcd's API level (clients parse it as x.y.z), and this server's own.
        api = VERSION.split("+", 1)[0]
        return web.json_response({"etcdserver": api, "etcdcluster": api, "paxosrsm": version()})

    async def _parse(self, request: web.Request, cls: Any) -> Any:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise GatewayAbort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
        msg = cls()
        try:
            if raw.strip():
                json_format.Parse(raw.decode("utf-8"), msg, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise GatewayAbort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {e}") from None
        return msg

    def _unary_handler(self, path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        cls, method = self.unary[path]

        async def handle(request: web.Request) -> web.StreamResponse:
            ctx = HttpContext(request)
            try:
                msg = await self._parse(request, cls)
                resp = await method(msg, ctx)
            except GatewayAbort as e:
                return _error(e.code, str(e))
            return web.json_response(_dict(resp))

        return handle

    async def keepalive(self, request: web.Request) -> web.StreamResponse:
        ctx = HttpContext(request)
        try:
            msg = await self._parse(request, rpc_pb2.LeaseKeepAliveRequest)

            async def one() -> AsyncIterator[Any]:
                yield msg

            resp = None
            async for r in self.lease.LeaseKeepAlive(one(), ctx):
                resp = r
        except GatewayAbort as e:
            return _error(e.code, str(e))
        return web.json_response({"result": _dict(resp)})

    async def wat(self, request: web.Request) -> web.StreamResponse:
        """A watch stream: the request's create (or the requests, one JSON
        object per line), then one ``{"result": ...}`` line per response
        until the client goes away."""
        ctx = HttpContext(request)
        try:
            first = await self._parse(request, rpc_pb2.WatchRequest)
        except GatewayAbort as e:
            return _error(e.code, str(e))

        async def requests() -> AsyncIterator[Any]:
            yield first
            await asyncio.Event().wait()  # the client's side stays open

        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            async for r in self.watch.Watch(requests(), ctx):
                line = json.dumps({"result": _dict(r)}, separators=(",", ":")) + "\n"
                await resp.write(line.encode())
        except GatewayAbort as e:
            await resp.write(json.dumps({"error": {"message": str(e)}}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        return resp
