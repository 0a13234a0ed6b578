"""Durable storage on SQLite in WAL mode (the standard library's sqlite3).

Layout of a data directory:

    IDENTITY            cluster id, node id, acceptor count; written once, fsynced
    COMMITTED           written after the first durable commit
    OPEN                written after a run's first commit, removed at a clean
                        stop: with it, a missing write-ahead log means the
                        database rolled back (issue 12), and the node refuses it
    paxos.db (+ -wal)   meta, votes and decided tables; every row has a CRC32
    snapshots/snap-<slot>.bin   the current snapshot (header with its own CRC32)

Writes: ``append(records)`` applies one Ready's records (or several, merged by
the runtime) in ONE transaction, so one fsync covers them all (group commit,
``synchronous=FULL``). A snapshot file is written to a temporary name,
fsynced, renamed, and the directory fsynced, before the transaction that
points to it commits; a crash in between leaves an orphan file that the next
open removes.

Reads: ``load()`` verifies every checksum and the identity before it returns
anything; a mismatch raises ``StorageCorrupt`` or ``StorageMismatch`` with a
message that says what to do, and the node must not start as a voter.

Why SQLite and not a log of our own: it already handles torn writes (WAL
frames carry checksums and a commit marker), atomic multi-row commits and
space reuse after deletes, it ships with Python, and its group-commit
throughput is measured in ``bench/storage_bench.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..messages import Snapshot
from ..records import (
    AcceptRec,
    BallotRec,
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
from ..types import ZERO_BALLOT
from .codec import (
    CodecError,
    crc32,
    decode_ballot,
    decode_snapshot,
    decode_value,
    encode_ballot,
    encode_snapshot_parts,
    encode_value,
)

FORMAT = 1
_SLOT = struct.Struct("<q")
_SNAP_MAGIC = b"PXSNAP01"
_SNAP_HEAD = struct.Struct("<QQI")  # slot, payload length, payload crc

#: Fault injection for crash tests: called with "before_commit" (records
#: written, not yet fsynced) and "after_commit" (durable, replies not yet sent).
CrashHook = Callable[[str], None]


class StorageError(Exception):
    """The data directory cannot be used. The message says why and what to do."""


class StorageCorrupt(StorageError):
    pass


class StorageMismatch(StorageError):
    pass


@dataclass(frozen=True, slots=True)
class Identity:
    cluster_id: str
    node_id: int
    n_acceptors: int

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "cluster_id": self.cluster_id,
            "node_id": self.node_id,
            "n_acceptors": self.n_acceptors,
        }
        return json.dumps(body, sort_keys=True).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes | list[bytes]) -> None:
    """temp file, fsync, rename, fsync the directory (``data``: the bytes,
    or pieces of them written in order)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        for piece in [data] if isinstance(data, bytes) else data:
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _recovery_hint(path: Path) -> str:
    return (
        f"The node must not vote with this data. To rejoin safely, move it aside with "
        f"`python -m paxosrsm.storage quarantine {path}` and start the node with "
        f"initial-cluster-state=existing: it will recover from its peers before voting."
    )


def write_snapshot_file(path: Path, snap: Snapshot) -> str:
    """Write ``snap`` under ``path/snapshots`` (temporary name, fsync, rename,
    directory fsync); returns its file name."""
    parts = encode_snapshot_parts(snap)
    name = f"snap-{snap.slot:020d}.bin"
    head = _SNAP_MAGIC + _SNAP_HEAD.pack(snap.slot, sum(map(len, parts)), crc32(*parts))
    _write_atomic(path / "snapshots" / name, [head, *parts])
    return name


def read_snapshot_file(
    path: Path, name: str, slot: int, bad: Callable[[str], StorageCorrupt]
) -> Snapshot:
    """Read and verify the snapshot file ``name`` that must hold ``slot``."""
    f = path / "snapshots" / name
    if not f.exists():
        raise bad(f"snapshot file {name} (slot {slot}) is missing")
    data = f.read_bytes()
    head = len(_SNAP_MAGIC) + _SNAP_HEAD.size
    if len(data) < head or not data.startswith(_SNAP_MAGIC):
        raise bad(f"snapshot file {name} is truncated or not a snapshot")
    s, ln, crc = _SNAP_HEAD.unpack_from(data, len(_SNAP_MAGIC))
    payload = memoryview(data)[head:]
    if s != slot or ln != len(payload) or crc32(payload) != crc:
        raise bad(f"snapshot file {name} fails its checksum (truncated or damaged)")
    snap = decode_snapshot(payload)
    if snap.slot != slot:
        raise bad(f"snapshot file {name} holds slot {snap.slot}, expected {slot}")
    return snap


