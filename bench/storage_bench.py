"""Durability benchmark: fsynced acceptor records per second.

    python bench/storage_bench.py [--records 2000] [--batch 64] [--rounds 5]

Measures, in the same run and on the same disk:
  * ours, group commit: one transaction (one fsync) per batch of records;
  * ours, one fsync per record;
  * LMDB (the engine libpaxos keeps its acceptor log in), the same two ways,
    through the `lmdb` package with sync on.
Each figure is the median of --rounds runs; ratios are printed, as absolute
numbers on a shared machine say little.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from paxosrsm.records import AcceptRec
from paxosrsm.storage import Identity, SQLiteStorage
from paxosrsm.storage.codec import crc32, encode_ballot, encode_value
from paxosrsm.types import Ballot, Command

PAYLOAD = b'{"key":"k","op":"put","value":"' + b"x" * 64 + b'"}'


def records(n: int, start: int = 0) -> list[AcceptRec]:
    b = Ballot(3, 1)
    return [AcceptRec(s, b, (Command(1, s + 1, PAYLOAD),)) for s in range(start, start + n)]


def bench_ours(root: Path, n: int, batch: int) -> float:
    st = SQLiteStorage(root, Identity("bench", 0, 3))
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
        (f"ours, group commit ({b}/fsync)", median_of(r, lambda d: bench_ours(d, n, b))),
        ("ours, one fsync per record", median_of(r, lambda d: bench_ours(d, one, 1))),
    ]
    try:
        import lmdb  # noqa: F401

        rows += [
            (f"LMDB, group commit ({b}/fsync)", median_of(r, lambda d: bench_lmdb(d, n, b))),
            ("LMDB, one fsync per record", median_of(r, lambda d: bench_lmdb(d, one, 1))),
        ]
    except ImportError:
        print("(lmdb not installed: pip install lmdb, or .[bench], to compare with it)")
    print(f"fsynced acceptor records per second, median of {r} rounds, same disk, same run")
    base = rows[1][1]
    for name, rate in rows:
        print(f"  {name:<34} {rate:>10,.0f} rec/s   x{rate / base:6.1f} vs ours one-per-fsync")
    if len(rows) == 4:
        print(f"  group commit, ours / LMDB: {rows[0][1] / rows[2][1]:.2f}")
        print(f"  one per fsync, ours / LMDB: {rows[1][1] / rows[3][1]:.2f}")


if __name__ == "__main__":
    main()
