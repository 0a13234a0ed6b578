"""Durable storage as one append-only log file (the default engine, issue 15).

Layout of a data directory (IDENTITY, COMMITTED and ``snapshots/`` as for
the SQLite engine, ``storage/sqlite.py``):

    paxos.log       batches of records, one batch per ``append`` (one fsync)

Why a log of our own: three members fsyncing one disk spent 0.5-0.8 ms per
SQLite commit (WAL pages, index pages) where an append of the same bytes
plus ``fdatasync`` takes 0.23 ms (``bench/storage_bench.py`` compares them,
and LMDB, in the same run). The file is allocated ahead in steps of
``STEP`` bytes that are written with zeros once, so a commit's
``fdatasync`` writes data blocks only: no journal commit for a new size or
new extents, which is what three processes on one disk queue behind.

A batch: a 24-byte header (magic ``PXLB``, payload length, sequence number,
CRC32 of the header's first 16 bytes and the payload), then the payload (the
records, each a type byte, a length and a body), padded with zeros to 16
bytes. Sequence numbers follow each other, across compactions too.

Reading (``load``) replays every batch and checks every checksum:

* the log ends at the first all-zero header (the allocated, unused tail);
* a batch that fails its checksum is a torn write of the last ``append``
  (never acknowledged: its fsync did not return) only if no valid batch
  follows it anywhere in the file. Then the tail from it on is zeroed
  again and the log continues there. A valid batch after a bad one means
  acknowledged data was damaged: ``StorageCorrupt``;
* the file's size is always a whole number of steps (it grows by
  ``fallocate``, which sets the size at once): any other size means the
  file was truncated, and the log refuses it;
* a directory in use (COMMITTED) whose log holds no incarnation is damaged.

Compaction: the engine keeps the live records (votes at or above the floor,
decisions after the snapshot's retained tail, the latest of each meta
record) in memory, encoded. After a snapshot or a trim, when the file holds
dead bytes (records a later one replaced or removed) of at least 64 KiB and
a quarter of the live bytes, it writes the live records to a new file
(fsynced, renamed over the log, directory fsynced): the log never holds
much more than the SQLite engine's tables would (what the storage quota
counts), and a crash at any point leaves either the old complete log or
the new one. A compaction costs about what the snapshot before it did.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path

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
from .codec import CodecError, crc32, decode_ballot, decode_value, encode_ballot, encode_value
from .sqlite import (
    CrashHook,
    Identity,
    StorageCorrupt,
    _fsync_dir,
    _recovery_hint,
    _write_atomic,
    check_identity,
    read_snapshot_file,
    write_snapshot_file,
)

LOG = "paxos.log"
#: The file grows by this much at a time (zero-filled once, then overwritten).
STEP = 4 << 20
MAGIC = b"PXLB"
_HEAD = struct.Struct("<4sIQI")  # magic, payload length, sequence, crc32
_REC = struct.Struct("<BI")  # record type, body length
_Q = struct.Struct("<q")
_QQ = struct.Struct("<qq")
_BALLOT = struct.Struct("<QH")  # as storage/codec.py encodes a ballot
_ALIGN = 16
#: One batch's payload at most (a frame of records; larger appends split).
MAX_BATCH = 1 << 30

T_ACCEPT, T_DECIDE, T_PROMISE, T_BALLOT, T_TRIM, T_SNAPSHOT, T_INC, T_PEER_INC, T_RECOVERY = range(
    1, 10
)
_ZERO_HEAD = bytes(_HEAD.size)


def _rec(t: int, body: bytes) -> bytes:
    return _REC.pack(t, len(body)) + body


def _encode(r: Record) -> tuple[int, bytes]:
    """(type, body) of one record."""
    if type(r) is AcceptRec:
        return T_ACCEPT, _Q.pack(r.slot) + encode_ballot(r.ballot) + encode_value(r.value)
    if type(r) is DecideRec:
        return T_DECIDE, _Q.pack(r.slot) + encode_value(r.value)
    if isinstance(r, PromiseRec):
        return T_PROMISE, encode_ballot(r.ballot)
    if isinstance(r, BallotRec):
        return T_BALLOT, encode_ballot(r.ballot)
    if isinstance(r, TrimRec):
        return T_TRIM, _Q.pack(r.floor)
    if isinstance(r, IncarnationRec):
        return T_INC, _Q.pack(r.inc)
    if isinstance(r, PeerIncRec):
        return T_PEER_INC, _QQ.pack(r.acceptor, r.inc)
    if isinstance(r, RecoveryRec):
        return T_RECOVERY, b"\x01" if r.active else b"\x00"
    raise TypeError(f"unknown record {r!r}")  # pragma: no cover - exhaustive


def _batch(seq: int, payload: bytes) -> bytes:
    head = struct.pack("<4sIQ", MAGIC, len(payload), seq)
    out = head + struct.pack("<I", crc32(head, payload)) + payload
    pad = -len(out) % _ALIGN
    return out + bytes(pad) if pad else out


class _Live:
    """The live records, encoded (what a compaction writes, what ``load``
    returns). Meta records keep their latest value; votes and decisions are
    keyed by slot, as the SQLite engine's tables."""

    __slots__ = ("decided", "floor", "meta", "peer_inc", "snapshot", "top", "votes")

    def __init__(self) -> None:
        self.meta: dict[int, bytes] = {}  # type -> body (promise, ballot, inc, recovery)
        self.peer_inc: dict[int, bytes] = {}
        self.floor = 0
        self.snapshot: tuple[str, int] | None = None
        self.votes: dict[int, bytes] = {}  # slot -> body
        self.decided: dict[int, bytes] = {}
        #: The highest ballot of any vote folded (round, node).
        self.top: tuple[int, int] = (-1, -1)

    def apply(self, t: int, body: bytes) -> str | None:
        """Fold one record as ``DurableState.apply`` does (promises, ballots,
        floors and snapshots only move forward; no vote below the floor).
        Returns the name of a snapshot file it replaced."""
        if t == T_ACCEPT:
            slot = _Q.unpack_from(body)[0]
            if slot >= self.floor:
                self.votes[slot] = body
            # A vote at b is a promise of b (DurableState.apply): kept even
            # when a trim removes the vote.
            b = _BALLOT.unpack_from(body, 8)
            if b > self.top:
                self.top = b
                cur = self.meta.get(T_PROMISE)
                if cur is None or b > _BALLOT.unpack(cur):
                    self.meta[T_PROMISE] = body[8:18]
        elif t == T_DECIDE:
            self.decided[_Q.unpack_from(body)[0]] = body
        elif t in (T_PROMISE, T_BALLOT):
            cur = self.meta.get(t)
            if cur is None or _BALLOT.unpack(body) > _BALLOT.unpack(cur):
                self.meta[t] = body
        elif t in (T_INC, T_RECOVERY):
            self.meta[t] = body
        elif t == T_PEER_INC:
            self.peer_inc[_QQ.unpack_from(body)[0]] = body
        elif t == T_TRIM:
            (floor,) = _Q.unpack_from(body)
            if floor > self.floor:
                self.floor = floor
                for s in [s for s in self.votes if s < floor]:
                    del self.votes[s]
        elif t == T_SNAPSHOT:
            slot, retain = _QQ.unpack_from(body)
            name = body[_QQ.size :].decode()
            if self.snapshot is not None and slot <= self.snapshot[1]:
                return name if name != self.snapshot[0] else None  # an older one: unused
            old = self.snapshot[0] if self.snapshot and self.snapshot[0] != name else None
            self.snapshot = (name, slot)
            cut = slot - retain
            for s in [s for s in self.decided if s <= cut]:
                del self.decided[s]
            return old
        else:
            raise CodecError(f"unknown record type {t}")
        return None

    def nbytes(self) -> int:
        n = sum(len(b) for b in self.votes.values()) + sum(len(b) for b in self.decided.values())
        return n + (len(self.votes) + len(self.decided)) * _REC.size + 256

    def records(self) -> bytes:
        """Every live record, in an order that folds back to this state."""
        parts = [_rec(t, b) for t, b in sorted(self.meta.items())]
        parts += [_rec(T_PEER_INC, b) for _, b in sorted(self.peer_inc.items())]
        if self.snapshot is not None:
            name, slot = self.snapshot
            # retain everything: the decisions written after it are all live
            parts.append(_rec(T_SNAPSHOT, _QQ.pack(slot, 1 << 62) + name.encode()))
        parts.append(_rec(T_TRIM, _Q.pack(self.floor)))
        parts += [_rec(T_ACCEPT, self.votes[s]) for s in sorted(self.votes)]
        parts += [_rec(T_DECIDE, self.decided[s]) for s in sorted(self.decided)]
        return b"".join(parts)


