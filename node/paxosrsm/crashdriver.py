"""A process that runs a 3-node cluster on real storage, for crash tests.

    python -m paxosrsm.crashdriver --dir D --first N --count M [--crash NODE:POINT:K]

Writes key ``k<i>`` = ``v<i>`` for i in [N, N+M) and prints ``ACK <i>`` (flushed)
only after the write is acknowledged. With ``--crash``, the K-th commit of
NODE's storage kills the process with SIGKILL at POINT: ``before_commit``
(records written, not fsynced) or ``after_commit`` (fsynced, nothing sent yet).
The test kills it at random moments too, and then checks with ``--verify``
that every acknowledged write is still there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .config import ClusterConfig
from .local import LocalCluster
from .statemachine import encode_op
from .storage.sqlite import CrashHook
from .types import Kind

CFG = ClusterConfig(n_acceptors=3, snapshot_interval=50, log_retain=10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paxosrsm.crashdriver")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--crash", default=None, help="NODE:POINT:K")
    ap.add_argument("--verify", type=int, default=None, help="check keys 0..N-1 that were acked")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    hook_for = None
    if a.crash:
        node_s, point, k_s = a.crash.split(":")
        target, k = int(node_s), int(k_s)
        seen = {"n": 0}

        def make(nid: int) -> CrashHook | None:
            if nid != target:
                return None

            def hook(where: str) -> None:
                if where == "after_commit":
                    seen["n"] += 1
                if where == point and seen["n"] + (where == "before_commit") >= k:
                    os.kill(os.getpid(), signal.SIGKILL)

            return hook

        hook_for = make

    c = LocalCluster(a.dir, CFG, seed=a.seed, crash_hook=hook_for)
    if a.verify is not None:
        acked = {int(x) for x in sys.stdin.read().split()}
        missing = []
        for i in sorted(acked):
            rep = c.request(2, 10_000_000 + i, Kind.READ, encode_op("get", f"k{i}"))
            if json.loads(rep.result)["value"] != f"v{i}":
                missing.append(i)
        print(json.dumps({"checked": len(acked), "missing": missing}), flush=True)
        return 1 if missing else 0
    # The client's session seq continues from the key index, so a retried
    # write after a restart is recognised by the session table.
    for i in range(a.first, a.first + a.count):
        c.request(1, i + 1, Kind.WRITE, encode_op("put", f"k{i}", f"v{i}"))
        print(f"ACK {i}", flush=True)
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
