"""Durable storage on real files: round trips, group commit, damage detection."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from paxosrsm.messages import Session, Snapshot
from paxosrsm.records import (
    AcceptRec,
    DecideRec,
    DurableState,
    IncarnationRec,
    PeerIncRec,
    PromiseRec,
    Record,
    RecoveryRec,
    SnapshotRec,
    TrimRec,
)
from paxosrsm.storage import (
    Identity,
    SQLiteStorage,
    StorageCorrupt,
    StorageMismatch,
)
from paxosrsm.types import Ballot, Command

ID = Identity("c1", 0, 3)


def v(*vals: str) -> tuple[Command, ...]:
    return tuple(Command(7, i + 1, x.encode()) for i, x in enumerate(vals))


RECORDS: list[Record] = [
    IncarnationRec(12345),
    PromiseRec(Ballot(3, 1)),
    AcceptRec(0, Ballot(3, 1), v("a")),
    AcceptRec(1, Ballot(3, 1), v("b", "c")),
    AcceptRec(2, Ballot(3, 1), ()),
    DecideRec(0, v("a")),
    DecideRec(1, v("b", "c")),
    PeerIncRec(2, 999),
    RecoveryRec(False),
]


def filled(path: Path) -> SQLiteStorage:
    st = SQLiteStorage(path, ID)
    assert st.load() == DurableState()
    st.append(RECORDS)
    return st


def test_round_trip_matches_the_fold(tmp_path: Path) -> None:
    filled(tmp_path / "d").close()
    again = SQLiteStorage(tmp_path / "d", ID)
    assert again.load() == DurableState.fold(RECORDS)


def test_group_commit_is_one_fsync_per_append(tmp_path: Path) -> None:
    st = filled(tmp_path / "d")
    assert st.fsyncs == 1
    st.append([AcceptRec(s, Ballot(4, 1), v(str(s))) for s in range(10, 110)])
    assert st.fsyncs == 2


def test_snapshot_trims_the_log_and_survives_restart(tmp_path: Path) -> None:
    st = filled(tmp_path / "d")
    snap = Snapshot(1, b"state-bytes", (Session(7, 2, b"r"),))
    st.append([SnapshotRec(snap, 0), TrimRec(2)])
    st.close()
    again = SQLiteStorage(tmp_path / "d", ID)
    state = again.load()
    assert state.snapshot == snap
    assert state.decided == {}
    assert set(state.accepted) == {2}
    assert state.floor == 2
    assert len(list((tmp_path / "d" / "snapshots").iterdir())) == 1


def test_a_newer_snapshot_replaces_the_older_file(tmp_path: Path) -> None:
    st = filled(tmp_path / "d")
    st.append([SnapshotRec(Snapshot(0, b"s0", ()), 0)])
    st.append([SnapshotRec(Snapshot(1, b"s1", ()), 0)])
    files = [f.name for f in (tmp_path / "d" / "snapshots").iterdir()]
    assert files == [f"snap-{1:020d}.bin"]


def test_orphan_snapshot_from_a_crash_before_commit_is_removed(tmp_path: Path) -> None:
    def boom(point: str) -> None:
        if point == "before_commit":
            raise KeyboardInterrupt("simulated crash")

    st = filled(tmp_path / "d")
    st.crash_hook = boom
    with pytest.raises(KeyboardInterrupt):
        st.append([SnapshotRec(Snapshot(1, b"s1", ()), 0)])
    st.close()
    again = SQLiteStorage(tmp_path / "d", ID)
    assert again.load().snapshot is None, "the transaction never committed"
    assert list((tmp_path / "d" / "snapshots").iterdir()) == []


# ---------------------------------------------------------------- damage


def corrupt_value_byte(db: Path) -> None:
    con = sqlite3.connect(db)
    (blob,) = con.execute("SELECT value FROM votes WHERE slot = 1").fetchone()
    flipped = bytes([blob[0] ^ 0x01]) + blob[1:]
    con.execute("UPDATE votes SET value = ? WHERE slot = 1", (flipped,))
    con.commit()
    con.close()


def test_flipped_bit_in_a_record_is_detected(tmp_path: Path) -> None:
    filled(tmp_path / "d").close()
    corrupt_value_byte(tmp_path / "d" / "paxos.db")
    with pytest.raises(StorageCorrupt, match="checksum mismatch in the vote for slot 1"):
        SQLiteStorage(tmp_path / "d", ID).load()


def test_flipped_bit_in_the_file_is_detected(tmp_path: Path) -> None:
    # Damage on disk, below SQLite: one bit of a record's bytes in the file.
    st = filled(tmp_path / "d")
    marker = b"DISTINCTIVE-PAYLOAD-0123456789"
    st.append([AcceptRec(5, Ballot(3, 1), (Command(9, 1, marker),))])
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.close()
    db = tmp_path / "d" / "paxos.db"
    data = bytearray(db.read_bytes())
    at = data.find(marker)
    assert at > 0
    data[at + 3] ^= 0x04
    db.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt, match="checksum mismatch in the vote for slot 5"):
        SQLiteStorage(tmp_path / "d", ID).load()


def test_damaged_page_structure_is_detected(tmp_path: Path) -> None:
    st = filled(tmp_path / "d")
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.close()
    db = tmp_path / "d" / "paxos.db"
    data = bytearray(db.read_bytes())
    page = 4096
    for off in range(page, len(data), page):
        data[off] = 0x07  # not a valid b-tree page type
    db.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt):
        SQLiteStorage(tmp_path / "d", ID).load()


def test_truncated_database_is_detected(tmp_path: Path) -> None:
    st = filled(tmp_path / "d")
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.close()
    db = tmp_path / "d" / "paxos.db"
    for size in (0, 100, os.path.getsize(db) // 2):
        with open(db, "r+b") as f:
            f.truncate(size)
        with pytest.raises(StorageCorrupt):
            SQLiteStorage(tmp_path / "d", ID).load()


def test_missing_database_is_detected(tmp_path: Path) -> None:
    filled(tmp_path / "d").close()
    for f in (tmp_path / "d").glob("paxos.db*"):
        f.unlink()
    with pytest.raises(StorageCorrupt, match="database is missing"):
        SQLiteStorage(tmp_path / "d", ID)


def test_missing_snapshot_is_detected(tmp_path: Path) -> None:
    st = filled(tmp_path / "d")
    st.append([SnapshotRec(Snapshot(1, b"s1", ()), 0)])
    st.close()
    for f in (tmp_path / "d" / "snapshots").iterdir():
        f.unlink()
    with pytest.raises(StorageCorrupt, match=r"snapshot file .* is missing"):
        SQLiteStorage(tmp_path / "d", ID).load()


def test_truncated_snapshot_is_detected(tmp_path: Path) -> None:
    st = filled(tmp_path / "d")
    st.append([SnapshotRec(Snapshot(1, b"s1" * 100, ()), 0)])
    st.close()
    (f,) = (tmp_path / "d" / "snapshots").iterdir()
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(StorageCorrupt, match="checksum"):
        SQLiteStorage(tmp_path / "d", ID).load()


def test_directory_of_another_cluster_or_node_is_refused(tmp_path: Path) -> None:
    filled(tmp_path / "d").close()
    for other in (Identity("c2", 0, 3), Identity("c1", 1, 3), Identity("c1", 0, 5)):
        with pytest.raises(StorageMismatch, match="Refusing to start"):
            SQLiteStorage(tmp_path / "d", other)


def test_damaged_identity_is_detected(tmp_path: Path) -> None:
    filled(tmp_path / "d").close()
    ident = tmp_path / "d" / "IDENTITY"
    good = ident.read_bytes()
    for bad in (good.replace(b"c1", b"c9"), good + b"x", good[:-3], b""):
        ident.write_bytes(bad)
        with pytest.raises(StorageCorrupt, match="IDENTITY is damaged"):
            SQLiteStorage(tmp_path / "d", ID)


def test_errors_say_how_to_recover_and_quarantine_works(tmp_path: Path) -> None:
    filled(tmp_path / "d").close()
    corrupt_value_byte(tmp_path / "d" / "paxos.db")
    with pytest.raises(StorageCorrupt) as err:
        SQLiteStorage(tmp_path / "d", ID).load()
    assert "quarantine" in str(err.value) and "existing" in str(err.value)
    moved = SQLiteStorage.quarantine(tmp_path / "d")
    assert moved.exists() and not (tmp_path / "d").exists()
    fresh = SQLiteStorage(tmp_path / "d", ID)
    assert fresh.load() == DurableState()


def test_crash_between_identity_and_first_commit_is_a_fresh_directory(tmp_path: Path) -> None:
    SQLiteStorage(tmp_path / "d", ID).close()  # IDENTITY written, nothing committed
    assert SQLiteStorage(tmp_path / "d", ID).load() == DurableState()


def test_torn_final_record_loses_only_the_uncommitted_tail(tmp_path: Path) -> None:
    # A crash mid-write leaves the last WAL frame torn. SQLite's WAL frames
    # carry checksums and a commit marker: recovery must keep every earlier
    # commit and drop the torn one, never apply half of it.
    d = tmp_path / "d"
    st = filled(d)
    st.db.execute("PRAGMA wal_autocheckpoint=0")
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.append([AcceptRec(50, Ballot(4, 1), v("first"))])
    size_after_first = (d / "paxos.db-wal").stat().st_size
    st.append([AcceptRec(51, Ballot(4, 1), v("second" * 50))])
    wal = (d / "paxos.db-wal").read_bytes()
    assert len(wal) > size_after_first
    # Copy the files as a crash would leave them: the second commit torn.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("IDENTITY", "COMMITTED", "paxos.db"):
        (crashed / name).write_bytes((d / name).read_bytes())
    (crashed / "snapshots").mkdir()
    (crashed / "paxos.db-wal").write_bytes(
        wal[: size_after_first + (len(wal) - size_after_first) // 2]
    )
    st.close()
    state = SQLiteStorage(crashed, ID).load()
    assert 50 in state.accepted, "the first commit survives"
    assert 51 not in state.accepted, "the torn commit is dropped whole"
    assert state == DurableState.fold([*RECORDS, AcceptRec(50, Ballot(4, 1), v("first"))])


def test_a_vote_is_a_durable_promise(tmp_path: Path) -> None:
    # Regression: a vote at a higher ballot than the last explicit promise must
    # come back from disk as a promise of that ballot.
    st = filled(tmp_path / "d")
    st.append([AcceptRec(9, Ballot(8, 2), v("x"))])
    st.close()
    assert SQLiteStorage(tmp_path / "d", ID).load().promised == Ballot(8, 2)


def _crashed_writer(path: Path) -> None:
    """A writer process that commits and dies without closing (a crash)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from paxosrsm.storage import Identity, SQLiteStorage
        from paxosrsm.records import AcceptRec, PromiseRec
        from paxosrsm.types import Ballot, Command
        st = SQLiteStorage(Path({str(path)!r}), Identity("c1", 0, 3))
        st.load()
        st.append([PromiseRec(Ballot(5, 1))])
        st.append([AcceptRec(s, Ballot(5, 1), (Command(7, s + 1, b"x"),)) for s in range(145)])
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_wal_after_a_crash_is_a_rollback(tmp_path: Path) -> None:
    """Issue 12: deleting paxos.db-wal after a crash rolled the database back
    (145 votes gone) and the node started as a voter. Now it refuses."""
    d = tmp_path / "d"
    filled(d).close()
    _crashed_writer(d)
    assert (d / "paxos.db-wal").exists() and (d / "OPEN").exists()
    os.unlink(d / "paxos.db-wal")
    with pytest.raises(StorageCorrupt, match="write-ahead log"):
        SQLiteStorage(d, ID)


def test_a_crash_keeps_its_wal_and_a_clean_stop_needs_none(tmp_path: Path) -> None:
    d = tmp_path / "d"
    filled(d).close()
    assert not (d / "OPEN").exists() and not (d / "paxos.db-wal").exists()
    SQLiteStorage(d, ID).close()  # a clean stop without a WAL is fine
    _crashed_writer(d)
    st = SQLiteStorage(d, ID)  # a crash with its WAL is fine
    state = st.load()
    assert state.promised == Ballot(5, 1) and len(state.accepted) == 145
    st.close()
