"""Write throughput under a flood of bad datagrams (issue 12, "Floods").

The probe that stopped us: 200,000 bad datagrams at 10,000/s cut write
throughput by 31-67% and caused repeated elections. This runs a three-node
cluster on loopback, measures write throughput (the pipelined load generator,
the real client protocol) with and without a flood of datagrams that look like
ours (our magic and version, random sender, counter and MAC, realistic sizes)
at ``--rate`` per second to every node, from another loopback source
(127.0.0.2, as a foreign pod would be), and prints the ratio and the
elections seen. Rounds alternate, and the ratio is of medians.

    python bench/flood_bench.py [--rate 10000] [--seconds 8] [--rounds 3]

Target: flood/normal >= 0.80, and no election.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

from paxosrsm.loadgen import LoadGen
from paxosrsm.net.proccluster import ProcCluster

FLOODER = textwrap.dedent(
    """
    import os, random, socket, struct, sys, time
    rate, seconds, size = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    targets = sys.argv[4:]
    addrs = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    rng = random.Random(7)
    pool = []
    for _ in range(256):
        head = struct.pack(">2sBBQQQ", b"PX", 1, rng.randrange(2), rng.getrandbits(63),
                           rng.getrandbits(63), rng.getrandbits(63))
        pool.append(head + os.urandom(size or rng.choice((32, 200, 1200))))
    sent, t0 = 0, time.monotonic()
    while True:
        now = time.monotonic() - t0
        if now >= seconds:
            break
        due = int(now * rate)
        while sent < due:
            try:
                s.sendto(pool[sent % 256], addrs[sent % len(addrs)])
            except OSError:
                pass
            sent += 1
        time.sleep(0.002)
    print(sent)
    """
)


def _leaders(c: ProcCluster) -> set[str]:
    out = set()
    for nid in range(3):
        try:
            with urllib.request.urlopen(f"{c.http(nid)}/v1/status", timeout=1) as r:
                st = json.loads(r.read())
            if st.get("is_leader"):
                out.add(str(st.get("ballot")))
        except OSError:
            pass
    return out


def _counters(c: ProcCluster) -> dict[str, int]:
    total: dict[str, int] = {}
    for nid in range(3):
        try:
            with urllib.request.urlopen(f"{c.http(nid)}/v1/status", timeout=1) as r:
                st = json.loads(r.read())
        except OSError:
            continue
        for k, v in st.get("counters", {}).items():
            if k.startswith("dropped_") or k == "datagrams_in":
                total[k] = total.get(k, 0) + int(v)
    return total


async def _round(
    c: ProcCluster, g: LoadGen, flood: float, seconds: float, size: int
) -> dict[str, Any]:
    before = _leaders(c)
    proc = None
    if flood:
        targets = [f"{h}:{p}" for h, p in c.addrs]
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOODER, str(flood), str(seconds + 1.5), str(size), *targets],
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(0.5)
    r = await g.run(256, seconds, warmup=0.5)
    sent = 0
    if proc is not None:
        out, _ = proc.communicate(timeout=30)
        sent = int(out.strip() or 0)
    after = _leaders(c)
    return {"ops_per_s": r["ops_per_s"], "flood_sent": sent, "leaders": sorted(before | after)}


async def main_async(a: argparse.Namespace, c: ProcCluster) -> dict[str, Any]:
    g = LoadGen(c.addrs, c.key, value_size=64)
    await g.start()
    normal: list[float] = []
    flooded: list[float] = []
    leaders: set[str] = set()
    sent = 0
    try:
        for i in range(a.rounds):
            for flood in (0.0, a.rate) if i % 2 == 0 else (a.rate, 0.0):
                r = await _round(c, g, flood, a.seconds, a.size)
                (flooded if flood else normal).append(r["ops_per_s"])
                leaders |= set(r["leaders"])
                sent += r["flood_sent"]
                kind = f"flood {flood:.0f}/s" if flood else "normal"
                print(f"  round {i + 1} {kind:>14}: {r['ops_per_s']:8.0f} ops/s", file=sys.stderr)
    finally:
        g.close()
    return {
        "normal_ops_per_s": statistics.median(normal),
        "flood_ops_per_s": statistics.median(flooded),
        "ratio": statistics.median(flooded) / statistics.median(normal),
        "leader_ballots_seen": sorted(leaders),
        "flood_datagrams_sent": sent,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--size", type=int, default=0, help="bytes per bad datagram (0: a mix of 32-1200)"
    )
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="paxos-flood-"))
    c = ProcCluster(root, 3)
    try:
        c.start_all()
        c.wait_ready()
        time.sleep(1.0)
        res = asyncio.run(main_async(a, c))
        res["counters"] = _counters(c)
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(res, indent=1))
    ok = res["ratio"] >= 0.8 and len(res["leader_ballots_seen"]) == 1
    print(
        f"flood {a.rate:.0f}/s: {res['ratio']:.2f} of normal throughput "
        f"({res['flood_ops_per_s']:.0f} vs {res['normal_ops_per_s']:.0f} ops/s, medians of "
        f"{a.rounds}); leader ballots seen: {len(res['leader_ballots_seen'])} "
        f"-> {'meets' if ok else 'misses'} the target (>= 0.80, one leader)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
