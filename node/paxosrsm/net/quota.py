"""The storage quota (issue 12): a full disk must not stop the cluster.

Each node measures what its store holds (``SQLiteStorage.used_bytes``) and
the free space of its file system every 2 s, and at once when its writes
since the last look reach a sixteenth of the quota. The quota in force is
``--quota-bytes`` (2 GiB, etcd's default) but at most a quarter of the
volume (``MAX_SHARE``). From half
the quota on the node compacts (an early snapshot, ``Node.compact``) with no
alarm, so that in normal operation the log never nears it. Over the quota, or under the
reserve of free space, it raises its NOSPACE alarm: a command through the
log (``statemachine.encode_alarm``), as etcd raises its own through raft.
Every replica applies it alike: from that slot on, puts and CAS are refused
with ``NOSPACE`` (HTTP 507) and deletes and reads go on. While its alarm is
raised the node compacts (an early snapshot, ``Node.compact``), so that the
deleted keys leave its disk; once it holds less than 90% of the quota and
twice the reserve is free, it clears its alarm through the log the same way.

If the disk fills anyway (a quota set larger than the volume), the write
that fails with ENOSPC is retried, not fatal (``runtime._flusher``): the node
takes no peer traffic meanwhile (as if it had crashed, which the protocol
tolerates) and resumes with the same records once space is back. Nothing was
acknowledged from records that are not on disk, so nothing is lost.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass

#: Clear the alarm only below this share of the quota (hysteresis).
CLEAR_BELOW = 0.9
#: Compact (without an alarm) from this share of the quota on: in normal
#: operation the log is folded into a snapshot before the alarm is near.
COMPACT_FROM = 0.5
#: The quota is at most this share of the file system. What the store holds
#: (pages in use, WAL, snapshot) is what deletes can lower; the disk also
#: carries the database file's free pages (reused by later writes, never
#: by a snapshot file) and, during a compaction, a new snapshot beside the
#: old one: up to about three times the quota, plus the writes that land
#: before the alarm is applied.
MAX_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Reading:
    used: int  # bytes the store holds
    free: int  # bytes free on its file system, for this user
    total: int  # the file system's size


def read_fs(path: str) -> tuple[int, int]:
    """(free bytes for an unprivileged writer, total bytes) of ``path``'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


class StorageQuota:
    """Pure decisions: the runtime measures and acts."""

    def __init__(self, quota_bytes: int, reserve_bytes: int) -> None:
        self.quota = quota_bytes
        self.reserve_cap = reserve_bytes
        self.last: Reading | None = None

    def reserve(self, total: int) -> int:
        return min(self.reserve_cap, total // 10)

    def effective(self, total: int) -> int:
        """The quota in force: the configured one, at most a quarter of the volume."""
        return min(self.quota, int(total * MAX_SHARE)) if total > 0 else self.quota

    def judge(self, r: Reading) -> str:
        """What to do: "over", raise the alarm; "under", it may be cleared
        (the store is small); "compact", it may be cleared too, and the log
        is folded into a snapshot; "hold", between the thresholds: nothing
        changes."""
        self.last = r
        reserve = self.reserve(r.total)
        quota = self.effective(r.total)
        if r.used >= quota or r.free < reserve:
            return "over"
        if r.used < quota * CLEAR_BELOW and r.free >= 2 * reserve:
            return "compact" if r.used >= quota * COMPACT_FROM else "under"
        return "hold"


def is_disk_full(e: BaseException) -> bool:
    """A write that failed because the disk (or the user's disk quota) is full."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(e, sqlite3.OperationalError):
        code = getattr(e, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(e)
    return False