def check_identity(path: Path, identity: Identity, store: str) -> bool:
    """Check (or write, in a new directory) IDENTITY; returns whether the
    directory is fresh (nothing durable in it yet). ``store`` names the
    engine's main file."""
    ident = path / "IDENTITY"
    db_exists = (path / store).exists()
    if not ident.exists():
        if db_exists and (path / store).stat().st_size > 0:
            raise StorageCorrupt(
                f"{path}: IDENTITY is missing but a database is present. " + _recovery_hint(path)
            )
        body = identity.to_json()
        _write_atomic(ident, body + b"\n" + str(crc32(body)).encode() + b"\n")
        return True
    raw = ident.read_bytes().split(b"\n")
    try:
        if len(raw) != 3 or raw[2] != b"":
            raise ValueError("unexpected layout (truncated or extra bytes)")
        body, crc = raw[0], int(raw[1])
        if crc32(body) != crc:
            raise ValueError("checksum mismatch")
        found = json.loads(body)
    except (ValueError, IndexError) as e:
        raise StorageCorrupt(f"{path}/IDENTITY is damaged ({e}). " + _recovery_hint(path)) from e
    want = json.loads(identity.to_json())
    if found != want:
        raise StorageMismatch(
            f"{path} belongs to cluster {found.get('cluster_id')!r} node "
            f"{found.get('node_id')} ({found.get('n_acceptors')} acceptors, format "
            f"{found.get('format')}), not to cluster {identity.cluster_id!r} node "
            f"{identity.node_id} ({identity.n_acceptors} acceptors). "
            "Refusing to start: point the node at its own data directory."
        )
    # COMMITTED is written after the first durable commit: before it, the
    # directory holds nothing that matters; after it, an empty or missing
    # database means lost data, never a new node.
    fresh = not (path / "COMMITTED").exists()
    if not db_exists and not fresh:
        raise StorageCorrupt(
            f"{path}: the database is missing but the directory was in use. " + _recovery_hint(path)
        )
    return fresh


