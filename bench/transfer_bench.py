"""A large snapshot transfer against the disk and the network (issue 15).

    python bench/transfer_bench.py [--mb 1024] [--value-kb 64] [--tls]

Three real node processes start from a seeded snapshot of about --mb MB of
etcd-API state (keys of --value-kb KB each, restored as a backup is). A
follower is then killed, its data directory wiped, and it is started again
under the same id (a replaced volume): it must take the whole snapshot from
a peer over its TCP link (in --max-frame fragments, authenticated), install
it, write it to disk with fsync, and only then vote again.

Measured in the same run, on the same disk and the same loopback:

* ``dd``: ``dd if=/dev/zero bs=1M count=MB conv=fdatasync`` into the data
  directory's file system (the disk's streaming write);
* a loopback TCP copy: one Python socket sending MB in 1 MiB ``sendall``s to
  another that ``recv_into``s a 1 MiB buffer (what iperf measures; the
  kernel's loopback, not Python, is its limit);
* ``ours``: the wiped node's start to its status saying it holds the
  snapshot's slot and is no longer recovering; the rate is the snapshot's
  bytes over that time (the node's own start, about a second, is in it).

Prints each as MB/s and ours as a ratio of each, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from paxosrsm.messages import Snapshot
from paxosrsm.net.proccluster import ProcCluster
from paxosrsm.testing.bigstate import mvcc_state, seed_members
from paxosrsm.testing.certs import self_signed

MB = 1_000_000


def dd_rate(directory: Path, mb: int) -> float:
    target = directory / "dd.bin"
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mb}", "conv=fdatasync"],
        check=True,
        capture_output=True,
    )
    dt = time.perf_counter() - t0
    target.unlink()
    return mb * (1 << 20) / dt / MB


def loopback_rate(mb: int) -> float:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    total = mb * (1 << 20)
    got = [0]

    def sink() -> None:
        conn, _ = srv.accept()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            k = conn.recv_into(view)
            if not k:
                break
            got[0] += k
        conn.close()

    th = threading.Thread(target=sink)
    th.start()
    chunk = os.urandom(1 << 20)
    s = socket.create_connection(srv.getsockname())
    t0 = time.perf_counter()
    for _ in range(mb):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    th.join()
    dt = time.perf_counter() - t0
    s.close()
    srv.close()
    assert got[0] == total, (got[0], total)
    return total / dt / MB


def ours(
    root: Path, state: bytes, slot: int, timeout: float, extra: list[str] | None = None
) -> dict[str, Any]:
    quota = ["--quota-bytes", str(max(2 << 30, 4 * len(state)))]
    c = ProcCluster(root, 3, 0, quota + (extra or []))
    try:
        snap = Snapshot(slot, state, ())
        t0 = time.perf_counter()
        seed_members(root, c.layout["cluster_id"], 3, snap)
        seeded = time.perf_counter() - t0
        c.start_all()
        c.wait_ready(timeout=timeout)
        lead = c.leader()
        assert lead is not None
        victim = next(n for n in range(3) if n != lead)
        c.kill(victim)
        shutil.rmtree(root / f"node-{victim}")
        t0 = time.perf_counter()
        c.start(victim, initial="existing")
        first = None
        while True:
            st = c.status(victim, timeout=1.0)
            now = time.perf_counter() - t0
            if st is not None and first is None:
                first = now
            if st is not None and st["applied"] >= slot and not st["recovering"]:
                break
            if now > timeout or not c.alive(victim):
                raise RuntimeError(f"no catch-up in {now:.0f} s: {st}\n{c.logs()}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        counters = st["counters"]
        keys = ("transfers_sent", "transfers_broken", "transfer_busy", "catchup_deferred")
        peers = {
            n: {k: v for k, v in (c.status(n) or {}).get("counters", {}).items() if k in keys}
            for n in range(3)
        }
        print(f"  counters by node (victim {victim}): {peers}", file=sys.stderr)
        sent = sum(p.get("transfers_sent", 0) for p in peers.values())
        return {
            "seconds": elapsed,
            "first_status_s": first,
            "seed_s": seeded,
            "transfers_received": counters.get("transfers_received", 0),
            "transfers_sent": sent,
        }
    finally:
        c.close()


def measure(
    mb: int, value_kb: int, timeout: float, base: Path, tls: bool = False
) -> dict[str, Any]:
    """The three rates, in this order, in one run (``base``: a work directory
    on the disk to measure; ``tls``: peer links in TLS)."""
    t0 = time.perf_counter()
    state, puts = mvcc_state(mb << 20, value_kb << 10)
    print(f"state: {len(state) / MB:,.1f} MB in {puts:,} keys, built in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)  # fmt: skip
    disk = dd_rate(base, mb)
    print(f"dd (conv=fdatasync):     {disk:8,.0f} MB/s", file=sys.stderr)
    net = loopback_rate(mb)
    print(f"loopback TCP copy:       {net:8,.0f} MB/s", file=sys.stderr)
    size = len(state)
    r = ours(base / "cluster", state, puts, timeout, self_signed(base) if tls else None)
    rate = size / r["seconds"] / MB
    print(f"ours (wiped node, whole snapshot): {rate:8,.0f} MB/s in {r['seconds']:.1f} s "
          f"(node answering after {r['first_status_s']:.1f} s; "
          f"{r['transfers_sent']} transfer(s) sent, {r['transfers_received']} received)",
          file=sys.stderr)  # fmt: skip
    print(f"ours / dd {rate / disk:.3f}   ours / loopback {rate / net:.3f}", file=sys.stderr)
    return {
        "snapshot_mb": round(size / MB, 1),
        "dd_mb_s": round(disk, 1),
        "loopback_mb_s": round(net, 1),
        "ours_mb_s": round(rate, 1),
        "ours_s": round(r["seconds"], 2),
        "ours_over_dd": round(rate / disk, 3),
        "ours_over_loopback": round(rate / net, 4),
        **{k: r[k] for k in ("first_status_s", "transfers_sent", "transfers_received")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024, help="state size in MiB (default 1024)")
    ap.add_argument("--value-kb", type=int, default=64, help="value size in KiB (default 64)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    ap.add_argument("--tls", action="store_true", help="peer links in TLS (a self-signed cert)")
    ns = ap.parse_args()
    base = Path(ns.dir or tempfile.mkdtemp(prefix="transfer-bench-", dir="."))
    base.mkdir(parents=True, exist_ok=True)
    try:
        print(json.dumps(measure(ns.mb, ns.value_kb, ns.timeout, base, ns.tls)))
    finally:
        if not ns.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
