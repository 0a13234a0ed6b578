"""Durability benchmark: fsynced acceptor records per second, and the
latency of one record's commit with three writers on the disk at once.

    python bench/storage_bench.py [--records 2000] [--batch 64] [--rounds 5]

Measures, in the same run and on the same disk, for our two engines (the
append-only log, the default, and SQLite in WAL mode) and LMDB (the engine
libpaxos keeps its acceptor log in, through the `lmdb` package, sync on):
  * group commit: one fsync per batch of records;
  * one fsync per record;
  * three processes at once, one record per fsync each (three members of a
    cluster on one disk, as in the networked benchmarks): p50 commit latency.
Each figure is the median of --rounds runs; ratios are printed, as absolute
numbers on a shared machine say little.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from paxosrsm.records import AcceptRec
from paxosrsm.storage import Identity, LogStorage, SQLiteStorage
from paxosrsm.storage.codec import crc32, encode_ballot, encode_value
from paxosrsm.types import Ballot, Command

PAYLOAD = b'{"key":"k","op":"put","value":"' + b"x" * 64 + b'"}'


def records(n: int, start: int = 0) -> list[AcceptRec]:
    b = Ballot(3, 1)
    return [AcceptRec(s, b, (Command(1, s + 1, PAYLOAD),)) for s in range(start, start + n)]


def bench_ours(root: Path, n: int, batch: int, engine: str = "log") -> float:
    cls = LogStorage if engine == "log" else SQLiteStorage
    st = cls(root, Identity("bench", 0, 3))
    st.load()
    recs = records(n)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        st.append(recs[i : i + batch])
    dt = time.perf_counter() - t0
    st.close()
    return n / dt


def bench_lmdb(root: Path, n: int, batch: int) -> float:
    import lmdb

    env = lmdb.open(str(root), map_size=1 << 30, sync=True, metasync=True)
    recs = records(n)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        with env.begin(write=True) as txn:
            for r in recs[i : i + batch]:
                key = r.slot.to_bytes(8, "big")
                bb, vb = encode_ballot(r.ballot), encode_value(r.value)
                txn.put(key, crc32(key, bb, vb).to_bytes(4, "little") + bb + vb)
    dt = time.perf_counter() - t0
    env.close()
    return n / dt


def _one_writer(engine: str, root: str, n: int, q: multiprocessing.Queue[float]) -> None:
    """One record per commit, a short pause between (as a member under one
    client); puts the p50 latency in microseconds."""
    lat = []
    if engine == "lmdb":
        import lmdb

        env = lmdb.open(root, map_size=1 << 30, sync=True, metasync=True)
        for r in records(n):
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                bb, vb = encode_ballot(r.ballot), encode_value(r.value)
                txn.put(r.slot.to_bytes(8, "big"), bb + vb)
            lat.append(time.perf_counter() - t0)
            time.sleep(0.0005)
        env.close()
    else:
        cls = LogStorage if engine == "log" else SQLiteStorage
        st = cls(Path(root), Identity("bench", 0, 3))
        st.load()
        for r in records(n):
            t0 = time.perf_counter()
            st.append([r])
            lat.append(time.perf_counter() - t0)
            time.sleep(0.0005)
        st.close()
    q.put(statistics.median(lat) * 1e6)


def three_writers(engine: str, n: int) -> float:
    """p50 commit latency (us) with three writers at once; the median of theirs."""
    q: multiprocessing.Queue[float] = multiprocessing.Queue()
    dirs = [Path(tempfile.mkdtemp(prefix="pxbench-", dir=".")) for _ in range(3)]
    try:
        ps = [
            multiprocessing.Process(target=_one_writer, args=(engine, str(d), n, q)) for d in dirs
        ]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        return statistics.median(q.get() for _ in ps)
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def median_of(rounds: int, fn: Callable[[Path], float]) -> float:
    out = []
    for _ in range(rounds):
        d = Path(tempfile.mkdtemp(prefix="pxbench-", dir="."))
        try:
            out.append(fn(d))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    n, b, r = a.records, a.batch, a.rounds
    one = max(200, n // 10)  # one fsync per record is slow: fewer records
    rows = [
        (f"log, group commit ({b}/fsync)", median_of(r, lambda d: bench_ours(d, n, b))),
        ("log, one fsync per record", median_of(r, lambda d: bench_ours(d, one, 1))),
        (f"SQLite, group commit ({b}/fsync)", median_of(r, lambda d: bench_ours(d, n, b, "sq"))),
        ("SQLite, one fsync per record", median_of(r, lambda d: bench_ours(d, one, 1, "sq"))),
    ]
    engines = ["log", "sqlite"]
    try:
        import lmdb  # noqa: F401

        rows += [
            (f"LMDB, group commit ({b}/fsync)", median_of(r, lambda d: bench_lmdb(d, n, b))),
            ("LMDB, one fsync per record", median_of(r, lambda d: bench_lmdb(d, one, 1))),
        ]
        engines.append("lmdb")
    except ImportError:
        print("(lmdb not installed: pip install lmdb, or .[bench], to compare with it)")
    print(f"fsynced acceptor records per second, median of {r} rounds, same disk, same run")
    base = rows[3][1]
    for name, rate in rows:
        print(f"  {name:<34} {rate:>10,.0f} rec/s   x{rate / base:6.1f} vs SQLite one-per-fsync")
    lat = {e: statistics.median(three_writers(e, one) for _ in range(r)) for e in engines}
    print("three writers on the disk at once, one record per fsync: p50 commit latency")
    for e, us in lat.items():
        print(f"  {e:<8} {us:>8,.0f} us   x{us / lat['log']:5.2f} of the log's")
    print(f"  group commit, log / SQLite: {rows[0][1] / rows[2][1]:.2f}")
    print(f"  one per fsync, log / SQLite: {rows[1][1] / rows[3][1]:.2f}")
    if len(rows) == 6:
        print(f"  group commit, log / LMDB: {rows[0][1] / rows[4][1]:.2f}")
        print(f"  one per fsync, log / LMDB: {rows[1][1] / rows[5][1]:.2f}")


if __name__ == "__main__":
    main()
