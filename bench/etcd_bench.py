"""etcd's v3 API, paxosrsm against a real etcd 3.4, through the same client
(issue 13): 3 members each on this machine, one run, ratios.

    python bench/etcd_bench.py [--seconds 5] [--levels 1,16,64,256]

Rows: Put throughput over gRPC at each concurrency; Range of one key
(linearizable and serializable) at each concurrency; Put throughput over
HTTP through etcd's JSON gateway API (``POST /v3/kv/put``, which both
serve) with one aiohttp client, and its p50 at one connection; CPU per
request of the members; watch latency from a Put's answer to the
watcher's event (p50, p99). The client is grpcio's
asyncio client with the stubs of paxosrsm/etcdapi/pb (etcd's wire format),
one channel per member, requests spread over them. Each figure is the median
of --repeat runs; ratios are ours / etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from netcluster import ProcCluster, free_ports

from paxosrsm.etcdapi.pb import rpc_pb2, rpc_pb2_grpc

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdCluster:
    """Three etcd 3.4 members on loopback, each with its own data directory."""

    def __init__(self, root: Path) -> None:
        ports = free_ports(6)
        self.endpoints = [f"127.0.0.1:{ports[i]}" for i in range(3)]
        peers = [f"http://127.0.0.1:{ports[3 + i]}" for i in range(3)]
        initial = ",".join(f"e{i}={peers[i]}" for i in range(3))
        self.procs = []
        for i in range(3):
            log = open(root / f"etcd{i}.log", "wb")  # noqa: SIM115
            self.procs.append(subprocess.Popen(
                [ETCD, "--name", f"e{i}", "--data-dir", str(root / f"etcd{i}"),
                 "--listen-client-urls", f"http://{self.endpoints[i]}",
                 "--advertise-client-urls", f"http://{self.endpoints[i]}",
                 "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                 "--initial-cluster", initial, "--initial-cluster-state", "new"],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


async def wait_ready(endpoints: list[str]) -> None:
    deadline = time.monotonic() + 60
    for ep in endpoints:
        async with grpc.aio.insecure_channel(ep) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            while True:
                try:
                    await kv.Put(rpc_pb2.PutRequest(key=b"ready", value=b"1"), timeout=2)
                    break
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    total = 0.0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def throughput(
    endpoints: list[str], level: int, seconds: float, op: str, pids: list[int] | None = None
) -> float:
    chans = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
    value = b"x" * 64
    done = 0
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        kv = stubs[w % len(stubs)]
        i = 0
        while time.monotonic() < stop:
            if op == "put":
                await kv.Put(rpc_pb2.PutRequest(key=b"k%d-%d" % (w, i % 100), value=value))
            else:
                await kv.Range(rpc_pb2.RangeRequest(key=b"k0-0", serializable=op == "sread"))
            i += 1
            done += 1

    t0 = time.monotonic()
    cpu0 = cpu_seconds(pids or [])
    await asyncio.gather(*(worker(w) for w in range(level)))
    rate = done / (time.monotonic() - t0)
    if pids:
        CPU[(op, level)] = (cpu_seconds(pids) - cpu0) / max(done, 1) * 1e6
    for c in chans:
        await c.close()
    return rate


#: CPU microseconds the servers spent per request, by (op, level), of the
#: last run of ``throughput`` with pids.
CPU: dict[tuple[str, int], float] = {}
#: p50 latency (us) of a Put at one connection over HTTP, by system run.
HTTP_P50: list[float] = []


async def http_throughput(urls: list[str], level: int, seconds: float, pids: list[int]) -> float:
    """Puts through etcd's JSON gateway API (``POST /v3/kv/put``) with one
    aiohttp client: ``level`` connections spread over the members (etcd
    serves it on its client port, paxosrsm on its HTTP port)."""
    import base64

    import aiohttp

    value = base64.b64encode(b"x" * 64).decode()
    done = 0
    lat: list[float] = []
    stop = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def worker(w: int) -> None:
            nonlocal done
            url = urls[w % len(urls)] + "/v3/kv/put"
            i = 0
            while time.monotonic() < stop:
                key = base64.b64encode(b"h%d-%d" % (w, i % 100)).decode()
                t0 = time.perf_counter()
                async with http.post(url, json={"key": key, "value": value}) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}")
                if level == 1:
                    lat.append(time.perf_counter() - t0)
                i += 1
                done += 1

        t0 = time.monotonic()
        cpu0 = cpu_seconds(pids)
        await asyncio.gather(*(worker(w) for w in range(level)))
        rate = done / (time.monotonic() - t0)
        CPU[("http", level)] = (cpu_seconds(pids) - cpu0) / max(done, 1) * 1e6
    if lat:
        HTTP_P50.append(statistics.median(lat) * 1e6)
    return rate


async def watch_latency(endpoints: list[str], n: int) -> tuple[float, float]:
    async with grpc.aio.insecure_channel(endpoints[1]) as wch, \
            grpc.aio.insecure_channel(endpoints[0]) as pch:  # fmt: skip
        watch = rpc_pb2_grpc.WatchStub(wch)
        kv = rpc_pb2_grpc.KVStub(pch)
        q: asyncio.Queue[Any] = asyncio.Queue()

        async def reqs() -> Any:
            yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"wl"))
            await asyncio.Event().wait()

        stream = watch.Watch(reqs())

        async def read() -> None:
            async for r in stream:
                for _ in r.events:
                    q.put_nowait(time.monotonic())

        reader = asyncio.get_running_loop().create_task(read())
        await asyncio.sleep(0.5)
        lat = []
        for i in range(n):
            await kv.Put(rpc_pb2.PutRequest(key=b"wl", value=b"%d" % i))
            t_ack = time.monotonic()
            t_ev = await asyncio.wait_for(q.get(), 10)
            lat.append(max(0.0, t_ev - t_ack))
            await asyncio.sleep(0.01)
        reader.cancel()
        stream.cancel()
        lat.sort()
        return statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000


async def measure(
    endpoints: list[str], levels: list[int], seconds: float, pids: list[int], urls: list[str]
) -> dict[str, Any]:
    await wait_ready(endpoints)
    out: dict[str, Any] = {}
    CPU.clear()
    HTTP_P50.clear()
    for op in ("put", "read", "sread"):
        for lv in levels:
            out[(op, lv)] = await throughput(endpoints, lv, seconds, op, pids)
    for lv in levels:
        out[("http", lv)] = await http_throughput(urls, lv, seconds, pids)
    out["http_p50"] = HTTP_P50[0] if HTTP_P50 else float("nan")
    out["cpu"] = dict(CPU)
    out["watch"] = await watch_latency(endpoints, 200)
    return out


FLOOR_SERVER = """
import asyncio, sys
import grpc
from paxosrsm.etcdapi.pb import rpc_pb2, rpc_pb2_grpc