class SQLiteStorage:
    def __init__(
        self, path: str | os.PathLike[str], identity: Identity, crash_hook: CrashHook | None = None
    ) -> None:
        self.path = Path(path)
        self.identity = identity
        self.crash_hook = crash_hook
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "snapshots").mkdir(exist_ok=True)
        self._check_identity()
        self._check_rollback()
        self.open_marked = False
        try:
            self.db = sqlite3.connect(
                # The networked node appends from one disk thread; calls never overlap.
                self.path / "paxos.db",
                isolation_level=None,
                check_same_thread=False,
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB NOT NULL,
                                                crc INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS votes(slot INTEGER PRIMARY KEY, ballot BLOB NOT NULL,
                                                 value BLOB NOT NULL, crc INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS decided(slot INTEGER PRIMARY KEY, value BLOB NOT NULL,
                                                   crc INTEGER NOT NULL);
                """
            )
        except sqlite3.DatabaseError as e:
            raise StorageCorrupt(
                f"{self.path}: database unreadable ({e}). " + _recovery_hint(self.path)
            ) from e
        self.snapshot_file: str | None = None
        self.fsyncs = 0

    # ------------------------------------------------------------ identity

    def _check_identity(self) -> None:
        self.fresh = check_identity(self.path, self.identity, "paxos.db")

    def _check_rollback(self) -> None:
        """A run that committed and did not stop cleanly leaves its
        write-ahead log behind (SQLite keeps ``paxos.db-wal`` while the
        database is open, and deletes it at a clean close). Without it, the
        commits since the last checkpoint are gone - the database went back
        in time, and the promises and votes it lost may have been counted
        (issue 12: deleting the WAL after a crash lost 145 votes, and the
        node voted again). Refuse it: the remedy is the lost-disk path."""
        if (self.path / "OPEN").exists() and not (self.path / "paxos.db-wal").exists():
            raise StorageCorrupt(
                f"{self.path}: the write-ahead log of an unclean stop is missing; the "
                "database may have rolled back past promises and votes it made. "
                + _recovery_hint(self.path)
            )

    # ------------------------------------------------------------ writing

    def _meta(self, k: str, v: bytes) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta(k, v, crc) VALUES (?, ?, ?)",
            (k, v, crc32(k.encode(), v)),
        )

    def append(self, records: Sequence[Record]) -> None:
        """Make ``records`` durable, in order, with one fsync."""
        if not records:
            return
        old_snapshots: list[str] = []
        db = self.db
        votes: list[tuple[int, bytes, bytes, int]] = []
        decided: list[tuple[int, bytes, int]] = []

        def flush_rows() -> None:
            # Runs of votes and decisions go in with one executemany each;
            # order against the other records is kept by flushing before them.
            if votes:
                db.executemany(
                    "INSERT OR REPLACE INTO votes(slot, ballot, value, crc) VALUES (?,?,?,?)",
                    votes,
                )
                votes.clear()
            if decided:
                db.executemany(
                    "INSERT OR REPLACE INTO decided(slot, value, crc) VALUES (?,?,?)", decided
                )
                decided.clear()

        db.execute("BEGIN IMMEDIATE")
        try:
            for r in records:
                if isinstance(r, AcceptRec):
                    sb = _SLOT.pack(r.slot)
                    bb = encode_ballot(r.ballot)
                    vb = encode_value(r.value)
                    votes.append((r.slot, bb, vb, crc32(sb, bb, vb)))
                    continue
                if isinstance(r, DecideRec):
                    sb = _SLOT.pack(r.slot)
                    vb = encode_value(r.value)
                    decided.append((r.slot, vb, crc32(sb, vb)))
                    continue
                flush_rows()
                if isinstance(r, PromiseRec):
                    self._meta("promised", encode_ballot(r.ballot))
                elif isinstance(r, BallotRec):
                    self._meta("proposer_ballot", encode_ballot(r.ballot))
                elif isinstance(r, TrimRec):
                    self._meta("floor", _SLOT.pack(r.floor))
                    db.execute("DELETE FROM votes WHERE slot < ?", (r.floor,))
                elif isinstance(r, SnapshotRec):
                    name = self._write_snapshot(r.snapshot)
                    if self.snapshot_file and self.snapshot_file != name:
                        old_snapshots.append(self.snapshot_file)
                    self._meta("snapshot", json.dumps([name, r.snapshot.slot]).encode())
                    db.execute(
                        "DELETE FROM decided WHERE slot <= ?", (r.snapshot.slot - r.log_retain,)
                    )
                    self.snapshot_file = name
                elif isinstance(r, IncarnationRec):
                    self._meta("inc", str(r.inc).encode())
                elif isinstance(r, PeerIncRec):
                    self._meta(f"peer_inc:{r.acceptor}", str(r.inc).encode())
                elif isinstance(r, RecoveryRec):
                    self._meta("recovering", b"1" if r.active else b"0")
                else:  # pragma: no cover - exhaustive
                    raise TypeError(f"unknown record {r!r}")
            flush_rows()
            if self.crash_hook is not None:
                self.crash_hook("before_commit")
            db.execute("COMMIT")  # the fsync (WAL, synchronous=FULL)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.fsyncs += 1
        if self.fresh:
            # From now on an empty database means damage, not a new directory.
            _write_atomic(self.path / "COMMITTED", b"1\n")
            self.fresh = False
        if not self.open_marked:
            # From now on until a clean stop, the WAL must be there (above).
            _write_atomic(self.path / "OPEN", b"1\n")
            self.open_marked = True
        if self.crash_hook is not None:
            self.crash_hook("after_commit")
        for name in old_snapshots:
            (self.path / "snapshots" / name).unlink(missing_ok=True)
        if old_snapshots or any(isinstance(r, SnapshotRec) for r in records):
            # Compaction: the rows below the snapshot are gone; fold the WAL
            # back into the database and truncate it, so that the WAL does not
            # grow without bound either.
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _write_snapshot(self, snap: Snapshot) -> str:
        return write_snapshot_file(self.path, snap)

    # ------------------------------------------------------------ reading

    def load(self) -> DurableState:
        """Read and verify everything. Raises StorageCorrupt on any damage."""
        try:
            return self._load()
        except sqlite3.DatabaseError as e:
            raise StorageCorrupt(
                f"{self.path}: database damaged ({e}). " + _recovery_hint(self.path)
            ) from e
        except CodecError as e:
            raise StorageCorrupt(
                f"{self.path}: a record does not decode ({e}). " + _recovery_hint(self.path)
            ) from e

    def _bad(self, what: str) -> StorageCorrupt:
        return StorageCorrupt(f"{self.path}: {what}. " + _recovery_hint(self.path))

    def _load(self) -> DurableState:
        (check,) = self.db.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise self._bad(f"SQLite integrity check failed: {check}")
        st = DurableState()
        meta: dict[str, bytes] = {}
        for k, v, crc in self.db.execute("SELECT k, v, crc FROM meta"):
            if crc32(k.encode(), v) != crc:
                raise self._bad(f"checksum mismatch in meta row {k!r}")
            meta[k] = v
        if not self.fresh and "inc" not in meta:
            raise self._bad("the database holds no incarnation although the directory is in use")
        if "inc" in meta:
            st.inc = int(meta["inc"])
        st.promised = decode_ballot(meta["promised"]) if "promised" in meta else ZERO_BALLOT
        st.floor = _SLOT.unpack(meta["floor"])[0] if "floor" in meta else 0
        if "proposer_ballot" in meta:
            st.proposer_ballot = decode_ballot(meta["proposer_ballot"])
        st.recovering = meta.get("recovering") == b"1"
        for k, v in meta.items():
            if k.startswith("peer_inc:"):
                st.peer_inc[int(k.split(":", 1)[1])] = int(v)
        for slot, bb, vb, crc in self.db.execute("SELECT slot, ballot, value, crc FROM votes"):
            if crc32(_SLOT.pack(slot), bb, vb) != crc:
                raise self._bad(f"checksum mismatch in the vote for slot {slot}")
            ballot = decode_ballot(bb)
            st.accepted[slot] = (ballot, decode_value(vb))
            if ballot > st.promised:
                st.promised = ballot  # a vote at b is a promise of b, as in DurableState
        for slot, vb, crc in self.db.execute("SELECT slot, value, crc FROM decided"):
            if crc32(_SLOT.pack(slot), vb) != crc:
                raise self._bad(f"checksum mismatch in decided slot {slot}")
            st.decided[slot] = decode_value(vb)
        if "snapshot" in meta:
            name, slot = json.loads(meta["snapshot"])
            st.snapshot = self._read_snapshot(str(name), int(slot))
            self.snapshot_file = str(name)
        for f in (self.path / "snapshots").iterdir():
            if f.name != self.snapshot_file:
                f.unlink()  # left by a crash before its transaction committed
        return st

    def _read_snapshot(self, name: str, slot: int) -> Snapshot:
        return read_snapshot_file(self.path, name, slot, self._bad)

    # ------------------------------------------------------------ misc

    def row_counts(self) -> tuple[int, int]:
        (votes,) = self.db.execute("SELECT COUNT(*) FROM votes").fetchone()
        (decided,) = self.db.execute("SELECT COUNT(*) FROM decided").fetchone()
        return int(votes), int(decided)

    def used_bytes(self) -> int:
        """The bytes this store holds (what the storage quota counts): the
        database's pages in use (free pages are reused, not counted), its
        WAL, and the snapshot files. Deletes lower it once a snapshot no
        longer holds the deleted keys and the log below it is trimmed."""
        (pages,) = self.db.execute("PRAGMA page_count").fetchone()
        (free,) = self.db.execute("PRAGMA freelist_count").fetchone()
        (size,) = self.db.execute("PRAGMA page_size").fetchone()
        total = (int(pages) - int(free)) * int(size)
        for p in (self.path / "paxos.db-wal", *(self.path / "snapshots").iterdir()):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def disk_usage(self) -> int:
        """Bytes of the data directory's files. A file removed while it is
        counted (an old snapshot, at a compaction) counts as gone."""
        total = 0
        for p in self.path.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
        return total

    def close(self) -> None:
        if self.open_marked:
            # Before the close, which deletes the WAL: a crash in between
            # must not look like a rollback.
            (self.path / "OPEN").unlink(missing_ok=True)
            _fsync_dir(self.path)
            self.open_marked = False
        self.db.close()

    @staticmethod
    def quarantine(path: str | os.PathLike[str]) -> Path:
        """Move a damaged data directory aside (kept for forensics), so that the
        node can start empty and recover from its peers."""
        src = Path(path)
        dst = src.with_name(f"{src.name}.quarantined-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(src, dst)
        _fsync_dir(dst.parent)
        return dst
