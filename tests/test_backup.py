"""Backup files and restores, on real files (SQLite, fsync): the file's checks,
and a new cluster seeded from a backup that keeps every write and takes new ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_restart import get, put, states

from paxosrsm.config import ClusterConfig
from paxosrsm.local import LocalCluster
from paxosrsm.storage import Identity, SQLiteStorage
from paxosrsm.storage.backup import (
    ALIGN,
    DIGEST,
    BackupError,
    encode_backup,
    parse_backup,
    read_backup,
    seed_member,
    write_backup_file,
)


def _backup_of(c: LocalCluster, tmp: Path) -> Path:
    lead = c.wait_leader()
    snap = c.nodes[lead].export_snapshot()
    assert snap is not None
    info, chunks = encode_backup(
        snap, cluster_id=c.cluster_id, revision=None, node=lead, state_machine="kv"
    )
    f = tmp / "b.pxbackup"
    write_backup_file(f, chunks)
    assert f.stat().st_size == info.size and info.size % ALIGN == DIGEST
    return f


def test_a_restored_cluster_has_every_write_and_takes_new_ones(tmp_path: Path) -> None:
    cfg = ClusterConfig(n_acceptors=3, snapshot_interval=7, log_retain=3)
    old = LocalCluster(tmp_path / "old", cfg, cluster_id="old")
    for i in range(40):
        put(old, 1, i + 1, f"k{i % 5}", str(i))
    f = _backup_of(old, tmp_path)
    put(old, 1, 41, "k0", "after-the-backup")
    old.close()

    info, snap = read_backup(f)
    assert info.cluster_id == "old" and info.slot == snap.slot and info.slot >= 40
    for nid in range(3):
        seed_member(tmp_path / "new" / f"node-{nid}", Identity("new", nid, 3), snap)
    new = LocalCluster(tmp_path / "new", cfg, cluster_id="new", seed=5)
    assert {n.applied for n in new.nodes.values()} == {info.slot}
    assert not any(n.recovering for n in new.nodes.values())
    assert [get(new, 2, i + 1, f"k{i}") for i in range(5)] == ["35", "36", "37", "38", "39"]
    put(new, 3, 1, "k0", "new")  # a new client; the old one's session is kept too
    put(new, 1, 41, "k1", "same-session")
    assert get(new, 2, 6, "k0") == "new" and get(new, 2, 7, "k1") == "same-session"
    new.run(30)
    assert len(states(new)) == 1
    new.close()
    # The old cluster's directories are refused by the new identity, and back.
    with pytest.raises(Exception, match="belongs to cluster 'old'"):
        SQLiteStorage(tmp_path / "old" / "node-0", Identity("new", 0, 3))


def test_a_restore_never_writes_over_a_member(tmp_path: Path) -> None:
    cfg = ClusterConfig(n_acceptors=3)
    c = LocalCluster(tmp_path / "c", cfg, cluster_id="c")
    put(c, 1, 1, "a", "1")
    _, snap = parse_backup((_backup_of(c, tmp_path)).read_bytes())
    c.close()
    with pytest.raises(BackupError, match="not empty"):
        seed_member(tmp_path / "c" / "node-0", Identity("c2", 0, 3), snap)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b[:-1], "512k\\+32"),
        (lambda b: b[:-ALIGN], "file checksum"),
        (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "file checksum"),
        (lambda b: b"X" + b[1:], "not a paxosrsm backup"),
        (lambda b: b + b"\0" * ALIGN, "512k\\+32|file checksum"),
    ],
)
def test_a_damaged_backup_is_refused_with_the_reason(
    tmp_path: Path, damage: object, reason: str
) -> None:
    c = LocalCluster(tmp_path / "c", ClusterConfig(n_acceptors=3), cluster_id="c")
    for i in range(5):
        put(c, 1, i + 1, "k", "v" * 300)
    data = _backup_of(c, tmp_path).read_bytes()
    c.close()
    parse_backup(data)
    assert callable(damage)
    with pytest.raises(BackupError, match=reason):
        parse_backup(damage(data))


def test_a_payload_changed_under_a_recomputed_file_digest_is_refused(tmp_path: Path) -> None:
    """The inner digest guards the payload even if someone re-seals the file."""
    import hashlib

    c = LocalCluster(tmp_path / "c", ClusterConfig(n_acceptors=3), cluster_id="c")
    put(c, 1, 1, "k", "value-one")
    data = bytearray(_backup_of(c, tmp_path).read_bytes())
    c.close()
    i = data.find(b"value-one")
    data[i] = ord("V")
    body = bytes(data[:-DIGEST])
    resealed = body + hashlib.sha256(body).digest()
    with pytest.raises(BackupError, match="payload checksum"):
        parse_backup(resealed)


def test_an_empty_read_answers_the_read_index_a_backup_waits_for(tmp_path: Path) -> None:
    """The barrier of a backup: an empty READ answers the read index, at or
    above the slot of every write acknowledged before it - ahead of a lagging
    follower, which must catch up before it exports."""
    from paxosrsm.types import Kind

    c = LocalCluster(tmp_path / "c", ClusterConfig(n_acceptors=3), cluster_id="c")
    lead = c.wait_leader()
    lag = next(n for n in c.nodes if n != lead)
    c.partitioned.add(lag)
    for i in range(10):
        put(c, 1, i + 1, "k", str(i))
    last = c.nodes[lead].applied
    idx = int(c.request(2, 1, Kind.READ, b"").result)
    assert idx >= last and c.nodes[lag].applied < idx
    c.partitioned.discard(lag)
    c.run(50)
    assert c.nodes[lag].applied >= idx
    snap = c.nodes[lag].export_snapshot()
    assert snap is not None and snap.slot >= idx
    c.close()
