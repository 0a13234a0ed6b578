"""A node's Prometheus metrics (docs/metrics.md is the reference).

Names follow Prometheus conventions (base units, ``_total`` for counters,
``_seconds``/``_bytes``) and mirror etcd's where the meaning is the same,
under ``paxos_`` instead of ``etcd_`` (``etcd_server_has_leader`` ->
``paxos_server_has_leader``), so that an etcd runbook or alert carries over
with the prefix changed. The histograms are fed by the runtime as things
happen; the gauges are read from the node's status at each scrape.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..statemachine import StateMachine

log = logging.getLogger("paxosrsm.node")

#: etcd's disk buckets (1 ms .. 8 s, doubling).
DISK_BUCKETS = tuple(0.001 * 2**i for i in range(14))
#: Requests and commits: 0.25 ms .. 8 s, doubling.
REQUEST_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
#: Applying one command: 5 us .. 0.3 s, doubling.
APPLY_BUCKETS = tuple(0.000005 * 2**i for i in range(17))
#: Leader changes kept for the status page.
LEADER_HISTORY = 50


class _Child:
    """One histogram's counts (of one label set)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        # bisect_left: a value equal to a bound counts in that bound's bucket (le)
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v


class Histogram(Collector):
    """A Prometheus histogram for one thread (the node's event loop): an
    observation is a bisect and two additions, with no lock. prometheus_client's
    own (a mutex per value) cost 10% of the leader's CPU at peak (issue 15's
    profile). The exposition is the same: ``_bucket{le}``, ``_sum``,
    ``_count``, made at scrape time."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name, self.doc = name, doc
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.children: dict[tuple[str, ...], _Child] = {}
        if not self.labelnames:
            self._one = self.children[()] = _Child(self.bounds)
            self.observe = self._one.observe  # type: ignore[method-assign]
        registry.register(self)

    def observe(self, v: float) -> None:  # replaced per instance when unlabelled
        raise TypeError(f"{self.name} has labels: use .labels(...).observe")

    def labels(self, *values: str) -> _Child:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values}")
            child = self.children[values] = _Child(self.bounds)
        return child

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, c in list(self.children.items()):
            acc, buckets = 0, []
            for bound, n in zip((*c.bounds, float("inf")), c.counts, strict=True):
                acc += n
                buckets.append((_le(bound), acc))
            fam.add_metric(list(values), buckets, c.sum)
        yield fam


def _le(bound: float) -> str:
    # as prometheus_client's own histograms write it
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(c)
        self.fsync = Histogram(
            "paxos_disk_wal_fsync_duration_seconds",
            "Durable appends of the vote log (one batch and its fsync), as etcd's WAL fsync",
            buckets=DISK_BUCKETS, registry=r,
        )  # fmt: skip
        self.snap_save = Histogram(
            "paxos_snap_save_total_duration_seconds",
            "Writing a snapshot and trimming the log below it (the log compaction)",
            buckets=DISK_BUCKETS, registry=r,
        )  # fmt: skip
        self.snap_take = Histogram(
            "paxos_snap_take_duration_seconds",
            "Capturing the state machine's state for a snapshot or a backup",
            buckets=DISK_BUCKETS, registry=r,
        )  # fmt: skip
        self.compaction = Histogram(
            "paxos_mvcc_db_compaction_total_duration_seconds",
            "MVCC history compactions (asked for, or automatic)",
            buckets=DISK_BUCKETS, registry=r,
        )  # fmt: skip
        self.apply = Histogram(
            "paxos_server_apply_duration_seconds",
            "Applying one decided command to the state machine",
            buckets=APPLY_BUCKETS, registry=r,
        )  # fmt: skip
        self.commit = Histogram(
            "paxos_server_commit_duration_seconds",
            "On the leader: a slot's first Accept sent to its decision known",
            buckets=REQUEST_BUCKETS, registry=r,
        )  # fmt: skip
        self.request = Histogram(
            "paxos_request_duration_seconds",
            "Client requests through the HTTP and gRPC APIs, by API and operation, to the answer",
            ["api", "op"], buckets=REQUEST_BUCKETS, registry=r,
        )  # fmt: skip
        for op in ("range", "range_serializable", "put", "delete_range", "txn"):
            self.request.labels("grpc", op)  # present (at 0) before the first request
        self.backup = Histogram(
            "paxos_server_backup_duration_seconds",
            "Taking a backup (read index, catch-up, state capture and digests)",
            buckets=DISK_BUCKETS, registry=r,
        )  # fmt: skip
        self.backups = Counter(
            "paxos_server_backups", "Backups asked of this node, by result", ["result"],
            registry=r,
        )  # fmt: skip
        self.leader_changes = Counter(
            "paxos_server_leader_changes_seen",
            "Leader changes this node saw (a new leader id, or a leader after none)",
            registry=r,
        )  # fmt: skip
        self.proposals_failed = Counter(
            "paxos_server_proposals_failed",
            "Client commands refused as BUSY, or in flight when this node lost the lead",
            registry=r,
        )  # fmt: skip
        #: Leader history for the status page: (unix time, leader id or None, ballot).
        self.leaders: deque[tuple[float, int | None, str | None]] = deque(maxlen=LEADER_HISTORY)
        self._last_leader: int | None = None
        #: slot -> time its first Accept left (the leader's commit histogram).
        self.accept_sent: dict[int, float] = {}
        #: Throughput and latency samples for the status page: per second,
        #: (unix second, applied slots, requests, sum of request seconds).
        self.seconds: deque[list[float]] = deque(maxlen=600)

    # ------------------------------------------------------------ feeds

    def saw_leader(self, leader: int | None, ballot: str | None) -> bool:
        """Called every tick with the leader this node knows; True on a change."""
        if leader == self._last_leader:
            return False
        prev, self._last_leader = self._last_leader, leader
        self.leaders.append((time.time(), leader, ballot))
        if leader is not None:
            self.leader_changes.inc()
        return prev != leader

    def accept_out(self, slot: int, now: float) -> None:
        if slot not in self.accept_sent:
            if len(self.accept_sent) >= 100_000:
                self.accept_sent.clear()  # a lead lost with slots pending: start over
            self.accept_sent[slot] = now

    def decided(self, slot: int, now: float) -> None:
        t = self.accept_sent.pop(slot, None)
        if t is not None:
            self.commit.observe(now - t)

    def lost_lead(self) -> None:
        self.accept_sent.clear()

    def _second(self) -> list[float]:
        now = float(int(time.time()))
        if not self.seconds or self.seconds[-1][0] != now:
            self.seconds.append([now, 0.0, 0.0, 0.0])
        return self.seconds[-1]

    def applied(self, n: int) -> None:
        self._second()[1] += n

    def observe_request(self, api: str, op: str, seconds: float) -> None:
        self.request.labels(api, op).observe(seconds)
        s = self._second()
        s[2] += 1
        s[3] += seconds

    def recent(self, window: int = 300) -> list[dict[str, Any]]:
        """The last ``window`` seconds, one row per second that saw anything."""
        cut = time.time() - window
        return [
            {
                "t": int(t),
                "applied": int(a),
                "requests": int(n),
                "latency_ms": round(1000 * s / n, 3) if n else None,
            }
            for t, a, n, s in self.seconds
            if t >= cut
        ]


class TimedStateMachine:
    """The runtime's state machine, timed: each apply, each state capture
    (snapshot) and each MVCC compaction feed the node's histograms. Nothing
    else changes: the core sees the same answers."""

    def __init__(self, sm: StateMachine, m: NodeMetrics) -> None:
        self.sm = sm
        self.m = m
        self._apply = m.apply.observe
        pre = getattr(sm, "precheck", None)
        if pre is not None:
            self.precheck: Callable[[bytes], bytes | None] = pre

    def apply(self, payload: bytes) -> bytes:
        sm = self.sm
        before = getattr(sm, "compactions", 0)
        t0 = time.perf_counter()
        out = sm.apply(payload)
        self._apply(time.perf_counter() - t0)
        if getattr(sm, "compactions", 0) != before:
            took = float(getattr(sm, "last_compaction_seconds", 0.0))
            self.m.compaction.observe(took)
            log.info("MVCC history compacted (%.1f ms)", took * 1000,
                     extra={"event": "compaction", "reason": "mvcc"})  # fmt: skip
        return out

    def query(self, payload: bytes) -> bytes:
        return self.sm.query(payload)

    def snapshot(self) -> bytes:
        t0 = time.perf_counter()
        out = self.sm.snapshot()
        self.m.snap_take.observe(time.perf_counter() - t0)
        return out

    def restore(self, data: bytes) -> None:
        self.sm.restore(data)
