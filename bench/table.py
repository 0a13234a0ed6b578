"""Issue 15's table in one run (the last step of ``make bench``): every row
measured now, with its peer (PySyncObj, etcd 3.4) measured in the same run,
beside the figure the issue was filed with.

    python bench/table.py [--quick] [--json FILE]

Rows (each one run; the machine is shared, so read ratios):
  * peak writes/s, 3 replicas, 64 B, fsync on (loadgen at 1,000 and 10,000
    outstanding) against PySyncObj's in-memory peak (its load inside its
    leader), with CPU per write of the whole cluster for both;
  * one client's p50 write latency (the client library) against the floor
    (fdatasync p50 + loopback UDP round trip, measured now);
  * Put/s over gRPC and over HTTP (etcd's JSON gateway API, one aiohttp
    client) at 16 / 64 / 256, and p50 at 1, against etcd 3.4 through the
    same clients; CPU per Put of the members;
  * linearizable single-key Range/s against Put/s at the same concurrency;
  * writes/s at 10,000 outstanding with 3, 5 and 7 acceptors;
  * catch-up of a node 100,000 slots behind, by decided slots;
  * restart of a node holding 1,000,000 slots of state (compacted);
  * a 1 GiB snapshot taken by a wiped node from a peer, against ``dd`` and a
    loopback TCP copy measured in the same run (``transfer_bench.py``; 128
    MiB with --quick); "disk- or network-bound" is read as at least half
    the slower baseline's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import etcd_bench
import net_bench
import recovery_bench
import transfer_bench
import uvloop
from peers import pysyncobj_peer as peer

from paxosrsm.config import ClusterConfig
from paxosrsm.loadgen import LoadGen
from paxosrsm.net.proccluster import ProcCluster

#: The figures issue 15 was filed with (its table), for the "then" column.
THEN = {
    "peak": "30,358 (PySyncObj 14,094: 2.15x)",
    "p50": "1,541 us (7.0x the floor)",
    "http": "452 / 1,449 / 2,336 / 2,838 (etcd 704 / 1,719 / 2,395 / 2,464)",
    "scale": "36,497 / 25,700 / 16,861 (0.70, 0.46)",
    "catchup": "23,069 slots/s",
    "grpc": "Put at 64: 2,290 (etcd 6,981: 0.33x)",
}


def _cluster(n: int, root: Path) -> ProcCluster:
    c = ProcCluster(root, n)
    c.start_all()
    c.wait_ready()
    return c


def ours_peak(levels: list[int], seconds: float, acceptors: int = 3) -> dict[str, float]:
    """Best writes/s over ``levels`` outstanding, and the cluster's CPU per write there."""
    root = Path(tempfile.mkdtemp(prefix="pxtable-"))
    c = _cluster(acceptors, root)
    try:
        pids = [p.pid for p in c.procs.values()]

        async def go() -> dict[str, float]:
            g = LoadGen(c.addrs, c.key, value_size=64)
            await g.start()
            best = {"ops_per_s": 0.0, "cpu_us": 0.0}
            try:
                for k in levels:
                    cpu0, t0 = etcd_bench.cpu_seconds(pids), time.monotonic()
                    r = await g.run(k, seconds)
                    cpu = etcd_bench.cpu_seconds(pids) - cpu0
                    ops = r["ops_per_s"] * (time.monotonic() - t0)
                    if r["ops_per_s"] > best["ops_per_s"]:
                        best = {"ops_per_s": r["ops_per_s"], "cpu_us": cpu / max(ops, 1) * 1e6}
            finally:
                g.close()
            return best

        return uvloop.run(go())
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


def ours_p50(n: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="pxtable-"))
    c = _cluster(3, root)
    try:
        return float(uvloop.run(net_bench._latency(c, n))["p50_us"])
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


def api_rows(levels: list[int], seconds: float) -> dict[str, dict[Any, Any]]:
    """etcd_bench's measurements (gRPC, HTTP, CPU) for etcd and for us."""
    out: dict[str, dict[Any, Any]] = {}
    for name in ("etcd", "paxosrsm"):
        root = Path(tempfile.mkdtemp(prefix=f"pxtable-{name}-"))
        try:
            if name == "etcd":
                e = etcd_bench.EtcdCluster(root)
                try:
                    pids = [p.pid for p in e.procs]
                    urls = [f"http://{ep}" for ep in e.endpoints]
                    out[name] = asyncio.run(
                        etcd_bench.measure(e.endpoints, levels, seconds, pids, urls)
                    )
                finally:
                    e.close()
            else:
                c = _cluster(3, root)
                try:
                    pids = [p.pid for p in c.procs.values()]
                    urls = [c.http(n) for n in range(3)]
                    eps = list(c.layout["grpc_peers"])
                    out[name] = asyncio.run(etcd_bench.measure(eps, levels, seconds, pids, urls))
                finally:
                    c.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return out


