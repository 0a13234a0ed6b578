"""A large etcd-API state, made through the store's own write path, and
data directories seeded with it as a restore seeds them (the snapshot
transfer test and ``bench/transfer_bench.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack  # type: ignore[import-untyped]

from ..messages import Snapshot
from ..mvcc import TAG, MVCCStore
from ..storage import Identity
from ..storage.backup import seed_member


def mvcc_state(total: int, value_size: int) -> tuple[bytes, int]:
    """A store holding about ``total`` bytes of values (``value_size`` each,
    keys ``/bench/00000000``...): its snapshot bytes and the number of puts."""
    store = MVCCStore()
    pool = os.urandom(value_size + 4096)
    n = max(1, total // value_size)
    for i in range(n):
        off = (i * 7919) % 4096
        req = {
            "op": "put",
            "key": f"/bench/{i:08d}".encode(),
            "value": pool[off : off + value_size],
        }
        out = store.apply(TAG + msgpack.packb(req, use_bin_type=True))
        if b"error" in out[:64]:
            raise RuntimeError(f"put {i} refused: {out[:200]!r}")
    return store.snapshot(), n


def seed_members(root: Path, cluster_id: str, members: int, snap: Snapshot) -> None:
    """``root/node-N`` for every member: a new cluster starting from ``snap``."""
    for nid in range(members):
        seed_member(root / f"node-{nid}", Identity(cluster_id, nid, members), snap)
