"""Admission of datagrams before any cryptography (issue 12, "Floods").

200,000 bad datagrams at 10,000/s cut a cluster's write throughput by a third
to two thirds and caused elections: every one cost a MAC check, a log line
budget and event-loop time that the heartbeats needed. ``Admission`` decides,
from the source address alone and in O(1), whether a datagram is worth
verifying:

- a source that sent an authenticated datagram in the last ``trust_ttl``
  seconds (a peer, a client) is always admitted;
- any other source gets a token bucket of its own (``per_source`` datagrams/s)
  and shares one with every other unknown source (``unknown_total``/s);
  beyond either, the datagram is dropped unverified and counted.

A new client's first datagrams are admitted while the unknown sources stay
under their budget; under a flood it may lose a few to it and retries, and
once one of its datagrams passes it is trusted. The tables are bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def take(self, now: float, rate: float, burst: float) -> bool:
        if now > self.at:
            self.tokens = min(burst, self.tokens + (now - self.at) * rate)
            self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Admission:
    def __init__(
        self,
        *,
        per_source: float = 200.0,
        unknown_total: float = 2000.0,
        trust_ttl: float = 120.0,
        max_sources: int = 4096,
    ) -> None:
        self.per_source = per_source
        self.unknown_total = unknown_total
        self.trust_ttl = trust_ttl
        self.max_sources = max_sources
        #: Source IP -> until when it is trusted.
        self.trusted: OrderedDict[str, float] = OrderedDict()
        self.buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.total = _Bucket(2 * unknown_total, time.monotonic())

    def admit(self, ip: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        until = self.trusted.get(ip)
        if until is not None and until >= now:
            return True
        b = self.buckets.get(ip)
        if b is None:
            b = self.buckets[ip] = _Bucket(2 * self.per_source, now)
            if len(self.buckets) > self.max_sources:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(ip)
        if not b.take(now, self.per_source, 2 * self.per_source):
            return False
        return self.total.take(now, self.unknown_total, 2 * self.unknown_total)

    def trust(self, ip: str, now: float | None = None) -> None:
        """``ip`` sent an authenticated datagram: admit it freely for a while."""
        now = time.monotonic() if now is None else now
        self.trusted[ip] = now + self.trust_ttl
        self.trusted.move_to_end(ip)
        if len(self.trusted) > self.max_sources:
            self.trusted.popitem(last=False)
