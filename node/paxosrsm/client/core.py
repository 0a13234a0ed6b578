"""The client role, sans-I/O: the one place where retries, leader redirects,
sessions and outcomes are decided. The networked client (``client.aio``)
and the simulator (``SessionClient``) both drive it; neither re-implements
any of it.

* A request belongs to a session ``(client_id, seq)`` and keeps it across
  every retry, to any node, so the replicas' session table applies a write
  at most once. One session carries one request at a time; a pool of
  sessions allows many requests in flight (``ClientCore.submit``).
* A write whose fate the client cannot learn before its deadline completes
  as UNKNOWN: it may take effect later, or never. The session's next request
  has a higher seq, so a late duplicate of the abandoned one is refused by
  the session table (it can never run after a newer request of the same
  client). A read that times out is FAILED (a read changes nothing).
* NOT_LEADER with a useful hint is followed at once (a bounded number of
  times); without one an election is probably running, and the retry timer
  moves on to another node, so that no client spins between nodes.
* Silence is retried on a timer with backoff, to another node; the caller
  is asked to resolve that node's address again (``Send.refresh``).
* TOO_LARGE (the answer does not fit a datagram): the same request again,
  over a stream (``Send.stream``).

Time is whatever the driver says it is (seconds for the network client,
ticks for the simulator): ``submit``, ``on_reply`` and ``on_timer`` take
``now``; ``due(key)`` says when to call ``on_timer``; ``take()`` hands over
what to send and what completed.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from enum import Enum

from ..messages import ClientReply, ClientRequest, Status
from ..types import Kind, ProtocolError


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
    client_id: int = 0
    #: Why it did not end OK (for the caller's error message).
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``req`` to node index ``target``; ``stream``: over a connection
    (too big for a datagram); ``refresh``: that node met silence, look its
    address up again first."""

    target: int
    req: ClientRequest
    stream: bool = False
    refresh: bool = False


@dataclass(slots=True)
class _Pending:
    req: ClientRequest
    target: int
    deadline: float
    due: float = 0.0
    attempts: int = 0
    redirects: int = 0
    stream: bool = False
    answered: bool = False  # this attempt's node answered (not silence)


@dataclass(slots=True)
class ClientCore:
    """Many requests in flight, each on a session of its own."""

    nodes: int
    rng: random.Random
    #: First retry after this long; each later one ``backoff`` times longer,
    #: at most ``max_retry``.
    retry: float = 0.3
    backoff: float = 1.5
    max_retry: float = 2.0
    pending: dict[tuple[int, int], _Pending] = field(default_factory=dict)
    leader: int | None = None
    #: Idle sessions: client id -> last seq used.
    free: dict[int, int] = field(default_factory=dict)
    outgoing: list[Send] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ProtocolError("a client needs at least one node")

    # ------------------------------------------------------------ requests

    def submit(
        self,
        kind: Kind,
        payload: bytes,
        now: float,
        deadline: float,
        *,
        client_id: int | None = None,
        target: int | None = None,
    ) -> tuple[int, int]:
        """Start a request; returns its session ``(client_id, seq)``. Without
        ``client_id`` an idle session is reused or a new one made."""
        if client_id is None:
            if self.free:
                client_id = next(iter(self.free))
            else:
                client_id = self.rng.getrandbits(63)
                while any(k[0] == client_id for k in self.pending):
                    client_id = self.rng.getrandbits(63)
        elif any(k[0] == client_id for k in self.pending):
            raise ProtocolError("that session already has a request outstanding")
        seq = self.free.pop(client_id, 0) + 1
        req = ClientRequest(client_id, seq, kind, payload)
        if target is None:
            if kind == Kind.STALE_READ or self.leader is None:
                target = self.rng.randrange(self.nodes)
            else:
                target = self.leader
        p = _Pending(req, target, deadline)
        self.pending[(client_id, seq)] = p
        self._send(p, now)
        return client_id, seq

    def due(self, key: tuple[int, int]) -> float | None:
        """When ``on_timer(key)`` should run (None: not pending)."""
        p = self.pending.get(key)
        return None if p is None else p.due

    def on_reply(self, r: ClientReply, now: float, src: int | None = None) -> None:
        """An answer, from node index ``src`` when the transport knows it."""
        p = self.pending.get((r.client_id, r.seq))
        if p is None:
            return  # a late answer to an earlier request or attempt
        node = p.target if src is None else src
        if r.status == Status.OK:
            if p.req.kind != Kind.STALE_READ:
                self.leader = r.leader_hint if r.leader_hint is not None else node
            self._complete(p, Outcome.OK, r.result, node)
        elif r.status == Status.STALE_SESSION:
            # Our seq was overtaken; the request will never be applied now.
            self._complete(p, Outcome.UNKNOWN, b"", node,
                           "request overtaken by a newer one of its session")  # fmt: skip
        elif r.status == Status.NOT_LEADER:
            p.redirects += 1
            hint = r.leader_hint
            if (
                hint is not None
                and 0 <= hint < self.nodes
                and hint != node
                and p.redirects <= 2 * self.nodes
            ):
                self.leader = hint
                p.target = hint
                self._send(p, now)
            else:
                # No useful hint: an election is probably running. The retry
                # timer moves on to another node, so that we do not spin.
                self.leader = None
                p.answered = True
        elif r.status == Status.TOO_LARGE:
            p.stream = True  # same seq: a write already applied is answered, not re-applied
            self._send(p, now)
        # BUSY: the retry timer resends the same request.

    def on_timer(self, key: tuple[int, int], now: float) -> None:
        p = self.pending.get(key)
        if p is None or now < p.due:
            return
        if now >= p.deadline:
            self.leader = None
            if p.req.kind == Kind.WRITE:
                self._complete(p, Outcome.UNKNOWN, b"", None,
                               f"no answer to write {key[0]}/{key[1]} in time")  # fmt: skip
            else:
                self._complete(p, Outcome.FAILED, b"", None, "no answer to read in time")
            return
        # Silence (or no useful answer): try another node. Silence may mean
        # that node is down or partitioned, or that its name points elsewhere
        # now (a rescheduled pod): have it looked up again.
        self.leader = None
        last = p.target
        p.target = self._other(last)
        self._send(p, now, refresh=None if p.answered else last)

    def abandon(self, key: tuple[int, int], reason: str) -> None:
        """The caller stops waiting (closing): a write that was sent ends
        UNKNOWN (it may still be applied), anything else FAILED."""
        p = self.pending.get(key)
        if p is not None:
            sent = p.req.kind == Kind.WRITE and p.attempts > 0
            self._complete(p, Outcome.UNKNOWN if sent else Outcome.FAILED, b"", None, reason)

    def take(self) -> tuple[list[Send], list[Completion]]:
        out, done = self.outgoing, self.completions
        self.outgoing, self.completions = [], []
        return out, done

    # ------------------------------------------------------------ internals

    def _other(self, node: int) -> int:
        if self.nodes == 1:
            return 0
        if not 0 <= node < self.nodes:
            return self.rng.randrange(self.nodes)
        n = self.rng.randrange(self.nodes - 1)
        return n + 1 if n >= node else n

    def _send(self, p: _Pending, now: float, refresh: int | None = None) -> None:
        p.attempts += 1
        p.answered = False
        wait = min(self.retry * self.backoff ** min(p.attempts - 1, 8), self.max_retry)
        p.due = min(now + wait, max(now, p.deadline))
        if refresh is not None:
            self.outgoing.append(Send(refresh, p.req, refresh=True))
        self.outgoing.append(Send(p.target, p.req, stream=p.stream))

    def _complete(
        self, p: _Pending, outcome: Outcome, result: bytes, node: int | None, reason: str = ""
    ) -> None:
        r = p.req
        del self.pending[(r.client_id, r.seq)]
        self.free[r.client_id] = r.seq
        self.completions.append(
            Completion(r.seq, r.kind, r.payload, outcome, result, node, r.client_id, reason)
        )


