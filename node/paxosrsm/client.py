"""The client role, sans-I/O: one outstanding request, retries, leader redirects.

A write keeps its (client_id, seq) across every retry, to any node, so the
replicas' session table applies it at most once. A write whose fate the client
cannot learn before ``give_up_ticks`` completes as UNKNOWN: it may take effect
later, or never. The next request uses a higher seq, so a late duplicate of
the abandoned one is refused by the session table (it can never run after a
newer request of the same client).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from .messages import ClientReply, ClientRequest, Status
from .types import Kind, ProtocolError


class Outcome(Enum):
    OK = "ok"
    UNKNOWN = "unknown"  # timed out; a write may or may not have been applied
    FAILED = "failed"  # definitely not applied (only reads end this way)


@dataclass(frozen=True, slots=True)
class Completion:
    seq: int
    kind: Kind
    payload: bytes
    outcome: Outcome
    result: bytes
    node: int | None


@dataclass(slots=True)
class _Pending:
    req: ClientRequest
    target: int
    attempt_ticks: int = 0
    total_ticks: int = 0
    redirects: int = 0


class Client:
    def __init__(
        self,
        client_id: int,
        node_ids: tuple[int, ...],
        rng: random.Random,
        *,
        retry_ticks: int = 10,
        give_up_ticks: int = 300,
    ) -> None:
        if not node_ids:
            raise ProtocolError("a client needs at least one node")
        self.id = client_id
        self.nodes = node_ids
        self.rng = rng
        self.retry_ticks = retry_ticks
        self.give_up_ticks = give_up_ticks
        self.seq = 0
        self.pending: _Pending | None = None
        self.leader: int | None = None
        self.outgoing: list[tuple[int, ClientRequest]] = []
        self.completions: list[Completion] = []

    @property
    def busy(self) -> bool:
        return self.pending is not None

    def submit(self, kind: Kind, payload: bytes, target: int | None = None) -> int:
        """Start a request; ``target`` forces the first node tried."""
        if self.pending is not None:
            raise ProtocolError("client already has a request outstanding")
        self.seq += 1
        req = ClientRequest(self.id, self.seq, kind, payload)
        if target is None:
            target = self.leader if self.leader is not None else self.rng.choice(self.nodes)
        self.pending = _Pending(req, target)
        self.outgoing.append((target, req))
        return self.seq

    def on_reply(self, r: ClientReply, src: int) -> None:
        p = self.pending
        if p is None or r.seq != p.req.seq or r.client_id != self.id:
            return  # a late answer to an earlier attempt
        if r.status == Status.OK:
            self.leader = src if p.req.kind != Kind.STALE_READ else self.leader
            self._complete(Outcome.OK, r.result, src)
        elif r.status == Status.STALE_SESSION:
            # Our seq was overtaken; the request will never be applied now.
            self._complete(Outcome.UNKNOWN, b"", src)
        elif r.status == Status.NOT_LEADER:
            nxt = r.leader_hint
            if nxt is None or nxt == src or p.redirects >= 2 * len(self.nodes):
                nxt = self._other(src)
                self.leader = None
            else:
                self.leader = nxt
            p.redirects += 1
            self._send(p, nxt)
        # BUSY: wait for the retry timer.

    def tick(self) -> None:
        p = self.pending
        if p is None:
            return
        p.attempt_ticks += 1
        p.total_ticks += 1
        if p.total_ticks >= self.give_up_ticks:
            self.leader = None
            outcome = Outcome.UNKNOWN if p.req.kind == Kind.WRITE else Outcome.FAILED
            self._complete(outcome, b"", None)
        elif p.attempt_ticks >= self.retry_ticks:
            self.leader = None
            self._send(p, self._other(p.target))

    def take(self) -> tuple[list[tuple[int, ClientRequest]], list[Completion]]:
        out, done = self.outgoing, self.completions
        self.outgoing, self.completions = [], []
        return out, done

    def _other(self, node: int) -> int:
        if len(self.nodes) == 1:
            return self.nodes[0]
        return self.rng.choice([n for n in self.nodes if n != node])

    def _send(self, p: _Pending, target: int) -> None:
        p.target = target
        p.attempt_ticks = 0
        self.outgoing.append((target, p.req))

    def _complete(self, outcome: Outcome, result: bytes, node: int | None) -> None:
        p = self.pending
        assert p is not None
        self.pending = None
        self.completions.append(
            Completion(p.req.seq, p.req.kind, p.req.payload, outcome, result, node)
        )
