"""Backups: a consistent snapshot of a cluster's state in one checked file,
and the seeding of a new cluster's data directories from it.

A backup file:

    b"PAXOSRSM-BACKUP 1\\n"
    header: one line of JSON (at most 64 KiB) - cluster_id, slot (the decided
            slot the state is taken after), revision (the MVCC store's, or
            null for another state machine), created (Unix seconds), node (the
            member that wrote it), state_machine, payload_bytes, payload_sha256
    payload: the snapshot as the storage writes it (state + client sessions)
    zero padding to a multiple of 512 bytes
    sha256 of everything before it (32 bytes)

The last two make the file the shape etcd's snapshot files have (a body
padded to 512 bytes and its SHA-256 appended), so ``etcdctl snapshot save``
takes it from our Maintenance.Snapshot unchanged; ``paxosctl snapshot
status`` and every restore check both digests before anything is written.

Restoring makes a NEW cluster: a new cluster id, every member seeded with the
same snapshot (incarnation 1, no promise, no vote). The old cluster's nodes
refuse the new directories (their IDENTITY names another cluster) and the
new ones refuse the old cluster's peers (another key, another id), so the two
can never mix. Every acceptor must be seeded: a member that started empty in
a new cluster could help decide slots the snapshot already holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..messages import Snapshot
from ..records import IncarnationRec, SnapshotRec
from . import open_storage
from .codec import CodecError, decode_snapshot, encode_snapshot
from .sqlite import Identity, StorageError

MAGIC = b"PAXOSRSM-BACKUP 1\n"
MAX_HEADER = 64 << 10
ALIGN = 512
DIGEST = 32
#: A backup larger than this is refused when read (the whole snapshot is
#: held in memory, as a node holds its state).
MAX_BACKUP_BYTES = 16 << 30


class BackupError(Exception):
    """The file is not a usable backup. The message says why."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    cluster_id: str
    slot: int
    revision: int | None
    created: float
    node: int
    state_machine: str
    payload_bytes: int
    payload_sha256: str
    #: The read index the state was taken at or after (every write
    #: acknowledged before the backup was asked for is at or below it). None:
    #: a member's own state taken without a quorum (disaster recovery), which
    #: may miss writes decided elsewhere.
    read_index: int | None = None
    #: The SHA-256 of the whole file (its last 32 bytes are the digest of
    #: the rest; this is the digest of all of it, as ``sha256sum`` prints).
    file_sha256: str = ""
    size: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def encode_backup(
    snap: Snapshot,
    *,
    cluster_id: str,
    revision: int | None,
    node: int,
    state_machine: str,
    created: float | None = None,
    read_index: int | None = None,
) -> tuple[BackupInfo, list[bytes]]:
    """The file's bytes, in chunks (the payload is not copied), and its info."""
    payload = encode_snapshot(snap)
    head = {
        "cluster_id": cluster_id,
        "slot": snap.slot,
        "revision": revision,
        "created": round(time.time() if created is None else created, 3),
        "node": node,
        "state_machine": state_machine,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "read_index": read_index,
    }
    line = json.dumps(head, sort_keys=True).encode() + b"\n"
    if len(line) > MAX_HEADER:
        raise BackupError("backup header too large (state machine name?)")
    body_len = len(MAGIC) + len(line) + len(payload)
    pad = b"\0" * (-body_len % ALIGN)
    h = hashlib.sha256()
    chunks = [MAGIC, line, payload, pad]
    for c in chunks:
        h.update(c)
    chunks.append(h.digest())
    whole = hashlib.sha256()
    for c in chunks:
        whole.update(c)
    info = BackupInfo(
        cluster_id=cluster_id,
        slot=snap.slot,
        revision=revision,
        created=float(head["created"]),  # type: ignore[arg-type]
        node=node,
        state_machine=state_machine,
        payload_bytes=len(payload),
        payload_sha256=str(head["payload_sha256"]),
        read_index=read_index,
        file_sha256=whole.hexdigest(),
        size=body_len + len(pad) + DIGEST,
    )
    return info, chunks


