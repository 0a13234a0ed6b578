"""Recovery benchmarks on real storage.

    python bench/recovery_bench.py [--slots 1000000] [--behind 100000] [--rounds 3]

1. Restart time of a node that holds --slots slots' worth of state:
   (a) compacted, as the default configuration keeps it: a snapshot of the
       state after --slots slots (one key per 10 slots) plus the retained tail;
   (b) not compacted: every decided slot in the log, replayed on restart.
   Restart = open the data directory, verify every checksum, rebuild the node
   (restore the snapshot, replay the log).
2. Catch-up speed of a node --behind slots behind, in slots per second:
   (a) by decided slots (the peers still hold them in their logs);
   (b) by snapshot (the peers compacted): install it, then the slots after.
   Three real nodes on real storage (--storage-engine log, the default, or
   sqlite), in one process (messages in memory).

Figures are medians of --rounds runs. The target for 2(a) is >= 50,000 slots/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from paxosrsm.config import ClusterConfig
from paxosrsm.local import LocalCluster
from paxosrsm.messages import Session, Snapshot
from paxosrsm.node import Node
from paxosrsm.records import DecideRec, IncarnationRec, Record, SnapshotRec
from paxosrsm.statemachine import encode_op
from paxosrsm.storage import Identity, Storage, open_storage
from paxosrsm.types import Command

#: The storage engine of every data directory made here (--storage-engine).
ENGINE = "log"


def cmd(slot: int) -> Command:
    return Command(1, slot + 1, encode_op("put", f"key{slot % 100_000}", f"value-{slot}"))


def fill(store: Storage, start: int, n: int, chunk: int = 20_000) -> None:
    for i in range(start, start + n, chunk):
        store.append([DecideRec(s, (cmd(s),)) for s in range(i, min(i + chunk, start + n))])


def build_uncompacted(d: Path, slots: int) -> None:
    st = open_storage(d, Identity("bench", 0, 3), ENGINE)
    st.load()
    st.append([IncarnationRec(1)])
    fill(st, 0, slots)
    st.close()


def build_compacted(d: Path, slots: int, retain: int = 200) -> None:
    st = open_storage(d, Identity("bench", 0, 3), ENGINE)
    st.load()
    keys = {f"key{s % 100_000}": f"value-{s}" for s in range(max(0, slots - 100_000), slots)}
    state = json.dumps(keys, separators=(",", ":"), sort_keys=True).encode()
    snap = Snapshot(slots - 1, state, (Session(1, slots, b'{"ok":true,"value":null}'),))
    recs: list[Record] = [IncarnationRec(1), SnapshotRec(snap, retain)]
    st.append(recs)
    fill(st, slots - retain, retain)
    st.close()


def restart_seconds(d: Path, cfg: ClusterConfig) -> tuple[float, int]:
    t0 = time.perf_counter()
    st = open_storage(d, Identity("bench", 0, 3), ENGINE)
    state = st.load()
    node = Node(cfg, 0, state)
    dt = time.perf_counter() - t0
    st.close()
    return dt, node.applied


def catchup_rate(d: Path, behind: int, compacted: bool) -> tuple[float, int]:
    cfg = ClusterConfig(
        n_acceptors=3,
        # The largest interval a valid configuration allows; peers keep the
        # whole log (log_retain) when catch-up is to go by decided slots.
        snapshot_interval=min(behind // 2, 49_000) if compacted else 49_000,
        log_retain=100 if compacted else 10 * behind,
        catchup_batch=1024,
    )
    c = LocalCluster(d, cfg, engine=ENGINE)
    lead = c.wait_leader()
    lag = next(n for n in cfg.node_ids if n != lead)
    c.stop(lag)
    # Fill the running nodes' logs directly (the protocol path for 100k writes
    # would dominate the run); then tell the lagging node what is decided.
    base = max(n.applied for n in c.nodes.values()) + 1  # after the leader's no-op
    for nid, node in c.nodes.items():
        assert node.replica is not None
        for s in range(base, base + behind):
            node.replica.decide(s, (cmd(s),))
        c._flush(nid)
    c.start(lag)
    node = c.nodes[lag]
    assert node.replica is not None
    t0 = time.perf_counter()
    c.run(1)
    while node.applied < base + behind - 1:
        c.tick()
        if time.perf_counter() - t0 > 600:
            raise TimeoutError("catch-up did not finish")
    dt = time.perf_counter() - t0
    c.close()
    return behind / dt, node.applied + 1 - base


def rounds(n: int, fn):  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        d = Path(tempfile.mkdtemp(prefix="pxrec-", dir="."))
        try:
            out.append(fn(d))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=1_000_000)
    ap.add_argument("--behind", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=("restart", "catchup"), default=None)
    ap.add_argument("--storage-engine", choices=("log", "sqlite"), default="log")
    a = ap.parse_args()
    global ENGINE
    ENGINE = a.storage_engine
    print(f"storage engine: {ENGINE}")
    # No snapshot on disk, every slot replayed (the replica still snapshots
    # every 49,000 slots while it replays: the largest valid interval).
    cfg_big = ClusterConfig(n_acceptors=3, snapshot_interval=49_000, log_retain=10 * a.slots)
    cfg_def = ClusterConfig(n_acceptors=3)

    def restart(build, cfg):  # type: ignore[no-untyped-def]
        def run(d: Path) -> tuple[float, int]:
            build(d, a.slots)
            return restart_seconds(d, cfg)

        return run

    if a.only != "catchup":
        bench_restart(a, cfg_big, cfg_def, restart)
    if a.only != "restart":
        bench_catchup(a)


def bench_restart(a, cfg_big, cfg_def, restart):  # type: ignore[no-untyped-def]
    print(f"1. restart of a node holding {a.slots:,} slots of state (median of {a.rounds})")
    for name, build, cfg in (
        ("compacted (snapshot + 200-slot tail)", build_compacted, cfg_def),
        ("not compacted (replay every slot)", build_uncompacted, cfg_big),
    ):
        res = rounds(a.rounds, restart(build, cfg))
        applied = res[0][1]
        assert applied == a.slots - 1, f"restart applied {applied}, expected {a.slots - 1}"
        print(f"   {name:<40} {statistics.median(r[0] for r in res):7.2f} s")


def bench_catchup(a):  # type: ignore[no-untyped-def]
    print(f"2. catch-up of a node {a.behind:,} slots behind (median of {a.rounds})")
    for name, compacted in (("by decided slots", False), ("by snapshot + tail", True)):
        res = rounds(a.rounds, lambda d, c=compacted: catchup_rate(d, a.behind, c))
        assert all(r[1] >= a.behind for r in res)  # a leader no-op may add a slot
        rate = statistics.median(r[0] for r in res)
        print(f"   {name:<40} {rate:>10,.0f} slots/s")


if __name__ == "__main__":
    main()