def catchup() -> float:
    d = Path(tempfile.mkdtemp(prefix="pxtable-", dir="."))
    try:
        return recovery_bench.catchup_rate(d, 100_000, False)[0]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def restart(slots: int) -> float:
    d = Path(tempfile.mkdtemp(prefix="pxtable-", dir="."))
    try:
        recovery_bench.build_compacted(d, slots)
        return recovery_bench.restart_seconds(d, ClusterConfig(n_acceptors=3))[0]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter points (CI's slice)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    secs = 2.0 if a.quick else 5.0
    lat_n = 300 if a.quick else 2000
    levels = [1000, 10000]
    api_levels = [1, 16, 64, 256]
    t_start = time.monotonic()
    res: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    print("measuring (each row once; about 10 minutes, 4 with --quick)...", file=sys.stderr)
    res["floor"] = peer.measure_baselines(500 if a.quick else 2000)
    res["ours_peak"] = ours_peak(levels, secs)
    rows = peer.run_throughput("memory", levels, secs)
    best = max(rows, key=lambda r: r["ops_per_s"])
    cpu_share = (best["cpu_pct_leader"] + sum(best["cpu_pct_followers"])) / 100
    res["peer_peak"] = {
        "ops_per_s": best["ops_per_s"],
        "cpu_us": cpu_share / max(best["ops_per_s"], 1) * 1e6,
    }
    res["ours_p50_us"] = ours_p50(lat_n)
    res["api"] = api_rows(api_levels, 2.0 if a.quick else 4.0)
    res["scale"] = {n: ours_peak([10000], secs, n)["ops_per_s"] for n in (3, 5, 7)}
    res["catchup"] = catchup()
    res["restart_s"] = restart(200_000 if a.quick else 1_000_000)
    d = Path(tempfile.mkdtemp(prefix="pxtable-", dir="."))
    try:
        res["transfer"] = transfer_bench.measure(128 if a.quick else 1024, 64, 600.0, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    res["seconds"] = round(time.monotonic() - t_start)
    print_table(res, quick=a.quick)
    if a.json:
        Path(a.json).write_text(json.dumps(_plain(res), indent=1, default=str))
    return 0


def _plain(x: Any) -> Any:
    """JSON-able: tuple keys (op, level) become "op/level"."""
    if isinstance(x, dict):
        return {("/".join(map(str, k)) if isinstance(k, tuple) else k): _plain(v)
                for k, v in x.items()}  # fmt: skip
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _ok(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_table(r: dict[str, Any], quick: bool) -> None:
    floor = r["floor"]["fdatasync_plus_rtt_p50_us"]
    ours, theirs = r["ours_peak"], r["peer_peak"]
    api = r["api"]
    o, e = api["paxosrsm"], api["etcd"]
    rows: list[tuple[str, str, str, str, str]] = []
    ratio = ours["ops_per_s"] / theirs["ops_per_s"]
    rows.append(("peak writes/s, 3 replicas, 64 B, fsync on", THEN["peak"],
                 f"{ours['ops_per_s']:,.0f}", f"PySyncObj memory {theirs['ops_per_s']:,.0f}",
                 f"{ratio:.2f}x (>= 3: {_ok(ratio >= 3)})"))  # fmt: skip
    rows.append(("CPU per write at that peak, whole cluster", "-", f"{ours['cpu_us']:,.0f} us",
                 f"PySyncObj {theirs['cpu_us']:,.0f} us; etcd Put at 256 "
                 f"{e['cpu'][('put', 256)]:,.0f} us",
                 f"{ours['cpu_us'] / theirs['cpu_us']:.2f}x"))  # fmt: skip
    p50 = r["ours_p50_us"]
    rows.append(("one client, p50 write (client library)", THEN["p50"], f"{p50:,.0f} us",
                 f"floor {floor:,.0f} us (fdatasync + UDP RTT)",
                 f"{p50 / floor:.1f}x the floor (<= 3: {_ok(p50 <= 3 * floor)})"))  # fmt: skip
    for api_name, op in (("gRPC", "put"), ("HTTP", "http")):
        ours_s = " / ".join(f"{o[(op, lv)]:,.0f}" for lv in (16, 64, 256))
        etcd_s = " / ".join(f"{e[(op, lv)]:,.0f}" for lv in (16, 64, 256))
        ratios = [o[(op, lv)] / e[(op, lv)] for lv in (16, 64, 256)]
        rows.append((f"{api_name} Put/s at 16 / 64 / 256 (same client)",
                     THEN["http"] if op == "http" else THEN["grpc"], ours_s, f"etcd {etcd_s}",
                     " / ".join(f"{x:.2f}" for x in ratios)
                     + f" (>= 1: {_ok(min(ratios) >= 1)})"))  # fmt: skip
    rows.append(("HTTP Put p50 at 1 connection", "1.99 ms (etcd 1.33 ms)",
                 f"{o['http_p50'] / 1000:.2f} ms", f"etcd {e['http_p50'] / 1000:.2f} ms",
                 f"{o['http_p50'] / e['http_p50']:.2f}x (<= 1: "
                 f"{_ok(o['http_p50'] <= e['http_p50'])})"))  # fmt: skip
    rows.append(("CPU per Put at 64, members (gRPC / HTTP)", "646 us (etcd 172 us)",
                 f"{o['cpu'][('put', 64)]:,.0f} / {o['cpu'][('http', 64)]:,.0f} us",
                 f"etcd {e['cpu'][('put', 64)]:,.0f} / {e['cpu'][('http', 64)]:,.0f} us",
                 f"{o['cpu'][('put', 64)] / e['cpu'][('put', 64)]:.2f}x / "
                 f"{o['cpu'][('http', 64)] / e['cpu'][('http', 64)]:.2f}x"))  # fmt: skip
    reads = [o[("read", lv)] / o[("put", lv)] for lv in (16, 64, 256)]
    rows.append(("linearizable Range/s / Put/s at 16 / 64 / 256 (gRPC)", "-",
                 " / ".join(f"{x:.2f}" for x in reads),
                 "etcd " + " / ".join(f"{e[('read', lv)] / e[('put', lv)]:.2f}"
                                      for lv in (16, 64, 256)),
                 f">= 3: {_ok(min(reads) >= 3)}"))  # fmt: skip
    s = r["scale"]
    r5, r7 = s[5] / s[3], s[7] / s[3]
    rows.append(("writes/s at 10,000 outstanding, 3 / 5 / 7 acceptors", THEN["scale"],
                 f"{s[3]:,.0f} / {s[5]:,.0f} / {s[7]:,.0f}", "-",
                 f"{r5:.2f} (>= 0.75: {_ok(r5 >= 0.75)}), "
                 f"{r7:.2f} (>= 0.60: {_ok(r7 >= 0.6)})"))  # fmt: skip
    rows.append(("catch-up, 100k slots behind, by decided slots", THEN["catchup"],
                 f"{r['catchup']:,.0f} slots/s", "target 50,000",
                 f"{r['catchup'] / 50_000:.2f} ({_ok(r['catchup'] >= 50_000)})"))  # fmt: skip
    n = "200,000" if quick else "1,000,000"
    rows.append((f"restart with {n} slots of state (compacted)", "0.13 s",
                 f"{r['restart_s']:.2f} s", "target < 1 s", _ok(r["restart_s"] < 1.0)))  # fmt: skip
    t = r["transfer"]
    bound = t["ours_mb_s"] >= 0.5 * min(t["dd_mb_s"], t["loopback_mb_s"])
    rows.append((f"{t['snapshot_mb']:,.0f} MB snapshot to a wiped node vs dd / loopback copy", "-",
                 f"{t['ours_mb_s']:,.0f} MB/s ({t['ours_s']:.1f} s)",
                 f"dd {t['dd_mb_s']:,.0f} MB/s; loopback {t['loopback_mb_s']:,.0f} MB/s",
                 f"{t['ours_over_dd']:.3f} / {t['ours_over_loopback']:.3f} (disk- or "
                 f"network-bound: {_ok(bound)})"))  # fmt: skip
    print(f"\n## issue 15's table: one run, {r['cpus']} cores, load average "
          f"{r['loadavg_start'][0]:.1f} -> {r['loadavg_end'][0]:.1f}, {r['seconds']} s"
          + (" (--quick: short points)" if quick else ""))  # fmt: skip
    print("\n| measure | when the issue was filed | now | peer, same run | ratio, target |")
    print("|---|---|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
