"""Taking a backup on a running node (HTTP ``GET /v1/snapshot`` and etcd's
``Maintenance.Snapshot``; the file format is ``storage/backup.py``).

Consistency: a backup holds every write acknowledged before it was asked
for. The node first asks the leader for a read index (an empty READ: the
leader confirms with a quorum that it still leads and answers the slot every
earlier acknowledged write sits at or below), waits until its own replica
applied that slot, and only then exports its applied state. Any member can
serve it; a follower waits for its replica to catch up (at most
``CATCHUP_S``).

Bounds: one backup at a time per node, from the moment it is asked for until
its last byte is sent (another asks gets 429; a slow reader of a backup
holds its one copy of the state, never more), and a transfer that stalls is
cut (``SEND_TIMEOUT``). The state is exported on the event loop (as the
node's own periodic snapshots are); the encoding and its digests run in a
thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .. import mvcc
from ..client.aio import AsyncClient, ClientError, Unavailable, UnknownOutcome
from ..storage.backup import BackupInfo, encode_backup
from ..types import Kind

if TYPE_CHECKING:
    from .runtime import NodeServer

log = logging.getLogger("paxosrsm.node")

CATCHUP_S = 30.0
#: Seconds one piece of a backup may take to be sent before the transfer is cut.
SEND_TIMEOUT = 60.0


class BackupBusy(Exception):
    """Another backup is being taken on this node."""


class BackupFailed(Exception):
    """No backup now (no quorum, no replica, too far behind). Retry."""


class Backups:
    def __init__(self, server: NodeServer) -> None:
        self.s = server
        self.busy = False
        self.taken = 0
        self.failed = 0
        #: When the last backup was served (Unix seconds; 0: none yet).
        self.last_success = 0.0

    async def take(
        self, client: AsyncClient, local: bool = False
    ) -> tuple[BackupInfo, list[bytes]]:
        """``local``: this member's applied state as it stands, with no read
        index (works without a quorum: the way out of a quorum loss; it may
        miss writes that other members decided)."""
        if self.busy:
            self.s._bad("backup_busy", "a backup was asked for while one is being taken")
            raise BackupBusy("a backup is being taken on this node; retry when it is done")
        self.busy = True  # until release(), after the last byte is sent
        t0 = time.perf_counter()
        m = self.s.metrics
        try:
            out = await self._take(client, local)
        except BaseException:
            self.failed += 1
            m.backups.labels("failed").inc()
            self.busy = False
            raise
        self.taken += 1
        dt = time.perf_counter() - t0
        m.backups.labels("ok").inc()
        m.backup.observe(dt)
        self.last_success = time.time()
        info = out[0]
        log.info(
            "backup taken at slot %d (revision %s): %d bytes, sha256 %s",
            info.slot, info.revision, info.size, info.file_sha256,
        )  # fmt: skip
        return out

    def release(self) -> None:
        """The backup taken has been sent (or its transfer failed)."""
        self.busy = False

    async def _take(self, client: AsyncClient, local: bool) -> tuple[BackupInfo, list[bytes]]:
        idx: int | None = None
        if not local:
            idx = await self._read_index(client)
        await self._reach(-1 if idx is None else idx)
        node = self.s.node
        assert node is not None
        if local and node.recovering:
            raise BackupFailed("this member is recovering an empty disk: it holds no state")
        snap = node.export_snapshot()
        if snap is None:
            raise BackupFailed("this member holds no replica (a learner or acceptor with state)")
        revision: int | None = None
        sm_name = self.s.opts.state_machine or "mvcc"
        if not self.s.opts.state_machine:
            answer = node.read_local(mvcc.encode({"op": "rev"}))
            out = mvcc.decode_result(answer) if answer is not None else {}
            if out.get("ok"):
                revision = int(out["revision"])
        return await asyncio.to_thread(
            encode_backup,
            snap,
            cluster_id=self.s.opts.cluster_id,
            revision=revision,
            node=self.s.id,
            state_machine=sm_name,
            read_index=idx,
        )

    async def _read_index(self, client: AsyncClient) -> int:
        try:
            raw = await client.request(Kind.READ, b"")
        except (UnknownOutcome, Unavailable, ClientError) as e:
            raise BackupFailed(f"no quorum confirmed a read index: {e}") from e
        try:
            return int(raw)
        except ValueError as e:
            raise BackupFailed(f"the leader answered no read index ({raw[:40]!r})") from e

    async def _reach(self, idx: int) -> None:
        deadline = time.monotonic() + CATCHUP_S
        while True:
            node = self.s.node
            if node is None or self.s.stopping.is_set():
                raise BackupFailed("the node is stopping")
            if node.applied >= idx:
                break
            if time.monotonic() > deadline:
                raise BackupFailed(
                    f"this member applied slot {node.applied} and has not reached the read "
                    f"index {idx} in {CATCHUP_S:.0f} s"
                )
            await asyncio.sleep(0.005)
