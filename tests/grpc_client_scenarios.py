"""Scenarios for Python etcd gRPC clients from PyPI, each used as its own
documentation shows (issue 13). Run as a script, one client per process:

    python grpc_client_scenarios.py aetcd|pyetcd HOST:PORT

It prints one JSON list of what the client saw. Each client ships its own
generated copy of etcd's ``.proto`` messages, registered under the same
names as ours in protobuf's default pool, so each runs in a process of its
own (``tests/test_etcd_clients.py`` compares the lists from paxosrsm and
from a real etcd 3.4).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any


async def aetcd_scenario(host: str, port: int) -> list[Any]:
    import aetcd

    out: list[Any] = []
    async with aetcd.Client(host=host, port=port, timeout=10) as c:
        await c.put(b"ae/a", b"1")
        await c.put(b"ae/b", b"2")
        got = await c.get(b"ae/a")
        out.append(("get", got.value.decode() if got else None, got.version if got else None))
        out.append(("missing", await c.get(b"ae/none")))
        rng = await c.get_prefix(b"ae/")
        out.append(("prefix", [(kv.key.decode(), kv.value.decode()) for kv in rng], len(rng)))
        out.append(("replace ok", await c.replace(b"ae/a", b"1", b"11")))
        out.append(("replace stale", await c.replace(b"ae/a", b"1", b"12")))
        t = c.transactions
        ok, resp = await c.transaction(
            compare=[t.version(b"ae/b") > 0, t.value(b"ae/a") == b"11"],
            success=[t.put(b"ae/c", b"3"), t.delete(b"ae/b")],
            failure=[t.get(b"ae/a")],
        )
        out.append(("txn", ok, len(resp)))
        ok, resp = await c.transaction(
            compare=[t.create(b"ae/b") != 0],
            success=[t.put(b"ae/never", b"x")],
            failure=[t.get(b"ae/c")],
        )
        out.append(("txn else", ok, [v.decode() for v, _ in resp[0]]))
        deleted = await c.delete_prefix(b"ae/c")
        out.append(("delete prefix", deleted.deleted))

        # A lock: the second holder waits on a delete event of the first.
        first = c.lock(b"ae-lock", ttl=30)
        second = c.lock(b"ae-lock", ttl=30)
        out.append(("first", await first.acquire(timeout=5)))
        out.append(("second busy", await second.acquire(timeout=1)))

        async def later() -> None:
            await asyncio.sleep(0.5)
            await first.release()

        releaser = asyncio.ensure_future(later())
        t0 = time.monotonic()
        out.append(("second after release", await second.acquire(timeout=10)))
        out.append(("waited for the release", time.monotonic() - t0 >= 0.4))
        await releaser
        await second.release()

        # A lease with a key; refreshed; revoked takes the key.
        lease = await c.lease(60)
        await c.put(b"ae/leased", b"v", lease=lease)
        ttl = await lease.remaining_ttl()
        out.append(("lease ttl", 50 < ttl <= 60, await lease.granted_ttl()))
        out.append(("lease keys", [k.decode() for k in await lease.keys()]))
        await lease.refresh()
        await lease.revoke()
        out.append(("after revoke", await c.get(b"ae/leased")))

        # A watch on a prefix while writes happen.
        watch = await c.watch_prefix(b"ae/w/")
        seen: list[Any] = []

        async def writer() -> None:
            await asyncio.sleep(0.3)
            for i in range(3):
                await c.put(b"ae/w/%d" % i, b"%d" % i)
            await c.delete(b"ae/w/0")

        w = asyncio.ensure_future(writer())
        async for ev in watch:
            seen.append((str(ev.kind), ev.kv.key.decode(), ev.kv.value.decode()))
            if len(seen) == 4:
                break
        await watch.cancel()
        await w
        out.append(("watch", seen))
        st = await c.status()
        out.append(("version", st.version[:4]))
    return out


def pyetcd_scenario(host: str, port: int) -> list[Any]:
    import pyetcd

    out: list[Any] = []
    c = pyetcd.client(host=host, port=port, timeout=10)
    c.put("py/a", "1")
    c.put("py/b", "2")
    value, meta = c.get("py/a")
    out.append(("get", value.decode(), meta.version))
    out.append(("prefix", sorted((v.decode(), m.key.decode()) for v, m in c.get_prefix("py/"))))
    out.append(("replace", c.replace("py/a", "1", "11"), c.replace("py/a", "1", "12")))
    ok, _ = c.transaction(
        compare=[c.transactions.value("py/a") == "11"],
        success=[c.transactions.put("py/t", "yes")],
        failure=[c.transactions.put("py/t", "no")],
    )
    out.append(("txn", ok, c.get("py/t")[0].decode()))
    # The lock as a context manager; a second lock cannot take it meanwhile.
    with c.lock("py-lock", ttl=30) as held:
        other = c.lock("py-lock", ttl=30)
        out.append(("held", held.is_acquired(), other.acquire(timeout=1)))
    again = c.lock("py-lock", ttl=30)
    out.append(("after release", again.acquire(timeout=5)))
    again.release()
    lease = c.lease(60)
    c.put("py/leased", "v", lease=lease)
    out.append(("lease keys", [k.decode() for k in lease.keys]))
    lease.revoke()
    out.append(("after revoke", c.get("py/leased")[0]))
    events, cancel = c.watch_prefix("py/w/")

    def writer() -> None:
        time.sleep(0.3)
        for i in range(3):
            c.put(f"py/w/{i}", str(i))
        c.delete("py/w/0")

    threading.Thread(target=writer).start()
    seen = []
    for ev in events:
        seen.append((type(ev).__name__, ev.key.decode(), ev.value.decode()))
        if len(seen) == 4:
            break
    cancel()
    out.append(("watch", seen))
    out.append(("version", c.status().version[:4]))
    c.close()
    return out


def main() -> None:
    kind, endpoint = sys.argv[1], sys.argv[2]
    host, port = endpoint.rsplit(":", 1)
    if kind == "aetcd":
        out = asyncio.run(aetcd_scenario(host, int(port)))
    else:
        out = pyetcd_scenario(host, int(port))
    print(json.dumps(out, default=repr))


if __name__ == "__main__":
    main()
