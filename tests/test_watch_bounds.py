"""Watches cost bounded memory (issue 13): many watchers on one prefix, half
of whose streams are never read, while values are written as fast as the
cluster takes them. The node that serves them keeps its memory within a
bound (what a slow stream can hold is 64 responses and gRPC's flow-control
window; its watches read from the history, not from a buffer), and the
readers get every event once, in order. The streams never read are
cancelled as slow watchers (RESOURCE_EXHAUSTED), as etcd does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from netcluster import ProcCluster

from paxosrsm.etcdapi import server
from paxosrsm.etcdapi.pb import rpc_pb2, rpc_pb2_grpc

STREAMS, PER_STREAM, WRITES, VALUE = 10, 20, 1500, 2048

HUNG_CLIENT = """
import asyncio, os, signal, sys
import grpc
from paxosrsm.etcdapi.pb import rpc_pb2, rpc_pb2_grpc

async def main():
    ep, streams, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    calls = []
    for _ in range(streams):
        async def gen():
            for _ in range(per):
                yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                    key=b"wb/", range_end=b"wb0"))
            await asyncio.Event().wait()
        call = rpc_pb2_grpc.WatchStub(grpc.aio.insecure_channel(ep)).Watch(gen())
        calls.append(call)
        created = 0
        while created < per:  # every watch created, then never read again
            r = await call.read()
            created += bool(r.created)
    print("stopping", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)

asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slow_watchers_cost_bounded_memory(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path / "c", 3).start_all()
    stopped: list[subprocess.Popen[bytes]] = []
    try:
        c.wait_ready()
        pid = c.procs[0].pid
        ep0 = c.layout["grpc_peers"][0]

        async def go() -> tuple[float, float, list[list[int]]]:
            base = rss_mb(pid)
            peak = base
            got: list[list[int]] = [[] for _ in range(STREAMS * PER_STREAM // 2)]
            chans = [grpc.aio.insecure_channel(ep0) for _ in range(STREAMS // 2)]
            calls = []
            ready = asyncio.Event()

            def reqs() -> object:
                async def gen() -> object:
                    for _ in range(PER_STREAM):
                        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                            key=b"wb/", range_end=b"wb0"))  # fmt: skip
                    await asyncio.Event().wait()

                return gen()

            async def reader(s: int, call: object) -> None:
                created = 0
                async for r in call:  # type: ignore[attr-defined]
                    if r.created:
                        created += 1
                        if created == PER_STREAM and s == 0:
                            ready.set()
                        continue
                    idx = s * PER_STREAM + r.watch_id
                    got[idx].extend(e.kv.mod_revision for e in r.events)
                    if all(len(g) >= WRITES for g in got[s * PER_STREAM : (s + 1) * PER_STREAM]):
                        return

            tasks = []
            for s, ch in enumerate(chans[: STREAMS // 2]):
                call = rpc_pb2_grpc.WatchStub(ch).Watch(reqs())
                calls.append(call)
                tasks.append(asyncio.create_task(reader(s, call)))
            # The other half: opened by a process that then stops (SIGSTOP), so that
            # nothing reads their sockets (a client in this process would keep
            # taking bytes off them into grpcio's buffers as its windows allow,
            # which is reading, slowly).
            hung = subprocess.Popen(
                [sys.executable, "-c", HUNG_CLIENT, ep0, str(STREAMS // 2), str(PER_STREAM)],
                stdout=subprocess.PIPE,
            )
            stopped.append(hung)
            assert hung.stdout is not None
            line = await asyncio.get_running_loop().run_in_executor(None, hung.stdout.readline)
            assert line.strip() == b"stopping", line
            await asyncio.wait_for(ready.wait(), 30)
            await asyncio.sleep(1.0)
            wch = grpc.aio.insecure_channel(c.layout["grpc_peers"][1])
            kv = rpc_pb2_grpc.KVStub(wch)
            value = os.urandom(VALUE)
            sem = asyncio.Semaphore(32)

            async def put(i: int) -> None:
                async with sem:
                    await kv.Put(rpc_pb2.PutRequest(key=b"wb/%d" % (i % 50), value=value))

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_mb(pid))
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            await asyncio.gather(*(put(i) for i in range(WRITES)))
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            sampler.cancel()
            peak = max(peak, rss_mb(pid))
            # The never-read streams are slow watchers: cancelled after 10 s.
            for _ in range(100):
                st = c.status(0) or {}
                if st.get("counters", {}).get("dropped_grpc_slow_watcher", 0) >= STREAMS // 2:
                    break
                await asyncio.sleep(0.3)
            else:
                raise AssertionError(f"slow watchers not cancelled: {st.get('counters')}")
            hung.kill()
            hung.wait()
            for call in calls:
                call.cancel()
            for ch in [*chans, wch]:
                await ch.close()
            return base, peak, got

        base, peak, got = asyncio.run(go())
        n = STREAMS * PER_STREAM
        print(f"{n} watchers ({STREAMS // 2} streams never read), {WRITES} writes of "
              f"{VALUE} B: node RSS {base:.0f} -> peak {peak:.0f} MB")  # fmt: skip
        for g in got:
            assert len(g) == WRITES and g == sorted(g) and len(set(g)) == WRITES
        # What the never-read streams could pin without a bound: every event
        # for each of their 100 watches, 100 x 1,500 x 2 KiB = 300 MB.
        assert peak - base < 120, (base, peak)
        assert all(c.alive(i) for i in range(3))
    finally:
        for p in stopped:
            p.kill()
            p.wait()
        c.close()


def test_a_stream_read_steadily_is_not_slow_however_many_watches_share_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many watches feed one stream's outbox; the reader takes a response
    every 50 ms, so each producer waits its turn far longer than SLOW_AFTER,
    yet the stream is not slow. (Found by ``bench/watch_load.py``: with the
    clock on each producer's own wait, 2,000 watches on 20 streams read as
    fast as the client could were all cancelled as slow after 12 s.) A reader
    that stops is still found slow."""
    monkeypatch.setattr(server, "SLOW_AFTER", 0.5)
    monkeypatch.setattr(server, "STREAM_QUEUE", 1)

    async def go(stop_after: int) -> tuple[int, bool]:
        slow = []
        box = server.Outbox(on_slow=lambda: slow.append(1))
        resp = rpc_pb2.WatchResponse(watch_id=1)

        async def producer() -> None:
            for _ in range(3):
                await box.put(resp)

        producers = [asyncio.create_task(producer()) for _ in range(20)]
        taken = 0
        with contextlib.suppress(server.SlowWatcher):
            while taken < 60:
                if taken == stop_after:
                    await asyncio.sleep(1.0)
                await box.get()
                taken += 1
                await asyncio.sleep(0.05)
        await asyncio.gather(*producers, return_exceptions=True)
        return taken, bool(slow)

    assert asyncio.run(go(stop_after=-1)) == (60, False)  # 3 s of steady reading
    taken, slow = asyncio.run(go(stop_after=10))
    assert slow and taken < 60
