"""The MVCC store's client (issue 13): ranges, revisions, transactions,
leases and watches over paxosrsm's own client protocol, on top of
:class:`paxosrsm.client.AsyncClient` (leader redirection, retries,
exactly-once writes). ``paxosctl`` uses it; so can programs::

    async with AsyncClient(addrs, key) as c:
        kv = MVCCClient(c)
        rev = await kv.put("a", "1")
        out = await kv.range("a", prefix=True)
        lease = await kv.lease_grant(10)
        async with kv.keepalive(lease):      # renews it every TTL/3 until the block ends
            await kv.put("session", "me", lease=lease)
        async for ev in kv.watch("a", prefix=True, start=rev):
            ...

A watch here polls the leader (a linearizable read of the store's change
log, every ``poll`` seconds, from the last revision seen): no event is
lost or repeated across reconnects. etcd's gRPC Watch (``--grpc-port``) and
the JSON gateway stream instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from .. import mvcc
from ..types import Kind
from .aio import AsyncClient, KVError


def _b(x: str | bytes) -> bytes:
    return x.encode() if isinstance(x, str) else x


def prefix_end(prefix: bytes) -> bytes:
    """The end of the range of keys that start with ``prefix`` (etcd's rule)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"  # every key


class MVCCClient:
    def __init__(self, client: AsyncClient) -> None:
        self.c = client

    async def _call(self, req: dict[str, Any], kind: Kind) -> dict[str, Any]:
        out = mvcc.decode_result(await self.c.request(kind, mvcc.encode(req)))
        if not out.get("ok"):
            raise KVError(str(out.get("error")))
        return out

    async def put(self, key: str | bytes, value: str | bytes, lease: int = 0) -> int:
        """The revision of the put."""
        req = {"op": "put", "key": _b(key), "value": _b(value), "lease": lease}
        return int((await self._call(req, Kind.WRITE))["revision"])

    async def range(
        self, key: str | bytes, *, prefix: bool = False, range_end: bytes = b"",
        revision: int = 0, limit: int = 0, serializable: bool = False,
        keys_only: bool = False, count_only: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """etcd's RangeResponse as a map: ``kvs``, ``count``, ``more``, ``revision``."""
        k = _b(key)
        end = prefix_end(k) if prefix else range_end
        req = {"op": "range", "key": k, "range_end": end, "revision": revision,
               "limit": limit, "keys_only": keys_only, "count_only": count_only}  # fmt: skip
        return await self._call(req, Kind.STALE_READ if serializable else Kind.READ)

    async def delete(self, key: str | bytes, *, prefix: bool = False) -> int:
        """How many keys were deleted."""
        k = _b(key)
        req = {"op": "delete_range", "key": k, "range_end": prefix_end(k) if prefix else b""}
        return int((await self._call(req, Kind.WRITE))["deleted"])

    async def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A transaction in the store's form (``paxosrsm.mvcc``)."""
        req = {"op": "txn", "compare": compare, "success": success, "failure": failure or []}
        kind = Kind.WRITE if mvcc.txn_writes(req) else Kind.READ
        return await self._call(req, kind)

    async def compact(self, revision: int) -> None:
        await self._call({"op": "compact", "revision": revision}, Kind.WRITE)

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> int:
        lid = lease_id or secrets.randbits(62) + 1
        return int((await self._call({"op": "lease_grant", "id": lid, "ttl": ttl},
                                     Kind.WRITE))["id"])  # fmt: skip

    async def lease_revoke(self, lease_id: int) -> None:
        await self._call({"op": "lease_revoke", "id": lease_id}, Kind.WRITE)

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renews the lease at the leader (no log write); its TTL."""
        return int((await self._call({"op": "lease_keepalive", "id": lease_id},
                                     Kind.READ))["ttl"])  # fmt: skip

    async def lease_ttl(self, lease_id: int) -> dict[str, Any]:
        return await self._call({"op": "lease", "id": lease_id}, Kind.READ)

    @contextlib.asynccontextmanager
    async def keepalive(self, lease_id: int) -> AsyncIterator[None]:
        """Keeps the lease alive (a keepalive every TTL/3) while the block runs."""
        ttl = await self.lease_keepalive(lease_id)

        async def loop() -> None:
            while True:
                await asyncio.sleep(max(0.2, ttl / 3))
                with contextlib.suppress(KVError, OSError):
                    await self.lease_keepalive(lease_id)

        task = asyncio.get_running_loop().create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def watch(
        self, key: str | bytes, *, prefix: bool = False, start: int = 0,
        prev_kv: bool = False, poll: float = 0.1,
    ) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """Events (``type`` 0 put, 1 delete; ``kv``; ``prev_kv``) from revision
        ``start`` on (0: from now), in order, for ever."""
        k = _b(key)
        end = prefix_end(k) if prefix else b""
        if not start:
            start = int((await self._call({"op": "rev"}, Kind.READ))["revision"]) + 1
        while True:
            req = {"op": "events", "start": start, "key": k, "range_end": end,
                   "prev_kv": prev_kv, "limit": 1000}  # fmt: skip
            out = await self._call(req, Kind.READ)
            for ev in out["events"]:
                yield ev
            nxt = int(out["next"])
            if nxt == start or not out["events"]:
                await asyncio.sleep(poll)
            start = nxt
