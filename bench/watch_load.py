"""Many watchers on one prefix under a steady write rate (issue 13's resource
requirement): does the serving node's memory stay bounded, and are watchers
that cannot keep up cancelled with an error instead of buffered forever?

    python bench/watch_load.py [--watchers 10000] [--streams 100] [--rate 1000]
                               [--seconds 60] [--value 64]

A 3-member paxosrsm cluster on this machine (``--against etcd``: 3 etcd 3.4
members, for comparison; etcd compacts nothing by itself). ``--watchers`` watches on the
prefix ``wl/``, spread over ``--streams`` gRPC streams to member 0, all
read as fast as this one client process can; a writer puts ``--rate``
values per second through member 1. Every second it samples member 0's RSS
and prints it; at the end: events delivered, watches cancelled (and why),
the writes' rate, RSS at the start, its peak, and the peak of each half of
the run (bounded memory: the second half's peak is not above the first's by
more than the noise). Exit status 1 if member 0 died or the second half's
peak exceeds the first's by more than --growth-mb (default 64).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from etcd_bench import EtcdCluster, wait_ready
from netcluster import ProcCluster

from paxosrsm.etcdapi.pb import rpc_pb2, rpc_pb2_grpc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(endpoints: list[str], pid: int, a: argparse.Namespace) -> dict[str, Any]:
    per_stream = a.watchers // a.streams
    chans = [grpc.aio.insecure_channel(endpoints[0]) for _ in range(a.streams)]
    delivered = 0
    created = 0
    cancels: Counter[str] = Counter()
    stop = asyncio.Event()

    def requests() -> Any:
        async def gen() -> Any:
            for _ in range(per_stream):
                yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                    key=b"wl/", range_end=b"wl0"))  # fmt: skip
            await stop.wait()

        return gen()

    async def reader(call: Any) -> None:
        nonlocal delivered, created
        try:
            async for r in call:
                if r.created:
                    created += 1
                if r.canceled:
                    reason = r.cancel_reason or ("compacted" if r.compact_revision else "?")
                    cancels[reason.split(":")[0][:60]] += 1
                delivered += len(r.events)
        except grpc.aio.AioRpcError as e:
            cancels[f"stream {e.code().name}: {(e.details() or '')[:50]}"] += per_stream

    calls = [rpc_pb2_grpc.WatchStub(ch).Watch(requests()) for ch in chans]
    readers = [asyncio.ensure_future(reader(call)) for call in calls]
    t0 = time.monotonic()
    while created < per_stream * a.streams and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.2)
    print(f"{created} watches created in {time.monotonic() - t0:.1f} s", flush=True)

    wch = grpc.aio.insecure_channel(endpoints[1])
    kv = rpc_pb2_grpc.KVStub(wch)
    value = os.urandom(a.value)
    written = 0
    errors = 0
    base = rss_mb(pid)
    samples: list[tuple[float, float]] = []

    async def writer() -> None:
        nonlocal written, errors
        sem = asyncio.Semaphore(64)
        start = time.monotonic()

        async def one(i: int) -> None:
            nonlocal written, errors
            try:
                await kv.Put(rpc_pb2.PutRequest(key=b"wl/%d" % (i % 1000), value=value))
                written += 1
            except grpc.aio.AioRpcError:
                errors += 1
            finally:
                sem.release()

        i = 0
        pending = set()
        while time.monotonic() - start < a.seconds:
            due = int((time.monotonic() - start) * a.rate)
            while i < due:
                await sem.acquire()
                t = asyncio.ensure_future(one(i))
                pending.add(t)
                t.add_done_callback(pending.discard)
                i += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)

    async def sampler() -> None:
        start = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            r = rss_mb(pid)
            samples.append((time.monotonic() - start, r))
            print(f"  t={samples[-1][0]:5.1f}s rss={r:7.1f} MB written={written} "
                  f"delivered={delivered} cancels={sum(cancels.values())}", flush=True)  # fmt: skip

    s = asyncio.ensure_future(sampler())
    t_w = time.monotonic()
    await writer()
    elapsed = time.monotonic() - t_w
    s.cancel()
    stop.set()
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for ch in [*chans, wch]:
        await ch.close()
    half = len(samples) // 2
    return {
        "watchers": created, "written": written, "errors": errors,
        "write_rate": written / elapsed, "delivered": delivered,
        "delivered_rate": delivered / elapsed, "cancels": dict(cancels),
        "rss_base": base, "rss_peak": max(r for _, r in samples),
        "peak_first_half": max(r for _, r in samples[:half]),
        "peak_second_half": max(r for _, r in samples[half:]),
        "alive": Path(f"/proc/{pid}").exists(),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--watchers", type=int, default=10_000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--value", type=int, default=64)
    ap.add_argument("--growth-mb", type=float, default=64.0)
    ap.add_argument("--against", choices=["paxosrsm", "etcd"], default="paxosrsm",
                    help="the same load on 3 etcd 3.4 members (Debian's etcd-server)")  # fmt: skip
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="watch-load-"))
    counters: dict[str, Any] = {}
    if a.against == "etcd":
        e = EtcdCluster(root)
        try:
            asyncio.run(wait_ready(e.endpoints))
            out = asyncio.run(run(e.endpoints, e.procs[0].pid, a))
        finally:
            e.close()
    else:
        c = ProcCluster(root, 3).start_all()
        try:
            c.wait_ready()
            out = asyncio.run(run(list(c.layout["grpc_peers"]), c.procs[0].pid, a))
            counters = (c.status(0) or {}).get("counters", {})
        finally:
            c.close()
    print(f"against {a.against}:")
    print(f"{out['watchers']} watchers on one prefix ({a.streams} streams), "
          f"{out['written']} writes in {a.seconds:g} s ({out['write_rate']:.0f}/s asked "
          f"{a.rate:g}/s, {out['errors']} errors), {a.value} B values")  # fmt: skip
    print(f"events delivered: {out['delivered']} ({out['delivered_rate']:.0f}/s)")
    print(f"watches cancelled: {out['cancels'] or 'none'}")
    print(f"node counters: slow watchers cancelled "
          f"{counters.get('dropped_grpc_slow_watcher', 0)}")  # fmt: skip
    print(f"member 0 RSS: start {out['rss_base']:.0f} MB, peak {out['rss_peak']:.0f} MB "
          f"(first half {out['peak_first_half']:.0f}, second half "
          f"{out['peak_second_half']:.0f}); alive: {out['alive']}")  # fmt: skip
    grew = out["peak_second_half"] - out["peak_first_half"]
    if not out["alive"] or grew > a.growth_mb:
        print(f"FAIL: memory grew {grew:.0f} MB from the first half to the second")
        sys.exit(1)


if __name__ == "__main__":
    main()
