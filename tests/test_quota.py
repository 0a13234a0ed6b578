"""The storage quota's pure parts (net/quota.py, the KV store's alarms);
the probes on real processes are in tests/test_attacks.py."""

from __future__ import annotations

import errno
import json
import sqlite3

from paxosrsm.net.quota import Reading, StorageQuota, is_disk_full
from paxosrsm.statemachine import ALARMS_QUERY, NOSPACE, KVStore, encode_alarm, encode_op

MiB = 1 << 20


def _res(b: bytes) -> dict[str, object]:
    out = json.loads(b)
    assert isinstance(out, dict)
    return out


def test_an_alarm_makes_every_replica_read_delete_only_and_survives_snapshots() -> None:
    kv = KVStore()
    assert _res(kv.apply(encode_op("put", "a", "1")))["ok"]
    assert kv.precheck(encode_op("put", "b", "2")) is None
    kv.apply(encode_alarm(2, True))
    put = _res(kv.apply(encode_op("put", "b", "2")))
    assert put["ok"] is False and str(put["error"]).startswith(NOSPACE)
    assert _res(kv.apply(encode_op("cas", "a", "1", "3")))["ok"] is False
    refusal = kv.precheck(encode_op("put", "b", "2"))
    assert refusal is not None and NOSPACE in refusal.decode()
    assert kv.precheck(encode_op("delete", "a")) is None
    assert _res(kv.apply(encode_op("get", "a")))["value"] == "1"
    assert _res(kv.apply(encode_op("delete", "a")))["value"] is True
    assert _res(kv.query(ALARMS_QUERY))["value"] == [2]
    # The alarm is state: a replica restored from a snapshot refuses alike.
    other = KVStore()
    other.restore(kv.snapshot())
    assert other.alarms == {2} and other.snapshot() == kv.snapshot()
    kv.apply(encode_alarm(2, False))
    assert _res(kv.apply(encode_op("put", "b", "2")))["ok"] is True
    # Without alarms the snapshot is the bare object of before (old ones load).
    assert kv.snapshot() == b'{"b":"2"}'
    old = KVStore()
    old.restore(b'{"x":"1"}')
    assert old.data == {"x": "1"} and not old.alarms
    bad = _res(kv.apply(b'{"key":"","op":"alarm","member":"x","active":true}'))
    assert bad["ok"] is False


def test_quota_thresholds() -> None:
    q = StorageQuota(2 << 30, 64 * MiB)
    total = 400 * MiB  # a small volume: the quota in force is a quarter of it
    assert q.effective(total) == 100 * MiB and q.reserve(total) == 40 * MiB
    assert q.judge(Reading(10 * MiB, 300 * MiB, total)) == "under"
    assert q.judge(Reading(60 * MiB, 300 * MiB, total)) == "compact"
    assert q.judge(Reading(95 * MiB, 300 * MiB, total)) == "hold"
    assert q.judge(Reading(100 * MiB, 300 * MiB, total)) == "over"
    assert q.judge(Reading(10 * MiB, 30 * MiB, total)) == "over"  # a shared disk filled up
    assert q.judge(Reading(10 * MiB, 70 * MiB, total)) == "hold"  # free, not twice the reserve
    big = StorageQuota(8 * MiB, 64 * MiB)
    assert big.effective(1 << 40) == 8 * MiB


def test_disk_full_errors_are_recognised() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(OSError(errno.EIO, "I/O error"))
    assert not is_disk_full(sqlite3.OperationalError("disk I/O error"))