class KV:
    async def Range(self, request, context):
        return rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=1))
    Put = DeleteRange = Txn = Compact = Range

async def main():
    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(KV(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


def grpc_floor(levels: list[int], seconds: float) -> dict[Any, Any]:
    """What grpcio's asyncio server costs alone: one that answers every
    Range at once, measured the same way (no Paxos, no store)."""
    (port,) = free_ports(1)
    ep = f"127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, ep])
    try:
        time.sleep(1.0)
        CPU.clear()
        out: dict[Any, Any] = {}
        for lv in levels:
            out[("sread", lv)] = asyncio.run(throughput([ep], lv, seconds, "sread", [proc.pid]))
        out["cpu"] = dict(CPU)
        return out
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--levels", default="1,16,64,256")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    results: dict[str, list[dict[str, Any]]] = {"etcd": [], "paxosrsm": []}
    for _ in range(a.repeat):
        for name in ("etcd", "paxosrsm"):
            root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
            if name == "etcd":
                e = EtcdCluster(root)
                try:
                    pids = [p.pid for p in e.procs]
                    urls = [f"http://{ep}" for ep in e.endpoints]
                    results[name].append(
                        asyncio.run(measure(e.endpoints, levels, a.seconds, pids, urls))
                    )
                finally:
                    e.close()
            else:
                c = ProcCluster(root, 3).start_all()
                try:
                    c.wait_ready()
                    eps = list(c.layout["grpc_peers"])
                    pids = [p.pid for p in c.procs.values()]
                    urls = [c.http(n) for n in range(3)]
                    results[name].append(asyncio.run(measure(eps, levels, a.seconds, pids, urls)))
                finally:
                    c.close()
            shutil.rmtree(root, ignore_errors=True)

    def med(name: str, k: Any) -> float:
        return statistics.median(r[k] for r in results[name])

    print(f"etcd v3 gRPC API, 3 members each, same client (grpcio asyncio), 64 B values, "
          f"{a.seconds:g} s per figure, median of {a.repeat}; {os.cpu_count()} cores")  # fmt: skip
    print(f"{'measure':34} {'paxosrsm':>10} {'etcd 3.4':>10} {'ratio':>6}")
    names = {
        "put": "Put/s",
        "read": "Range/s (linearizable)",
        "sread": "Range/s (serializable)",
        "http": "HTTP Put/s (JSON gateway)",
    }
    for op in ("put", "read", "sread", "http"):
        for lv in levels:
            ours, theirs = med("paxosrsm", (op, lv)), med("etcd", (op, lv))
            print(f"{names[op] + f' at {lv}':34} {ours:10.0f} {theirs:10.0f} {ours / theirs:6.2f}")
    floor = grpc_floor(levels, a.seconds)
    ours, theirs = med("paxosrsm", "http_p50"), med("etcd", "http_p50")
    print(f"{'HTTP Put p50 at 1 (us)':34} {ours:10.0f} {theirs:10.0f} {ours / theirs:6.2f}")
    print("CPU per request, all members together (us); the same client:")
    for op in ("put", "read", "sread", "http"):
        for lv in levels:
            ours = statistics.median(r["cpu"][(op, lv)] for r in results["paxosrsm"])
            theirs = statistics.median(r["cpu"][(op, lv)] for r in results["etcd"])
            print(f"{'  cpu ' + names[op] + f' at {lv}':34} {ours:10.0f} {theirs:10.0f} "
                  f"{ours / theirs:6.2f}")  # fmt: skip
    print("grpcio's asyncio server answering every Range at once (no Paxos, no store):")
    for lv in levels:
        f, e = floor[("sread", lv)], med("etcd", ("sread", lv))
        print(f"{f'  Range/s at {lv} (vs etcd serializable)':34} {f:10.0f} {e:10.0f} {f / e:6.2f}")
        print(f"{f'  its CPU per request at {lv} (us)':34} {floor['cpu'][('sread', lv)]:10.0f}")
    for i, what in enumerate(("watch latency p50 (ms)", "watch latency p99 (ms)")):
        ours = statistics.median(r["watch"][i] for r in results["paxosrsm"])
        theirs = statistics.median(r["watch"][i] for r in results["etcd"])
        ratio = f"{ours / theirs:6.2f}" if theirs >= 0.05 else "     -"  # below the clock's grain
        print(f"{what:34} {ours:10.2f} {theirs:10.2f} {ratio}")


if __name__ == "__main__":
    main()