class LogStorage:
    """The storage engine of ``paxos.log`` (see the module docstring). Same
    interface as ``SQLiteStorage``: ``append``, ``load``, ``used_bytes``,
    ``disk_usage``, ``close``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        identity: Identity,
        crash_hook: CrashHook | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.identity = identity
        self.crash_hook = crash_hook
        #: Only read (``python -m paxosrsm.storage check``): nothing is
        #: created, zeroed or removed, so that a check next to a running
        #: node never touches the batch it is writing.
        self.read_only = read_only
        self.file = self.path / LOG
        if read_only:
            if not (self.path / "IDENTITY").exists() or not self.file.exists():
                raise StorageCorrupt(f"{self.path}: no IDENTITY or {LOG} to check")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "snapshots").mkdir(exist_ok=True)
        self.fresh = check_identity(self.path, identity, LOG)
        if not self.file.exists():
            self._create(self.file, b"")
        self.fd = os.open(self.file, os.O_RDONLY if read_only else os.O_RDWR)
        #: Offset of a torn last batch found by ``load`` (None: none).
        self.torn_at: int | None = None
        self.size = os.fstat(self.fd).st_size
        self.pos = 0
        self.seq = 0
        self.live = _Live()
        self.loaded = False
        self.snapshot_file: str | None = None
        self.fsyncs = 0
        self.compactions = 0
        self.compact_errors = 0

    # ------------------------------------------------------------ files

    @staticmethod
    def _alloc(fd: int, start: int, end: int) -> None:
        """Give the file the bytes [start, end), zero-filled and written, so
        that later overwrites need no metadata. ``fallocate`` sets the size
        in one step (a crash never leaves a size between steps)."""
        os.posix_fallocate(fd, start, end - start)
        zeros = bytes(min(end - start, 1 << 20))
        at = start
        while at < end:
            n = os.pwrite(fd, zeros[: end - at], at)
            at += n

    def _create(self, path: Path, content: bytes) -> None:
        """Write a new log file holding ``content`` (whole batches), allocated
        to whole steps, fsynced, and renamed into place."""
        tmp = path.with_name(f".{path.name}.new")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            size = max(STEP, -(-(len(content) + _HEAD.size) // STEP) * STEP)
            self._alloc(fd, 0, size)
            if content:
                os.pwrite(fd, content, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    # ------------------------------------------------------------ writing

    def append(self, records: Sequence[Record]) -> None:
        """Make ``records`` durable, in order, with one fsync."""
        if not records:
            return
        if not self.loaded:
            self.load()  # the position to write at is known only after a scan
        parts: list[bytes] = []
        folded: list[tuple[int, bytes]] = []
        compact = False
        for r in records:
            if isinstance(r, SnapshotRec):
                name = write_snapshot_file(self.path, r.snapshot)
                t, body = T_SNAPSHOT, _QQ.pack(r.snapshot.slot, r.log_retain) + name.encode()
                compact = True
            else:
                t, body = _encode(r)
                compact = compact or t == T_TRIM
            parts.append(_REC.pack(t, len(body)))
            parts.append(body)
            folded.append((t, body))
        payload = b"".join(parts)
        if len(payload) > MAX_BATCH:  # pragma: no cover - a Ready is far smaller
            raise ValueError(f"a batch of {len(payload)} bytes")
        # Nothing changes here until the write is durable: an append that
        # fails (a full disk) is retried with the same records.
        data = _batch(self.seq + 1, payload)
        end = self.pos + len(data)
        if end + _HEAD.size > self.size:
            grow = -(-(end + _HEAD.size - self.size) // STEP) * STEP
            self._alloc(self.fd, self.size, self.size + grow)
            self.size += grow
        os.pwrite(self.fd, data, self.pos)
        if self.crash_hook is not None:
            self.crash_hook("before_commit")
        os.fdatasync(self.fd)
        self.pos = end
        self.seq += 1
        self.fsyncs += 1
        live = self.live
        old_snapshots = []
        for t, body in folded:
            old = live.apply(t, body)
            if old is not None:
                old_snapshots.append(old)
        self.snapshot_file = live.snapshot[0] if live.snapshot else None
        if self.fresh:
            _write_atomic(self.path / "COMMITTED", b"1\n")
            self.fresh = False
        if self.crash_hook is not None:
            self.crash_hook("after_commit")
        for name in old_snapshots:
            (self.path / "snapshots" / name).unlink(missing_ok=True)
        if compact:
            live_bytes = live.nbytes()
            dead = self.pos - live_bytes
            if dead >= max(64 << 10, live_bytes // 4):
                self.compact()

    def compact(self) -> None:
        """Rewrite the log with only its live records (see the module doc).
        A compaction that fails (a full disk) leaves the old log in use: the
        append before it is durable either way."""
        data = _batch(self.seq + 1, self.live.records())
        try:
            self._create(self.file, data)
        except OSError:
            self.compact_errors += 1
            return
        os.close(self.fd)
        self.fd = os.open(self.file, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.pos = len(data)
        self.seq += 1
        self.compactions += 1

    # ------------------------------------------------------------ reading

    def _bad(self, what: str) -> StorageCorrupt:
        return StorageCorrupt(f"{self.path}: {what}. " + _recovery_hint(self.path))

    def _valid_at(self, data: bytes | memoryview, at: int) -> tuple[int, int] | None:
        """(sequence, end of its payload) of a whole, valid batch at ``at``,
        else None."""
        if at + _HEAD.size > len(data):
            return None
        magic, n, seq, crc = _HEAD.unpack_from(data, at)
        if magic != MAGIC or at + _HEAD.size + n > len(data):
            return None
        body = bytes(data[at + _HEAD.size : at + _HEAD.size + n])
        if crc32(bytes(data[at : at + 16]), body) != crc:
            return None
        end = at + _HEAD.size + n
        return seq, end

    def load(self) -> DurableState:
        """Read and verify everything. Raises StorageCorrupt on any damage."""
        try:
            return self._load()
        except (CodecError, struct.error, UnicodeDecodeError, ValueError) as e:
            raise self._bad(f"a record does not decode ({e})") from e

    def _load(self) -> DurableState:
        if self.size % STEP:
            raise self._bad(
                f"{LOG} is {self.size} bytes, not a whole number of {STEP}-byte steps (truncated)"
            )
        with open(self.file, "rb") as fh:
            data = fh.read()
        live = _Live()
        at, seq = 0, None
        while at + _HEAD.size <= len(data):
            if data[at : at + _HEAD.size] == _ZERO_HEAD:
                break
            ok = self._valid_at(data, at)
            if ok is None or (seq is not None and ok[0] != seq + 1):
                # Torn (the last append's, never acknowledged) or damaged:
                # damaged if any whole batch follows it.
                for later in range(at + _ALIGN, len(data) - _HEAD.size + 1, _ALIGN):
                    if data[later : later + 4] == MAGIC and self._valid_at(data, later):
                        raise self._bad(
                            f"the batch at offset {at} of {LOG} is damaged and acknowledged "
                            f"data follows it (offset {later})"
                        )
                self.torn_at = at
                if not self.read_only:
                    self._zero_from(at)
                break
            seq, end = ok
            view = memoryview(data)[at + _HEAD.size : end]
            i = 0
            n_body = len(view)
            while i < n_body:
                if i + _REC.size > n_body:
                    raise CodecError("a record header crosses the batch's end")
                t, n = _REC.unpack_from(view, i)
                i += _REC.size
                if i + n > n_body:
                    raise CodecError("a record crosses the batch's end")
                live.apply(t, bytes(view[i : i + n]))
                i += n
            at = end + (-end % _ALIGN)
        self.pos = at
        self.seq = seq or 0
        self.live = live
        self.loaded = True
        st = DurableState()
        meta = live.meta
        if not self.fresh and T_INC not in meta:
            raise self._bad("the log holds no incarnation although the directory is in use")
        if T_INC in meta:
            st.inc = _Q.unpack(meta[T_INC])[0]
        st.promised = decode_ballot(meta[T_PROMISE]) if T_PROMISE in meta else ZERO_BALLOT
        if T_BALLOT in meta:
            st.proposer_ballot = decode_ballot(meta[T_BALLOT])
        st.recovering = meta.get(T_RECOVERY) == b"\x01"
        st.floor = live.floor
        for body in live.peer_inc.values():
            a, inc = _QQ.unpack(body)
            st.peer_inc[a] = inc
        for slot, body in live.votes.items():
            ballot = decode_ballot(body[8:18])
            st.accepted[slot] = (ballot, decode_value(body[18:]))
            if ballot > st.promised:
                st.promised = ballot  # a vote at b is a promise of b, as in DurableState
        for slot, body in live.decided.items():
            st.decided[slot] = decode_value(body[8:])
        self.snapshot_file = None
        if live.snapshot is not None:
            name, slot = live.snapshot
            st.snapshot = read_snapshot_file(self.path, name, slot, self._bad)
            self.snapshot_file = name
        snaps = self.path / "snapshots"
        for f in snaps.iterdir() if snaps.is_dir() and not self.read_only else ():
            if f.name != self.snapshot_file:
                f.unlink()  # left by a crash before its batch was durable
        return st

    def _zero_from(self, at: int) -> None:
        """Zero the torn tail from ``at``, so that the next batches (written
        there) are never followed by stale bytes."""
        end = self.size
        zeros = bytes(min(end - at, 1 << 20))
        i = at
        while i < end:
            i += os.pwrite(self.fd, zeros[: end - i], i)
        os.fdatasync(self.fd)

    # ------------------------------------------------------------ misc

    def row_counts(self) -> tuple[int, int]:
        return len(self.live.votes), len(self.live.decided)

    def used_bytes(self) -> int:
        """The bytes this store holds (what the storage quota counts): the
        log up to its end (not its allocated zeros), and the snapshot files."""
        total = self.pos
        for p in (self.path / "snapshots").iterdir():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def disk_usage(self) -> int:
        """Bytes of the data directory's files (the log's allocation included)."""
        total = 0
        for p in self.path.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
        return total

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


__all__ = ["LOG", "STEP", "LogStorage"]
