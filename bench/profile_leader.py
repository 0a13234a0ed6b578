"""Where the leader's CPU goes at peak: py-spy on the leader of a 3-node
cluster under the load generator (10,000 writes outstanding, 64 B values).

    python bench/profile_leader.py [--seconds 10] [--outstanding 10000]
                                   [--storage-engine log|sqlite] [--raw FILE]

Prints the throughput during the profile, the leader's share of a core,
and the functions with the most samples: own (the function itself) and
inclusive (it or what it called), as shares of the leader's samples.
``--raw`` keeps py-spy's collapsed stacks (flame graph input).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from paxosrsm.loadgen import LoadGen
from paxosrsm.net.proccluster import ProcCluster


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def summarize(raw: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] for f in stack.split(";")]
        frames = [f.rstrip(")") + ")" if "(" in f else f for f in frames]
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"{total} samples")
    print("own time (the function itself):")
    for f, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("inclusive time (it and what it called), past the event loop's frames:")
    shown = 0
    for f, n in incl.most_common():
        if n / total > 0.85:
            continue  # the thread's root frames
        print(f"  {100 * n / total:5.1f}%  {f}")
        shown += 1
        if shown >= top:
            break


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--outstanding", type=int, default=10_000)
    ap.add_argument("--storage-engine", default="log", choices=("log", "sqlite"))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--raw", default=None)
    a = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    root = Path(tempfile.mkdtemp(prefix="pxprof-"))
    os.environ["PAXOS_STORAGE_ENGINE"] = a.storage_engine
    c = ProcCluster(root, 3)
    raw = Path(a.raw) if a.raw else root / "leader.txt"
    try:
        c.start_all()
        c.wait_ready()
        lead = c.leader()
        assert lead is not None
        pid = c.procs[lead].pid

        async def load() -> dict[str, float]:
            g = LoadGen(c.addrs, c.key, value_size=64)
            await g.start()
            try:
                await g.run(a.outstanding, 2.0)  # warm up
                spy = subprocess.Popen(
                    [pyspy, "record", "--pid", str(pid), "--duration", str(int(a.seconds)),
                     "--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                r: dict[str, float] = await g.run(a.outstanding, a.seconds)
                r["leader_cpu"] = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
                spy.wait(timeout=60)
                return r
            finally:
                g.close()

        r = uvloop.run(load())
        print(f"storage engine {a.storage_engine}: {r['ops_per_s']:,.0f} writes/s at "
              f"{a.outstanding} outstanding; leader (node {lead}) at "
              f"{100 * r['leader_cpu']:.0f}% of a core")  # fmt: skip
        summarize(raw, a.top)
    finally:
        c.close()
        if not a.raw:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