class SessionClient:
    """One session with one request at a time, on a tick clock: the
    simulator's client (and the transcript tests'), driving ``ClientCore``
    like the network client does. ``retry_ticks`` between attempts (no
    backoff), ``give_up_ticks`` in all."""

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
        self.core = ClientCore(len(node_ids), rng, retry=retry_ticks, backoff=1.0,
                               max_retry=retry_ticks)  # fmt: skip
        self.give_up_ticks = give_up_ticks
        self.now = 0
        self.seq = 0
        self.key: tuple[int, int] | None = None
        #: Nodes a request was forced to that are not among ``node_ids``
        #: (e.g. a learner): indexes from len(node_ids) on; retries go to
        #: ``node_ids`` only.
        self.extra: list[int] = []

    def _index(self, node: int) -> int:
        if node in self.nodes:
            return self.nodes.index(node)
        if node not in self.extra:
            self.extra.append(node)
        return len(self.nodes) + self.extra.index(node)

    def _node(self, i: int) -> int:
        return self.nodes[i] if i < len(self.nodes) else self.extra[i - len(self.nodes)]

    @property
    def busy(self) -> bool:
        return self.key is not None

    @property
    def leader(self) -> int | None:
        i = self.core.leader
        return None if i is None else self._node(i)

    def submit(self, kind: Kind, payload: bytes, target: int | None = None) -> int:
        """Start a request; ``target`` (a node id) forces the first node tried."""
        if self.key is not None:
            raise ProtocolError("client already has a request outstanding")
        t = None if target is None else self._index(target)
        self.key = self.core.submit(kind, payload, self.now, self.now + self.give_up_ticks,
                                    client_id=self.id, target=t)  # fmt: skip
        self.seq = self.key[1]
        return self.seq

    def on_reply(self, r: ClientReply, src: int) -> None:
        # Node ids to the core's indexes (a hint naming no node of ours: none).
        hint = r.leader_hint
        if hint is not None:
            r = dataclasses.replace(
                r, leader_hint=self.nodes.index(hint) if hint in self.nodes else None
            )
        self.core.on_reply(r, self.now, self._index(src))

    def tick(self) -> None:
        self.now += 1
        if self.key is not None:
            self.core.on_timer(self.key, self.now)

    def take(self) -> tuple[list[tuple[int, ClientRequest]], list[Completion]]:
        sends, done = self.core.take()
        if done:
            self.key = None
        return [(self._node(s.target), s.req) for s in sends if not s.refresh], done