def iter_chunks(chunks: list[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """The file in pieces of at most ``size`` bytes (for streaming)."""
    for c in chunks:
        for i in range(0, len(c), size):
            yield c[i : i + size]


def write_backup_file(path: str | os.PathLike[str], chunks: list[bytes]) -> None:
    """Temp file, fsync, rename, fsync the directory: never a half file under the name."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.part")
    with open(tmp, "wb") as f:
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    fd = os.open(p.parent if str(p.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_backup(data: bytes) -> tuple[BackupInfo, Snapshot]:
    """Check both digests and decode. Raises BackupError with the reason."""
    if len(data) > MAX_BACKUP_BYTES:
        raise BackupError(f"larger than {MAX_BACKUP_BYTES} bytes")
    if not data.startswith(MAGIC):
        raise BackupError("not a paxosrsm backup (no PAXOSRSM-BACKUP header)")
    if len(data) % ALIGN != DIGEST:
        raise BackupError(f"truncated or extended: {len(data)} bytes is not 512k+32")
    body, digest = data[:-DIGEST], data[-DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise BackupError("file checksum mismatch (damaged or truncated)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if end < 0:
        raise BackupError("header line missing or longer than 64 KiB")
    try:
        head = json.loads(data[len(MAGIC) : end])
        info = BackupInfo(
            cluster_id=str(head["cluster_id"]),
            slot=int(head["slot"]),
            revision=None if head["revision"] is None else int(head["revision"]),
            created=float(head["created"]),
            node=int(head["node"]),
            state_machine=str(head["state_machine"]),
            payload_bytes=int(head["payload_bytes"]),
            payload_sha256=str(head["payload_sha256"]),
            read_index=None if head.get("read_index") is None else int(head["read_index"]),
            file_sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise BackupError(f"header does not parse: {e}") from e
    start = end + 1
    payload = data[start : start + info.payload_bytes]
    if len(payload) != info.payload_bytes or any(data[start + info.payload_bytes : -DIGEST]):
        raise BackupError("payload length does not match the header")
    if hashlib.sha256(payload).hexdigest() != info.payload_sha256:
        raise BackupError("payload checksum mismatch")
    try:
        snap = decode_snapshot(payload)
    except CodecError as e:
        raise BackupError(f"snapshot does not decode: {e}") from e
    if snap.slot != info.slot:
        raise BackupError(f"snapshot holds slot {snap.slot}, header says {info.slot}")
    return info, snap


def read_backup(path: str | os.PathLike[str]) -> tuple[BackupInfo, Snapshot]:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BACKUP_BYTES:
            raise BackupError(f"{p}: larger than {MAX_BACKUP_BYTES} bytes")
        data = p.read_bytes()
    except OSError as e:
        raise BackupError(f"{p}: {e.strerror or e}") from e
    try:
        return parse_backup(data)
    except BackupError as e:
        raise BackupError(f"{p}: {e}") from e


def seed_member(data_dir: str | os.PathLike[str], identity: Identity, snap: Snapshot) -> None:
    """Make ``data_dir`` a member of a new cluster that starts from ``snap``.
    Refuses a directory that holds anything (never overwrite a member)."""
    d = Path(data_dir)
    # A new volume may hold ext4's lost+found and nothing else.
    if d.exists() and any(p.name != "lost+found" for p in d.iterdir()):
        raise BackupError(f"{d} is not empty: a restore only seeds new, empty data directories")
    try:
        st = open_storage(d, identity)
        try:
            if not st.fresh:  # pragma: no cover - the emptiness check above
                raise BackupError(f"{d} is in use")
            st.append([IncarnationRec(1), SnapshotRec(snap, 0)])
        finally:
            st.close()
    except StorageError as e:
        raise BackupError(str(e)) from e
