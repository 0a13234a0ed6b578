"""Inspect or set aside a node's data directory.

    python -m paxosrsm.storage check DIR --cluster ID --node N --acceptors K
    python -m paxosrsm.storage quarantine DIR

`check` verifies the identity and every checksum and prints a summary; it
exits 1 with the reason if the directory is damaged or belongs elsewhere.
`quarantine` moves a damaged directory aside, so that the node can start
empty with initial-cluster-state=existing and recover from its peers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import LogStorage, engine_of, open_storage
from .sqlite import Identity, SQLiteStorage, StorageError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paxosrsm.storage")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="verify a data directory")
    c.add_argument("dir")
    c.add_argument("--cluster", help="cluster id (default: the one in IDENTITY)")
    c.add_argument("--node", type=int)
    c.add_argument("--acceptors", type=int)
    q = sub.add_parser("quarantine", help="move a damaged data directory aside")
    q.add_argument("dir")
    a = ap.parse_args(argv)
    path = Path(a.dir)
    if not path.is_dir():
        print(f"error: {path} is not a directory", file=sys.stderr)
        return 2
    if a.cmd == "quarantine":
        print(f"moved to {SQLiteStorage.quarantine(path)}")
        return 0
    try:
        found = json.loads((path / "IDENTITY").read_bytes().split(b"\n")[0])
    except (OSError, ValueError, IndexError) as e:
        print(f"error: {path}/IDENTITY unreadable: {e}", file=sys.stderr)
        return 1
    ident = Identity(
        a.cluster or str(found.get("cluster_id")),
        a.node if a.node is not None else int(found.get("node_id", -1)),
        a.acceptors if a.acceptors is not None else int(found.get("n_acceptors", 0)),
    )
    engine = engine_of(path)
    if engine is None:
        print(f"DAMAGED: {path} holds neither paxos.log nor paxos.db", file=sys.stderr)
        return 1
    try:
        # The log engine is opened read-only: a check never writes, even
        # next to a running node (it is meant for a stopped one).
        st = (
            LogStorage(path, ident, read_only=True)
            if engine == "log"
            else open_storage(path, ident, engine)
        )
        state = st.load()
    except StorageError as e:
        print(f"DAMAGED: {e}", file=sys.stderr)
        return 1
    votes, decided = st.row_counts()
    snap = state.snapshot.slot if state.snapshot else None
    print(
        f"ok: engine={engine} cluster={ident.cluster_id} node={ident.node_id} "
        f"incarnation={state.inc} "
        f"promised={state.promised} floor={state.floor} votes={votes} decided={decided} "
        f"snapshot_slot={snap} recovering={state.recovering}"
    )
    if isinstance(st, LogStorage) and st.torn_at is not None:
        print(f"note: a torn last batch at offset {st.torn_at} (a write never acknowledged); "
              "the node drops it at its next start")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
